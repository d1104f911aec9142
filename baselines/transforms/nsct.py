"""The nonsubsampled contourlet transform (NSCT) of da Cunha, Zhou and Do.

A. L. da Cunha, J. Zhou, M. N. Do, "The nonsubsampled contourlet transform: theory, design, and
applications", IEEE Trans. Image Process. 15(10), 2006. This module follows the conventions of the
authors' Matlab "Nonsubsampled Contourlet Toolbox" (``nsctdec``/``nsctrec``), so that fusion rules
written against that toolbox give the same coefficients here:

* **Nonsubsampled pyramid (NSP).** A two-channel nonsubsampled filter bank per level; level ``j``
  (0 = finest) uses the filters upsampled by ``2**j`` ("à trous"), with half-sample symmetric
  extension of the image (the toolbox's ``symext`` + ``atrousc``). Filters ``'pyr'`` and
  ``'pyrexc'`` ('pyr' with the two highpass filters exchanged), built by mirroring the toolbox's
  quarter matrices.
* **Nonsubsampled directional filter bank (NSDFB).** A binary tree of two-channel fan and
  parallelogram filter banks. The fan filters are the ``'vk'`` (Vetterli–Kovačević) diamond
  filters, McClellan-transformed 1-D prototypes scaled by ``1/sqrt(2)`` and modulated by
  ``(-1)**n2``; the parallelogram filters come from modulating and shearing the diamond filters
  (``parafilters``). Stage 2 upsamples the fan filters by the quincunx matrix ``[[1, -1], [1, 1]]``;
  stage ``l >= 3`` upsamples the parallelogram filters by the matrices of ``nsdfbdec``. All these
  filterings are periodic convolutions (``efilter2`` with 'per' extension, ``zconv2``), with the
  toolbox's tap placement reproduced exactly.

Because the NSDFB is linear, shift-invariant and periodic, each directional subband equals one
circular convolution of the bandpass image with the product of the stage filters along its tree
path. The products are formed once per image shape in the Fourier domain and cached, which turns
the 2**l - 2 stage filterings of a level into one FFT per subband (the numbers are the tree's up to
floating-point rounding).

Coefficient layout (the toolbox's): ``coeffs[0]`` is the lowpass image; ``coeffs[i]`` for
``i = 1..len(levels)`` is the list of ``2**levels[i-1]`` directional subbands of pyramid level
``i``, from the coarsest (``i = 1``) to the finest; a level with 0 directional levels holds the
bandpass image itself (an array, not a list). Every subband has the input's shape.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np
from scipy.signal import convolve2d

__all__ = [
    "nsct_dec", "nsct_rec", "nsp_dec", "nsp_rec", "nsdfb_dec", "nsdfb_rec",
    "atrous_filters", "directional_filters", "mcclellan_transform", "modulate2",
    "parallelogram_filters", "DEFAULT_LEVELS", "PYRAMID_FILTERS", "DIRECTIONAL_FILTERS",
]

#: Directional levels per pyramid level (coarse -> fine) of the fusion literature's NSCT setting.
DEFAULT_LEVELS = (2, 3, 3, 4)
PYRAMID_FILTERS = ("pyr", "pyrexc")
DIRECTIONAL_FILTERS = ("vk",)

# Quarter matrices of the 'pyr' filters (toolbox atrousfilters.m): the full 5x5 (3x3 quarter) and
# 7x7 (4x4 quarter) zero-phase filters are obtained by mirroring about the last row and column.
_PYR_H0_QUARTER = np.array([
    [-0.003236043456039806, -0.012944173824159223, -0.019416260736238835],
    [-0.012944173824159223, 0.0625, 0.15088834764831843],
    [-0.019416260736238835, 0.15088834764831843, 0.3406092167691145]])
_PYR_G1_QUARTER = np.array([
    [-0.003236043456039806, -0.012944173824159223, -0.019416260736238835],
    [-0.012944173824159223, -0.0625, -0.09911165235168155],
    [-0.019416260736238835, -0.09911165235168155, 0.8406092167691145]])
_PYR_G0_QUARTER = np.array([
    [-0.00016755163599004882, -0.001005309815940293, -0.002513274539850732, -0.003351032719800976],
    [-0.001005309815940293, -0.005246663087920392, -0.01193886400821893, -0.015395021472477663],
    [-0.002513274539850732, -0.01193886400821893, 0.06769410071569153, 0.15423938036811946],
    [-0.003351032719800976, -0.015395021472477663, 0.15423938036811946, 0.3325667382415921]])
_PYR_H1_QUARTER = np.array([
    [0.00016755163599004882, 0.001005309815940293, 0.002513274539850732, 0.003351032719800976],
    [0.001005309815940293, -0.0012254238241592198, -0.013949483640099517, -0.023437500000000007],
    [0.002513274539850732, -0.013949483640099517, -0.06769410071569153, -0.10246268507148255],
    [0.003351032719800976, -0.023437500000000007, -0.10246268507148255, 0.8486516952966369]])

# 1-D prototypes of the 'vk' diamond filters (Vetterli & Kovacevic, "Wavelets and Subband
# Coding", 1995), decomposition ('d') and reconstruction ('r'), and the diamond McClellan kernel.
_VK_PROTOTYPES = {
    "d": (np.array([1.0, 2.0, 1.0]) / 4.0, np.array([-1.0, -2.0, 6.0, -2.0, -1.0]) / 4.0),
    "r": (np.array([-1.0, 2.0, 6.0, 2.0, -1.0]) / 4.0, np.array([-1.0, 2.0, -1.0]) / 4.0),
}
_DIAMOND_KERNEL = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]) / 4.0
_QUINCUNX = np.array([[1, -1], [1, 1]])


# --------------------------------------------------------------------------------------------
# Filters
# --------------------------------------------------------------------------------------------

def _mirror_quarter(q: np.ndarray) -> np.ndarray:
    full = np.concatenate([q, q[:, -2::-1]], axis=1)
    return np.concatenate([full, full[-2::-1, :]], axis=0)


def atrous_filters(name: str = "pyrexc") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Nonsubsampled pyramid filters ``(h0, h1, g0, g1)``: analysis low/high, synthesis low/high.

    The filters are zero-phase (odd-sized, symmetric) and satisfy the perfect-reconstruction
    identity ``H0(w) G0(w) + H1(w) G1(w) = 1`` (toolbox ``atrousfilters``).

    Parameters
    ----------
    name : {"pyrexc", "pyr"}
        ``'pyrexc'`` is ``'pyr'`` with the two highpass filters exchanged; the fusion literature
        (Li, Yang & Hu 2011; Yu Liu's MST toolbox) uses ``'pyrexc'``.

    Returns
    -------
    h0, h1, g0, g1 : ndarray
        5x5 lowpass analysis, 7x7 highpass analysis, 7x7 lowpass synthesis and 5x5 highpass
        synthesis filters for 'pyr' (5x5 / 5x5 / 7x7 / 7x7 for 'pyrexc').
    """
    h0 = _mirror_quarter(_PYR_H0_QUARTER)
    g0 = _mirror_quarter(_PYR_G0_QUARTER)
    h1 = _mirror_quarter(_PYR_H1_QUARTER)
    g1 = _mirror_quarter(_PYR_G1_QUARTER)
    if name == "pyr":
        return h0, h1, g0, g1
    if name == "pyrexc":
        return h0, g1, g0, h1
    raise ValueError(f"unknown pyramid filter {name!r}; expected one of {PYRAMID_FILTERS}")


def mcclellan_transform(b, t) -> np.ndarray:
    """2-D zero-phase filter ``H(w1, w2) = B(w)`` with ``cos(w)`` replaced by ``T(w1, w2)``.

    The McClellan transformation (Matlab ``ftrans2``), computed with the Chebyshev recursion
    ``P_n = 2 t * P_{n-1} - P_{n-2}`` on centred 2-D arrays.

    Parameters
    ----------
    b : array_like, 1-D
        Odd-length symmetric (type I) FIR prototype.
    t : array_like, 2-D
        Odd-sized transformation kernel.

    Returns
    -------
    ndarray
        Filter of shape ``(n*(T.shape[0]-1) + 1, n*(T.shape[1]-1) + 1)`` with ``n = (len(b)-1)/2``.
    """
    b = np.asarray(b, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    if b.ndim != 1 or b.size % 2 != 1:
        raise ValueError(f"mcclellan_transform: prototype must be 1-D of odd length, got shape {b.shape}")
    n = (b.size - 1) // 2
    a = np.concatenate([[b[n]], 2.0 * b[n + 1:]])  # Chebyshev coefficients of the zero-phase B
    half = (np.array(t.shape) - 1) // 2
    out_shape = tuple(int(s) for s in 2 * n * half + 1)

    def centred(p):
        full = np.zeros(out_shape)
        r0 = (out_shape[0] - p.shape[0]) // 2
        c0 = (out_shape[1] - p.shape[1]) // 2
        full[r0:r0 + p.shape[0], c0:c0 + p.shape[1]] = p
        return full

    p_prev, p_cur = np.ones((1, 1)), t
    h = a[0] * centred(p_prev)
    if n >= 1:
        h += a[1] * centred(p_cur)
    for k in range(2, n + 1):
        p_next = 2.0 * convolve2d(t, p_cur)
        p_next -= np.pad(p_prev, [((s - q) // 2,) * 2 for s, q in zip(p_next.shape, p_prev.shape)])
        p_prev, p_cur = p_cur, p_next
        h += a[k] * centred(p_cur)
    return h[::-1, ::-1]


def modulate2(x, kind: str) -> np.ndarray:
    """Multiply by ``(-1)**n`` along rows (``'r'``), columns (``'c'``) or both (``'b'``).

    ``n`` counts from the array's centre sample ``floor(size/2)`` (toolbox ``modulate2``), so an
    odd-sized filter keeps the sign of its centre tap.
    """
    x = np.asarray(x, dtype=np.float64)
    s_rows = (-1.0) ** (np.arange(x.shape[0]) - x.shape[0] // 2)
    s_cols = (-1.0) ** (np.arange(x.shape[1]) - x.shape[1] // 2)
    if kind == "r":
        return x * s_rows[:, None]
    if kind == "c":
        return x * s_cols[None, :]
    if kind == "b":
        return x * s_rows[:, None] * s_cols[None, :]
    raise ValueError(f"modulate2: kind must be 'r', 'c' or 'b', got {kind!r}")


def directional_filters(name: str = "vk", kind: str = "d") -> tuple[np.ndarray, np.ndarray]:
    """Diamond filter pair ``(h0, h1)`` of the directional filter bank (toolbox ``dfilters``).

    Parameters
    ----------
    name : {"vk"}
        Vetterli–Kovačević 1-D prototypes, McClellan-transformed with the diamond kernel
        ``[[0, 1, 0], [1, 0, 1], [0, 1, 0]] / 4``.
    kind : {"d", "r"}
        Decomposition or reconstruction pair.

    Returns
    -------
    h0, h1 : ndarray
        Lowpass and highpass diamond filters (unscaled; the nonsubsampled bank divides both by
        ``sqrt(2)``). They satisfy ``H0 G0 + H1 G1 = 2`` for the pairs of the two kinds.
    """
    if name not in DIRECTIONAL_FILTERS:
        raise ValueError(f"unknown directional filter {name!r}; expected one of {DIRECTIONAL_FILTERS}")
    if kind not in _VK_PROTOTYPES:
        raise ValueError(f"directional_filters: kind must be 'd' or 'r', got {kind!r}")
    b0, b1 = _VK_PROTOTYPES[kind]
    return mcclellan_transform(b0, _DIAMOND_KERNEL), mcclellan_transform(b1, _DIAMOND_KERNEL)


def _resampz(x: np.ndarray, kind: int) -> np.ndarray:
    """Shear by one sample per column (kinds 1, 2) or row (kinds 3, 4), then trim zero borders.

    Toolbox ``resampz`` with shift 1: kind 1 shifts column ``n`` up by ``n``, kind 2 down, kind 3
    shifts row ``m`` left by ``m``, kind 4 right; all-zero leading and trailing rows (kinds 1, 2)
    or columns (kinds 3, 4) are removed.
    """
    if kind in (3, 4):
        return _resampz(x.T, kind - 2).T
    rows, cols = x.shape
    shifts = np.arange(cols) if kind == 2 else (cols - 1) - np.arange(cols)
    out = np.zeros((rows + cols - 1, cols))
    out[shifts[None, :] + np.arange(rows)[:, None], np.arange(cols)[None, :]] = x
    nonzero = np.flatnonzero(np.any(out != 0, axis=1))
    return out[nonzero[0]:nonzero[-1] + 1]


def parallelogram_filters(f0, f1) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The four parallelogram filter pairs derived from a diamond pair (toolbox ``parafilters``).

    Pair ``i`` (0-based) is the diamond pair modulated along rows (0), columns (1), transposed
    row-modulated (2) and transposed column-modulated (3), then sheared by ``_resampz`` kind ``i+1``.
    """
    f0 = np.asarray(f0, dtype=np.float64)
    f1 = np.asarray(f1, dtype=np.float64)
    out0, out1 = [], []
    for kind, (mod, transpose) in enumerate((("r", False), ("c", False), ("r", True), ("c", True)), 1):
        for f, out in ((f0, out0), (f1, out1)):
            g = modulate2(f, mod)
            out.append(_resampz(g.T if transpose else g, kind))
    return out0, out1


def _dfb_filter_set(name: str, kind: str):
    h0, h1 = directional_filters(name, kind)
    h0, h1 = h0 / np.sqrt(2.0), h1 / np.sqrt(2.0)
    fan = (modulate2(h0, "c"), modulate2(h1, "c"))
    para0, para1 = parallelogram_filters(h0, h1)
    return fan, para0, para1


# --------------------------------------------------------------------------------------------
# Periodic filtering as the toolbox places its taps
# --------------------------------------------------------------------------------------------

def _tap_offsets(f: np.ndarray, mup: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Displacements (row, col) of the taps of ``f`` for ``y[n] = sum f[k] x[n - offset(k)]``."""
    rows, cols = np.indices(f.shape)
    identity = mup is None or bool(np.all((mup == 1) | (mup == np.eye(2))))
    if identity:
        # efilter2 with 'per' extension and conv2 'valid': the tap at (r, c) reads
        # x[n - (r, c) + ceil((size - 1) / 2)].
        return rows - -(-(f.shape[0] - 1) // 2), cols - -(-(f.shape[1] - 1) // 2)
    m11, m12, m21, m22 = (int(v) for v in np.asarray(mup).ravel())
    # zconv2: tap (r, c) sits at (m21*c + m22*r, m11*c + m12*r) from a start offset computed from
    # the upsampled filter's extent; C integer division truncates towards zero.
    ext_cols = m11 * (f.shape[1] - 1) + m12 * (f.shape[0] - 1)
    ext_rows = m22 * (f.shape[0] - 1) + m21 * (f.shape[1] - 1)
    if ext_cols < 0 or ext_rows < 0:
        raise ValueError(f"upsampling matrix {mup.tolist()} gives a negative filter extent, "
                         "for which the reference toolbox is undefined")
    return m21 * cols + m22 * rows - ext_rows // 2, m11 * cols + m12 * rows - ext_cols // 2


def _periodic_response(f: np.ndarray, shape: tuple[int, int], mup=None) -> np.ndarray:
    """rfft2 of the circular kernel equivalent to one toolbox filtering step on a ``shape`` image."""
    d_rows, d_cols = _tap_offsets(f, None if mup is None else np.asarray(mup))
    keep = f != 0
    kernel = np.zeros(shape)
    np.add.at(kernel, (np.mod(d_rows[keep], shape[0]), np.mod(d_cols[keep], shape[1])), f[keep])
    return np.fft.rfft2(kernel)


def _dfb_tree(n_levels: int):
    """Stages of the NSDFB tree: list per level of (parent index, filter id, upsampling matrix).

    Filter ids: ``("fan", None)`` or ``("para", i)``. Each parent node splits into two children
    (its two filters), children ``2k`` and ``2k+1``; this is the order of ``nsdfbdec``.
    """
    stages = [[(0, ("fan", None), None)]]
    if n_levels >= 2:
        stages.append([(k, ("fan", None), _QUINCUNX) for k in range(2)])
    for level in range(3, n_levels + 1):
        stage = []
        half = 2 ** (level - 2)
        for k in range(1, 2 ** (level - 1) + 1):
            if k <= half:
                slk = 2 * ((k - 1) // 2) - 2 ** (level - 3) + 1
                mkl = 2 * np.array([[2 ** (level - 3), 0], [0, 1]]) @ np.array([[1, 0], [-slk, 1]])
                which = (k - 1) % 2
            else:
                slk = 2 * ((k - half - 1) // 2) - 2 ** (level - 3) + 1
                mkl = 2 * np.array([[1, 0], [0, 2 ** (level - 3)]]) @ np.array([[1, -slk], [0, 1]])
                which = (k - 1) % 2 + 2
            stage.append((k - 1, ("para", which), mkl))
        stages.append(stage)
    return stages


@lru_cache(maxsize=32)
def _dfb_responses(shape: tuple[int, int], n_levels: int, name: str, kind: str) -> tuple[np.ndarray, ...]:
    """Fourier responses of the ``2**n_levels`` leaves of the NSDFB tree (analysis or synthesis)."""
    fan, para0, para1 = _dfb_filter_set(name, kind)

    def pair(filter_id, mup):
        if filter_id[0] == "fan":
            f_low, f_high = fan
        else:
            f_low, f_high = para0[filter_id[1]], para1[filter_id[1]]
        return _periodic_response(f_low, shape, mup), _periodic_response(f_high, shape, mup)

    nodes = [None]  # the root: identity
    for stage in _dfb_tree(n_levels):
        children = []
        for parent, filter_id, mup in stage:
            r_low, r_high = pair(filter_id, mup)
            base = nodes[parent]
            children += [r_low if base is None else base * r_low, r_high if base is None else base * r_high]
        nodes = children
    for r in nodes:
        r.setflags(write=False)
    return tuple(nodes)


# --------------------------------------------------------------------------------------------
# Nonsubsampled pyramid (symmetric extension, à trous filters)
# --------------------------------------------------------------------------------------------

def _atrous_filter(x: np.ndarray, h: np.ndarray, step: int) -> np.ndarray:
    """``y[n] = sum_k h[k] x_sym[n + (k - c) * step]``: toolbox ``symext`` + ``atrousc`` (or conv2).

    ``x_sym`` is the half-sample symmetric extension and ``c`` the filter centre. The toolbox
    convolves with the flipped filter; the pyramid filters are symmetric, so correlation is the
    same, and it lets each tap be one shifted view of the padded image.
    """
    c_r, c_c = (h.shape[0] - 1) // 2, (h.shape[1] - 1) // 2
    xp = np.pad(x, ((c_r * step,) * 2, (c_c * step,) * 2), mode="symmetric")
    rows, cols = x.shape
    y = np.zeros_like(x)
    hf = h[::-1, ::-1]  # convolution, as the toolbox (a no-op for its symmetric filters)
    for (a, b), w in np.ndenumerate(hf):
        if w != 0.0:
            y += w * xp[a * step:a * step + rows, b * step:b * step + cols]
    return y


def nsp_dec(x, level: int, pfilt: str = "pyrexc") -> tuple[np.ndarray, np.ndarray]:
    """One nonsubsampled pyramid split at ``level`` (0 = finest): ``(lowpass, bandpass)``."""
    h0, h1, _, _ = atrous_filters(pfilt)
    x = np.asarray(x, dtype=np.float64)
    return _atrous_filter(x, h0, 2 ** level), _atrous_filter(x, h1, 2 ** level)


def nsp_rec(low, high, level: int, pfilt: str = "pyrexc") -> np.ndarray:
    """Inverse of :func:`nsp_dec`: ``G0 low + G1 high`` with the level's à trous filters."""
    _, _, g0, g1 = atrous_filters(pfilt)
    step = 2 ** level
    return _atrous_filter(np.asarray(low, np.float64), g0, step) + _atrous_filter(np.asarray(high, np.float64), g1, step)


# --------------------------------------------------------------------------------------------
# Nonsubsampled directional filter bank
# --------------------------------------------------------------------------------------------

def nsdfb_dec(x, n_levels: int, dfilt: str = "vk") -> list[np.ndarray]:
    """Split an image into ``2**n_levels`` directional subbands (toolbox ``nsdfbdec``).

    Parameters
    ----------
    x : array_like, 2-D
        Image (typically a bandpass image of the pyramid).
    n_levels : int
        Tree depth (>= 0); 0 returns ``[x]``.
    dfilt : {"vk"}
        Diamond filter family.

    Returns
    -------
    list of ndarray
        Subbands in the toolbox order (directions rotating clockwise from 135 degrees).
    """
    x = np.asarray(x, dtype=np.float64)
    n_levels = _check_levels([n_levels])[0]
    if n_levels == 0:
        return [x.copy()]
    spectrum = np.fft.rfft2(x)
    responses = _dfb_responses(x.shape, n_levels, dfilt, "d")
    return [np.fft.irfft2(spectrum * r, s=x.shape) for r in responses]


def nsdfb_rec(subbands: Sequence[np.ndarray], dfilt: str = "vk") -> np.ndarray:
    """Inverse of :func:`nsdfb_dec` (toolbox ``nsdfbrec``)."""
    subbands = [np.asarray(s, dtype=np.float64) for s in subbands]
    n_levels = int(round(np.log2(len(subbands)))) if subbands else -1
    if n_levels < 0 or 2 ** n_levels != len(subbands):
        raise ValueError(f"nsdfb_rec: need 2**l subbands, got {len(subbands)}")
    if n_levels == 0:
        return subbands[0].copy()
    shape = subbands[0].shape
    if any(s.shape != shape for s in subbands):
        raise ValueError("nsdfb_rec: subbands differ in shape: " + ", ".join(str(s.shape) for s in subbands))
    responses = _dfb_responses(shape, n_levels, dfilt, "r")
    total = sum(np.fft.rfft2(s) * r for s, r in zip(subbands, responses))
    return np.fft.irfft2(total, s=shape)


# --------------------------------------------------------------------------------------------
# NSCT
# --------------------------------------------------------------------------------------------

def _check_levels(levels) -> list[int]:
    out = []
    for v in levels:
        if isinstance(v, (bool, np.bool_)) or int(v) != v or v < 0:
            raise ValueError(f"directional levels must be non-negative integers, got {list(levels)}")
        out.append(int(v))
    return out


def nsct_dec(x, levels: Sequence[int] = DEFAULT_LEVELS, dfilt: str = "vk", pfilt: str = "pyrexc") -> list:
    """Nonsubsampled contourlet decomposition (toolbox ``nsctdec``).

    Parameters
    ----------
    x : array_like, 2-D
        Real image (any scale; fusion code uses 0..255).
    levels : sequence of int
        Directional tree depth at each pyramid level, coarse to fine; ``len(levels)`` pyramid
        levels. The default ``(2, 3, 3, 4)`` gives 4, 8, 8 and 16 directional subbands.
    dfilt : {"vk"}
        Directional (diamond) filter family.
    pfilt : {"pyrexc", "pyr"}
        Pyramid filter family.

    Returns
    -------
    list
        ``[lowpass, level_1, ..., level_J]`` with ``level_i`` a list of ``2**levels[i-1]``
        float64 subbands (or the bandpass array itself where ``levels[i-1] == 0``), coarse to fine.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.size == 0:
        raise ValueError(f"nsct_dec: expected a non-empty 2-D image, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("nsct_dec: image contains NaN or Inf")
    levels = _check_levels(levels)
    atrous_filters(pfilt)  # validate the name before any work
    bands: list = []
    low = x
    for level, n_dir in enumerate(reversed(levels)):  # finest pyramid level first
        low, high = nsp_dec(low, level, pfilt)
        bands.append(nsdfb_dec(high, n_dir, dfilt) if n_dir > 0 else high)
    return [low] + bands[::-1]


def nsct_rec(coeffs: Sequence, dfilt: str = "vk", pfilt: str = "pyrexc") -> np.ndarray:
    """Nonsubsampled contourlet reconstruction (toolbox ``nsctrec``), the inverse of :func:`nsct_dec`.

    Parameters
    ----------
    coeffs : list
        ``[lowpass, level_1, ..., level_J]`` as returned by :func:`nsct_dec`.
    dfilt, pfilt : str
        The filter families used for the decomposition.

    Returns
    -------
    ndarray of float64
    """
    if len(coeffs) < 1:
        raise ValueError("nsct_rec: empty coefficient list")
    x = np.asarray(coeffs[0], dtype=np.float64)
    n = len(coeffs) - 1
    for i, band in enumerate(coeffs[1:]):
        high = nsdfb_rec(band, dfilt) if isinstance(band, (list, tuple)) else np.asarray(band, np.float64)
        if high.shape != x.shape:
            raise ValueError(f"nsct_rec: level {i + 1} has shape {high.shape}, lowpass {x.shape}")
        x = nsp_rec(x, high, n - 1 - i, pfilt)
    return x
