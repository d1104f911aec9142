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

import numpy as np
import pywt
import scipy.fft

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


def _analysis_1d(x: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """One-level decimated low/high-pass analysis of ``x`` along ``axis``, symmetric extension.

    The same numbers as ``pywt.dwt(x, matlab_dmey(), mode="symmetric", axis=axis)``: extend by
    taps - 1 half-sample-symmetrically, convolve fully with the decomposition filter, and keep
    every second sample from index ``taps``. The 102-tap convolutions run through one real FFT.
    """
    taps = MATLAB_DMEY_REC_LO.size
    size = x.shape[axis]
    n_out = (size + taps - 1) // 2
    pad = [(0, 0)] * x.ndim
    pad[axis] = (taps - 1, taps - 1)
    extended = np.pad(x, pad, mode="symmetric")
    n_full = extended.shape[axis] + taps - 1
    n_fft = scipy.fft.next_fast_len(n_full, real=True)
    spectrum = scipy.fft.rfft(extended, n=n_fft, axis=axis)
    rec_hi = quadrature_mirror(MATLAB_DMEY_REC_LO)
    shape = [1] * x.ndim
    shape[axis] = -1
    keep = [slice(None)] * x.ndim
    keep[axis] = slice(taps, taps + 2 * n_out, 2)
    bands = []
    for dec in (MATLAB_DMEY_REC_LO[::-1], rec_hi[::-1]):
        response = scipy.fft.rfft(dec, n=n_fft).reshape(shape)
        bands.append(scipy.fft.irfft(spectrum * response, n=n_fft, axis=axis)[tuple(keep)])
    return bands[0], bands[1]


def dmey_dwt2(x: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Matlab's ``[cA, cH, cV, cD] = dwt2(x, 'dmey')`` (symmetric extension), FFT-based.

    Returns ``(cA, (cH, cV, cD))`` as ``pywt.dwt2(x, matlab_dmey(), mode="symmetric")`` does, to
    rounding (about 1e-13 relative), several times faster for the 102-tap filter. An H x W image
    gives four floor((H + 101) / 2) x floor((W + 101) / 2) sub-bands.
    """
    x = np.asarray(x, dtype=np.float64)
    low, high = _analysis_1d(x, axis=1)
    approx, horizontal = _analysis_1d(low, axis=0)
    vertical, diagonal = _analysis_1d(high, axis=0)
    return approx, (horizontal, vertical, diagonal)
