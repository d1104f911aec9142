"""Matlab's discrete Meyer wavelet ``dmey`` (102 taps) as a PyWavelets wavelet.

Matlab's ``dwt2(x, 'dmey')``, which Haghighat's FMI uses for its ``wavelet`` feature, filters with a
102-tap FIR approximation of the Meyer scaling filter. PyWavelets' built-in ``"dmey"`` is a
different, 62-tap approximation and gives different coefficients (and a different output size),
so :func:`matlab_dmey` builds a :class:`pywt.Wavelet` from Matlab's own taps.

The taps below are Matlab's reconstruction low-pass filter ``Lo_R`` (sum sqrt(2), symmetric about
index 50, last tap 0), as published in the ``meyer[]`` table of the open-source C library wavelib
(Rafat Hussain, ``src/wavefilt.c``, BSD-3-Clause), which reproduces Matlab's ``wfilters('dmey')``.
They are given to 15 decimals; being an FIR truncation of an infinite filter, the bank is
orthonormal only to about 2e-6 (sum of squares 1 + 1.6e-6, shifts by two orthogonal to 7e-7).
"""
from __future__ import annotations

import functools

import numpy as np
import pywt

__all__ = ["MATLAB_DMEY_REC_LO", "matlab_dmey", "quadrature_mirror", "dmey_dwt2"]

# Matlab wfilters('dmey') Lo_R, 102 taps (from wavelib's meyer[] table).
MATLAB_DMEY_REC_LO = np.array([
    -0.000001509740857,  0.000001278766757,  0.000000449585560,
    -0.000002096568870,  0.000001723223554,  0.000000698082276,
    -0.000002879408033,  0.000002383148395,  0.000000982515602,
    -0.000004217789186,  0.000003353501538,  0.000001674721859,
    -0.000006034501342,  0.000004837555802,  0.000002402288023,
    -0.000009556309846,  0.000007216527695,  0.000004849078300,
    -0.000014206928581,  0.000010503914271,  0.000006187580298,
    -0.000024438005846,  0.000020106387691,  0.000014993523600,
    -0.000046428764284,  0.000032341311914,  0.000037409665760,
    -0.000102779005085,  0.000024461956845,  0.000149713515389,
    -0.000075592870255, -0.000139913148217, -0.000093512893880,
     0.000161189819725,  0.000859500213762, -0.000578185795273,
    -0.002702168733939,  0.002194775336459,  0.006045510596456,
    -0.006386728618548, -0.011044641900539,  0.015250913158586,
     0.017403888210177, -0.032094063354505, -0.024321783959519,
     0.063667300884468,  0.030621243943425, -0.132696615358862,
    -0.035048287390595,  0.444095030766529,  0.743751004903787,
     0.444095030766529, -0.035048287390595, -0.132696615358862,
     0.030621243943425,  0.063667300884468, -0.024321783959519,
    -0.032094063354505,  0.017403888210177,  0.015250913158586,
    -0.011044641900539, -0.006386728618548,  0.006045510596456,
     0.002194775336459, -0.002702168733939, -0.000578185795273,
     0.000859500213762,  0.000161189819725, -0.000093512893880,
    -0.000139913148217, -0.000075592870255,  0.000149713515389,
     0.000024461956845, -0.000102779005085,  0.000037409665760,
     0.000032341311914, -0.000046428764284,  0.000014993523600,
     0.000020106387691, -0.000024438005846,  0.000006187580298,
     0.000010503914271, -0.000014206928581,  0.000004849078300,
     0.000007216527695, -0.000009556309846,  0.000002402288023,
     0.000004837555802, -0.000006034501342,  0.000001674721859,
     0.000003353501538, -0.000004217789186,  0.000000982515602,
     0.000002383148395, -0.000002879408033,  0.000000698082276,
     0.000001723223554, -0.000002096568870,  0.000000449585560,
     0.000001278766757, -0.000001509740857,                0.0,
])
MATLAB_DMEY_REC_LO.setflags(write=False)


def quadrature_mirror(rec_lo: np.ndarray) -> np.ndarray:
    """The high-pass partner of an orthogonal low-pass filter, Matlab's ``qmf`` convention.

    The filter is reversed and every second tap, starting with the second, changes sign:
    ``y = rec_lo[::-1]; y[1::2] *= -1``. For ``db2`` this gives Matlab's (and PyWavelets')
    ``Hi_R`` from ``Lo_R``.
    """
    mirrored = np.asarray(rec_lo, dtype=np.float64)[::-1].copy()
    mirrored[1::2] *= -1.0
    return mirrored


def matlab_dmey() -> pywt.Wavelet:
    """Matlab's 102-tap discrete Meyer wavelet as a :class:`pywt.Wavelet` named ``"dmey_matlab"``.

    The filter bank follows Matlab's ``orthfilt``: ``Lo_R`` is the table, ``Hi_R`` its quadrature
    mirror, and the decomposition filters are their reverses. With ``mode="symmetric"`` (Matlab's
    default ``'sym'`` extension) ``pywt.dwt2`` then computes what Matlab's ``dwt2(x, 'dmey')``
    computes; a 256 x 256 image gives four 178 x 178 sub-bands.

    Returns
    -------
    pywt.Wavelet
        A new wavelet object (PyWavelets wavelets are mutable, so none is shared).
    """
    rec_lo = MATLAB_DMEY_REC_LO.copy()
    rec_hi = quadrature_mirror(rec_lo)
    wavelet = pywt.Wavelet("dmey_matlab", filter_bank=(rec_lo[::-1], rec_hi[::-1], rec_lo, rec_hi))
    wavelet.orthogonal = True
    wavelet.biorthogonal = True
    return wavelet


@functools.lru_cache(maxsize=16)
def _analysis_matrices(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(size, n_out) matrices L, H with ``x @ L`` and ``x @ H`` the decimated dmey analysis of rows.

    Output t is the full convolution of the half-sample-symmetric extension (taps - 1 samples on
    each side) with the decomposition filter, taken at index taps + 2t, as Matlab's ``dwt``
    computes it; the extension is folded into the matrix, so the transform is one product.
    """
    taps = MATLAB_DMEY_REC_LO.size
    n_out = (size + taps - 1) // 2
    extended = np.arange(-(taps - 1), size + taps - 1)
    period = 2 * size
    folded = np.mod(extended, period)
    source = np.where(folded < size, folded, period - 1 - folded)  # symmetric extension
    matrices = []
    for dec in _DEC_FILTERS:
        matrix = np.zeros((size, n_out))
        for t in range(n_out):
            # y[taps + 2t] = sum_k dec[k] ext[taps + 2t - k], ext index taps + 2t - k.
            rows = source[taps + 2 * t - np.arange(taps)]
            np.add.at(matrix[:, t], rows, dec)
        matrix.setflags(write=False)
        matrices.append(matrix)
    return matrices[0], matrices[1]


def _flat_supports(x: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where output t of a row's analysis with ``dec`` sees one repeated value, and that value.

    Output t is ``sum_k dec[k] ext[taps + 2t - k]``; only the non-zero taps count (a sample under
    a zero tap cannot make two outputs differ: Matlab's product with it is exactly 0). The dmey
    filters have one zero tap, at opposite ends for the low- and high-pass filter.
    """
    taps = dec.size
    nonzero = np.flatnonzero(dec)
    n_out = (x.shape[1] + taps - 1) // 2
    extended = np.pad(x, ((0, 0), (taps - 1, taps - 1)), mode="symmetric")
    changes = np.zeros((x.shape[0], extended.shape[1]), dtype=np.int32)
    np.cumsum(extended[:, 1:] != extended[:, :-1], axis=1, out=changes[:, 1:])
    first = taps + 2 * np.arange(n_out) - nonzero[-1]  # extended index under the last non-zero tap
    last = taps + 2 * np.arange(n_out) - nonzero[0]
    flat = changes[:, last] == changes[:, first]
    return flat, extended[:, first]


def _analysis_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One-level decimated low/high-pass analysis of each row of ``x`` (symmetric extension).

    A direct convolution, as Matlab's ``conv2`` computes it, gives bit-identical outputs wherever
    the filter sees one repeated value; the matrix product does not (its rounding depends on the
    position). FMI min-max scales 3 x 3 windows of these coefficients, which turns such rounding
    into structure, so outputs over a flat support are set to ``value * sum(filter)``: equal
    wherever the reference's are equal.
    """
    bands = []
    for matrix, dec, total in zip(_analysis_matrices(x.shape[1]), _DEC_FILTERS, _FILTER_SUMS):
        band = x @ matrix
        flat, value = _flat_supports(x, dec)
        band[flat] = value[flat] * total
        bands.append(band)
    return bands[0], bands[1]


def dmey_dwt2(x: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Matlab's ``[cA, cH, cV, cD] = dwt2(x, 'dmey')`` (symmetric extension), as matrix products.

    Returns ``(cA, (cH, cV, cD))`` as ``pywt.dwt2(x, matlab_dmey(), mode="symmetric")`` does, to
    rounding (about 1e-13 relative), except that coefficients whose support is flat are exactly
    equal (see :func:`_analysis_rows`): a constant image gives four constant sub-bands, as in
    Matlab. An H x W image gives four floor((H + 101) / 2) x floor((W + 101) / 2) sub-bands.
    """
    x = np.asarray(x, dtype=np.float64)
    low, high = _analysis_rows(x)
    approx, horizontal = (band.T for band in _analysis_rows(np.ascontiguousarray(low.T)))
    vertical, diagonal = (band.T for band in _analysis_rows(np.ascontiguousarray(high.T)))
    return approx, (horizontal, vertical, diagonal)


_DEC_FILTERS = (MATLAB_DMEY_REC_LO[::-1], quadrature_mirror(MATLAB_DMEY_REC_LO)[::-1])
_FILTER_SUMS = tuple(float(np.sum(dec)) for dec in _DEC_FILTERS)
