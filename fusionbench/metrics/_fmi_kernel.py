"""Compiled window loop of Haghighat's FMI (numba): one pass over the windows, no temporaries.

:func:`fmi_map` computes, for every 'valid' w x w window, the value ``(fmi_AF + fmi_BF) / 2`` of
Haghighat's ``fmi.m`` (see :mod:`fusionbench.metrics.feature_mi` for the definition and the
reference's branches). Each window's three distributions are built once, F's is shared by the A and
B comparisons, and the joint entropy needs one logarithm per cell of the bound coupling's support
(at most 2L - 1 of the L x L cells): about 1 microsecond per 3 x 3 window on one core, a quarter of
it in the logarithms (docs/results.md#metrics).

Sums follow the reference's order where an exact zero or equality depends on it, as Matlab and
Octave evaluate the code: ``sum(sum(X))`` adds each column left to right and then the column sums;
``mean`` and the moments are left-to-right sums. In particular a constant window, which the
reference turns into ``ones(w)``, has the distribution ``1/L`` everywhere whose left-to-right sum is
``1 + 2^-52`` for L = 9, so its centred values are ``1/L - sum/L = -2.8e-17``, not 0: two constant
windows that are not identical are perfectly correlated (c = 1) and score about 1; a constant window
against a structured one has a correlation of about 1e-16 and scores about 0.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["fmi_map"]

_KERNELS: dict = {}


def fmi_map(feature_a: np.ndarray, feature_b: np.ndarray, feature_f: np.ndarray, w: int) -> np.ndarray:
    """Per-window FMI of three same-shape float64 feature maps, shape (m - w + 1, n - w + 1).

    The window side is a compile-time constant of the kernel (fixed-length loops unroll: about
    15 % faster than a runtime length), so each window size compiles once and is cached on disk.
    """
    kernel = _KERNELS.get(w)
    if kernel is None:
        kernel = _KERNELS[w] = _build(w)
    return kernel(feature_a, feature_b, feature_f)


def _build(w: int):
    n = w * w

    @njit(cache=True, nogil=True, error_model="numpy", inline="always")
    def _scaled_window(image, row, col, out):
        """Gather a window in Matlab's column-major ``(:)`` order and min-max scale it into ``out``.

        A constant window becomes all ones (the reference's ``ones(2*w+1)``).
        """
        k = 0
        lo = image[row, col]
        hi = lo
        for j in range(w):
            for i in range(w):
                v = image[row + i, col + j]
                out[k] = v
                if v < lo:
                    lo = v
                if v > hi:
                    hi = v
                k += 1
        if hi == lo:
            out[:] = 1.0
        else:
            span = hi - lo
            for k in range(w * w):
                out[k] = (out[k] - lo) / span


    @njit(cache=True, nogil=True, error_model="numpy", inline="always")
    def _distribution(scaled, pdf, cdf, log_pdf, stats):
        """The window's 9-bin distribution and what every comparison needs from it.

        ``stats`` receives (mean of the pdf values, mean bin index, population SD of the bin index,
        entropy in bits, sum of squared centred pdf values).
        """
        total = 0.0
        for j in range(w):  # Matlab's sum(sum(X)): column sums, then their sum
            column = 0.0
            for i in range(w):
                column += scaled[j * w + i]
            total += column
        running = 0.0
        first = 0.0
        second = 0.0
        entropy = 0.0
        for k in range(n):
            p = scaled[k] / total
            pdf[k] = p
            running = p + running
            cdf[k] = running
            first += (k + 1) * p
            second += (k + 1) * (k + 1) * p
            if p != 0.0:
                lg = math.log2(p)
                log_pdf[k] = lg
                entropy -= p * lg
            else:
                log_pdf[k] = 0.0
        mean = running / n
        centred_norm2 = 0.0
        for k in range(n):
            d = pdf[k] - mean
            centred_norm2 += d * d
        variance = second - first * first
        stats[0] = mean
        stats[1] = first
        # A variance rounded below 0 counts as 0 (Matlab would carry a complex SD on).
        stats[2] = math.sqrt(variance) if variance > 0.0 else 0.0
        stats[3] = entropy
        stats[4] = centred_norm2


    @njit(cache=True, nogil=True, error_model="numpy", inline="always")
    def _pair_value(x_pdf, x_cdf, x_log, x_stats, f_pdf, f_cdf, f_log, f_stats, x_break):
        """``2 MI / (H_X + H_F)`` of one window pair under Nelsen's mixture (0 where MI is 0).

        ``x_break``: scratch array of n entries.
        """
        x_mean, f_mean = x_stats[0], f_stats[0]
        dot = 0.0
        for k in range(n):
            dot += (x_pdf[k] - x_mean) * (f_pdf[k] - f_mean)
        corr = 0.0 if dot == 0.0 else dot / math.sqrt(x_stats[4] * f_stats[4])
        counter = corr < 0.0

        last = n - 1
        # Hoeffding: the covariance of the bin indices under the Frechet bound coupling is the sum
        # over the CDF grid of bound(F_i, X_j) - F_i X_j (the reference's covUp / covLo), with
        # bound = min for the comonotone and max(F_i + X_j - 1, 0) for the countermonotone coupling.
        phi = 0.0
        if corr != 0.0 and x_stats[2] > 0.0 and f_stats[2] > 0.0:
            covariance = 0.0
            for i in range(n):
                fi = f_cdf[i]
                row = 0.0
                if counter:
                    for j in range(n):
                        bound = fi + x_cdf[j] - 1.0
                        row += (bound if bound > 0.0 else 0.0) - fi * x_cdf[j]
                else:
                    for j in range(n):
                        xj = x_cdf[j]
                        row += (fi if fi < xj else xj) - fi * xj
                covariance += row
            if covariance != 0.0:
                phi = corr * x_stats[2] * f_stats[2] / covariance
        weight = 1.0 - phi
        marginal = x_stats[3] + f_stats[3]
        # Entropy of the independent part weight * q p^T over all cells, in closed form ...
        log_weight = math.log2(abs(weight)) if weight != 0.0 else 0.0
        joint = weight * (marginal - log_weight)
        # ... corrected where the bound coupling adds mass: only where F's CDF interval i overlaps
        # X's interval j (X's intervals mirrored, 1 - P, for the countermonotone bound), i.e. on the
        # 2n - 1 stretches between the merged breakpoints of both CDFs, each a cell whose bound mass
        # is its length. A merge of the two sorted breakpoint lists visits them in order.
        if phi != 0.0:
            for l in range(last):
                x_break[l] = 1.0 - x_cdf[last - 1 - l] if counter else x_cdf[l]
            x_break[last] = 1.0
            previous = 0.0
            i = 0
            m = 0
            for step in range(2 * last + 1):
                f_end = f_cdf[i] if i < last else 1.0
                x_end = x_break[m]
                take_f = ((f_end <= x_end) & (i < last)) | (m == last)
                end = f_end if take_f else x_end
                if step == 2 * last:
                    end = 1.0  # the last stretch ends at 1, though a CDF may end an ulp away
                if end > previous:
                    j = last - m if counter else m
                    independent = weight * f_pdf[i] * x_pdf[j]
                    value = independent + phi * (end - previous)
                    if value != 0.0:
                        joint -= value * math.log2(abs(value))
                    if independent != 0.0:
                        joint += independent * (log_weight + f_log[i] + x_log[j])
                    previous = end
                i += take_f & (i < last)
                m += (not take_f) & (m < last)
        mutual = marginal - joint
        if mutual == 0.0 or marginal == 0.0:
            return 0.0
        return 2.0 * mutual / marginal


    @njit(cache=True, nogil=True, error_model="numpy")
    def window_map(feature_a, feature_b, feature_f):
        """Per-window FMI of three same-shape float64 feature maps, shape (m - w + 1, n - w + 1)."""
        rows = feature_a.shape[0] - w + 1
        cols = feature_a.shape[1] - w + 1
        out = np.empty((rows, cols))
        raw_f = np.empty(n)
        scaled_f = np.empty(n)
        scaled_x = np.empty(n)
        f_pdf = np.empty(n)
        f_cdf = np.empty(n)
        f_log = np.empty(n)
        f_stats = np.empty(5)
        x_pdf = np.empty(n)
        x_cdf = np.empty(n)
        x_log = np.empty(n)
        x_stats = np.empty(5)
        x_break = np.empty(n)
        for r in range(rows):
            for c in range(cols):
                same_af = True
                k = 0
                for j in range(w):
                    for i in range(w):
                        v = feature_f[r + i, c + j]
                        raw_f[k] = v
                        if feature_a[r + i, c + j] != v:
                            same_af = False
                        k += 1
                f_ready = False
                if same_af:
                    value_af = 1.0
                    f_window = raw_f
                else:
                    _scaled_window(feature_f, r, c, scaled_f)
                    _distribution(scaled_f, f_pdf, f_cdf, f_log, f_stats)
                    f_ready = True
                    _scaled_window(feature_a, r, c, scaled_x)
                    _distribution(scaled_x, x_pdf, x_cdf, x_log, x_stats)
                    value_af = _pair_value(x_pdf, x_cdf, x_log, x_stats, f_pdf, f_cdf, f_log, f_stats, x_break)
                    # The reference overwrote its F window with the scaled one while scoring A, and
                    # tests B for identity against that.
                    f_window = scaled_f
                same_bf = True
                k = 0
                for j in range(w):
                    for i in range(w):
                        if feature_b[r + i, c + j] != f_window[k]:
                            same_bf = False
                        k += 1
                if same_bf:
                    value_bf = 1.0
                else:
                    if not f_ready:
                        _scaled_window(feature_f, r, c, scaled_f)
                        _distribution(scaled_f, f_pdf, f_cdf, f_log, f_stats)
                    _scaled_window(feature_b, r, c, scaled_x)
                    _distribution(scaled_x, x_pdf, x_cdf, x_log, x_stats)
                    value_bf = _pair_value(x_pdf, x_cdf, x_log, x_stats, f_pdf, f_cdf, f_log, f_stats, x_break)
                out[r, c] = 0.5 * (value_af + value_bf)
        return out

    return window_map
