"""Photoacoustic physics for the phantom: light fluence, initial pressure, ring-array acquisition.

Conventions and constants (data notes §1b):

* Initial pressure ``p0 = Γ μa Φ`` (Grüneisen Γ, absorption μa in 1/mm, fluence Φ relative to the
  fluence at the skin).
* Fluence from the steady-state diffusion approximation ``-∇·(D ∇Φ) + μa Φ = 0`` with
  ``D = 1 / (3 (μa + μs'))`` and ``Φ = 1`` on the skin, because MSOT illuminates the whole
  circumference (Wang & Wu, *Biomedical Optics*, 2007, ch. 5). For a homogeneous disc of radius R
  this gives ``Φ(r) = I0(μeff r) / I0(μeff R)`` with ``μeff = sqrt(3 μa (μa + μs'))``. The fast
  option is the 1-D slab solution ``exp(-μeff d)`` with d the depth under the skin.
* Acquisition: MSOT inVision-like ring of 128 elements on a 270° arc of radius 40 mm around the
  field of view, gap at the top (where the animal holder enters); each element records the
  circular projection of p0 (pixels binned by distance, half-pixel bins, with 1/sqrt(d) spreading
  and a Gaussian in-plane directivity); band-limited ramp filtering, additive noise and a
  speed-of-sound mismatch, then delay-and-sum back-projection (the adjoint of the projection).
  The result is signed, edge-enhanced and streaky, like vendor back-projection images.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage as ndi
from scipy import sparse
from scipy.sparse.linalg import spsolve

__all__ = ["fluence_diffusion", "fluence_fast", "ring_system", "acquire_and_reconstruct", "SPEED_OF_SOUND"]

#: Speed of sound in water/soft tissue (mm/µs).
SPEED_OF_SOUND = 1.5


def _mu_eff(mua, mus_prime):
    return np.sqrt(3.0 * mua * (mua + mus_prime))


def fluence_fast(body: np.ndarray, mua: np.ndarray, px_mm: float, mus_prime: float = 1.0) -> np.ndarray:
    """Fluence ``exp(-μeff d)`` with d the depth below the skin (mm); 1 outside the body.

    μeff is that of the body's median absorption, so shadowing by individual organs is ignored:
    this is the fast mode, which over-darkens the centre compared with the diffusion solution.
    """
    depth = ndi.distance_transform_edt(body) * px_mm
    mu = _mu_eff(float(np.median(mua[body])) if body.any() else 0.0, mus_prime)
    return np.exp(-mu * depth).astype(np.float32)


def fluence_diffusion(body: np.ndarray, mua: np.ndarray, px_mm: float, mus_prime: float = 1.0) -> np.ndarray:
    """Solve ``-∇·(D∇Φ) + μa Φ = 0`` in the body with ``Φ = 1`` outside it (whole-skin illumination).

    Five-point finite differences with face diffusivities taken as the arithmetic mean of the two
    neighbouring pixels, solved with a sparse direct solver (SuperLU).

    Parameters
    ----------
    body : (H, W) bool array
        The tissue domain.
    mua : (H, W) array
        Absorption coefficient (1/mm).
    px_mm : float
        Pixel size (mm).
    mus_prime : float
        Reduced scattering coefficient (1/mm), about 1/mm for soft tissue at 800 nm (Jacques 2013).
    """
    body = np.asarray(body, dtype=bool)
    mua = np.asarray(mua, dtype=np.float64)
    phi = np.ones(body.shape, dtype=np.float64)
    # Pixels on the image border cannot take part (no neighbours outside): treat them as skin.
    inside = body.copy()
    inside[[0, -1], :] = False
    inside[:, [0, -1]] = False
    n = int(inside.sum())
    if n == 0:
        return phi.astype(np.float32)
    index = -np.ones(body.shape, dtype=np.int64)
    index[inside] = np.arange(n)
    diff = 1.0 / (3.0 * (mua + mus_prime))
    h2 = px_mm * px_mm
    rr, cc = np.nonzero(inside)
    diag = mua[rr, cc].copy()
    rhs = np.zeros(n)
    rows, cols, vals = [], [], []
    me = index[rr, cc]
    for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        nr, nc = rr + dr, cc + dc
        coef = 0.5 * (diff[rr, cc] + diff[nr, nc]) / h2
        diag += coef
        nb = index[nr, nc]
        interior = nb >= 0
        rows.append(me[interior])
        cols.append(nb[interior])
        vals.append(-coef[interior])
        rhs[~interior] += coef[~interior]  # Dirichlet Φ = 1 at the skin
    rows.append(me)
    cols.append(me)
    vals.append(diag)
    a = sparse.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    phi[inside] = spsolve(a, rhs)
    return phi.astype(np.float32)


@lru_cache(maxsize=2)
def ring_system(size: int, fov_mm: float, n_elements: int = 128, arc_deg: float = 270.0,
                radius_mm: float = 40.0, directivity_deg: float = 25.0):
    """Sparse projection matrix of a ring array, cached per geometry.

    Returns ``(A, d0, bin_mm)``: ``A`` is a CSR matrix of shape ``(n_elements * n_bins, size²)``
    whose row ``k * n_bins + j`` sums the pixels at distance ``d0 + (j + 0.5) bin_mm`` from
    element k (nearest half-pixel bin), weighted by ``directivity / sqrt(distance)``.
    The back-projection is ``A.T``. At 256² A holds about 8.4 M non-zeros (~70 MB).
    """
    px = fov_mm / size
    bin_mm = px / 2
    coords = (np.arange(size) - (size - 1) / 2) * px
    y, x = np.meshgrid(coords, coords, indexing="ij")
    x = x.ravel().astype(np.float64)
    y = y.ravel().astype(np.float64)
    # Elements span arc_deg centred on the bottom (+y, dorsal); the gap faces the top.
    half = np.deg2rad(arc_deg) / 2
    phi = np.pi / 2 + np.linspace(-half, half, n_elements)
    sx, sy = radius_mm * np.cos(phi), radius_mm * np.sin(phi)
    half_diag = np.sqrt(2) * fov_mm / 2
    d0 = max(radius_mm - half_diag, 0.0)
    n_bins = int(np.ceil((radius_mm + half_diag - d0) / bin_mm)) + 1
    dx = x[None, :] - sx[:, None]
    dy = y[None, :] - sy[:, None]
    dist = np.hypot(dx, dy)
    # Angle between the element's axis (pointing at the centre) and the direction to the pixel.
    cos_psi = -(dx * np.cos(phi)[:, None] + dy * np.sin(phi)[:, None]) / dist
    psi = np.arccos(np.clip(cos_psi, -1.0, 1.0))
    weight = np.exp(-(psi / np.deg2rad(directivity_deg)) ** 2) / np.sqrt(dist / radius_mm)
    bins = np.minimum(((dist - d0) / bin_mm).astype(np.int64), n_bins - 1)
    rows = (np.arange(n_elements)[:, None] * n_bins + bins).ravel()
    cols = np.broadcast_to(np.arange(size * size), bins.shape).ravel()
    a = sparse.csr_matrix((weight.ravel().astype(np.float32), (rows, cols)),
                          shape=(n_elements * n_bins, size * size))
    a.sum_duplicates()
    return a, d0, bin_mm, n_bins


def _bandpass_ramp(n: int, dt_us: float, f_low: float, f_high: float) -> np.ndarray:
    """Ramp × smooth band-pass transfer function on an rfft grid (frequencies in MHz)."""
    f = np.fft.rfftfreq(n, d=dt_us)
    high_pass = 1.0 - np.exp(-(f / f_low) ** 2)
    low_pass = np.exp(-(f / f_high) ** 4)
    return f * high_pass * low_pass


def acquire_and_reconstruct(p0: np.ndarray, fov_mm: float, rng: np.random.Generator, *,
                            n_elements: int = 128, arc_deg: float = 270.0, band_mhz=(0.5, 6.0),
                            noise: float = 0.03, sos_error: float = 0.01) -> np.ndarray:
    """Simulate the ring acquisition of ``p0`` and reconstruct it by back-projection (signed image).

    Parameters
    ----------
    p0 : (N, N) array
        Initial pressure (arbitrary units).
    fov_mm : float
        Field of view of the image side (mm).
    rng : numpy.random.Generator
        For the sinogram noise and the speed-of-sound mismatch.
    n_elements, arc_deg : int, float
        Ring array (128 elements on 270° for MSOT inVision).
    band_mhz : (float, float)
        Smooth band edges of the detection (MHz); low frequencies lost = edge enhancement.
    noise : float
        Sinogram noise standard deviation relative to the RMS of the noiseless sinogram.
    sos_error : float
        Relative standard deviation of the reconstruction speed of sound (blur, doubled edges).
    """
    size = p0.shape[0]
    a, d0, bin_mm, n_bins = ring_system(size, float(fov_mm), int(n_elements), float(arc_deg))
    sino = (a @ p0.ravel().astype(np.float32)).reshape(n_elements, n_bins).astype(np.float64)
    rms = float(np.sqrt(np.mean(sino ** 2))) or 1.0
    sino += rng.normal(0.0, noise * rms, size=sino.shape)
    n_fft = 2 * n_bins
    h = _bandpass_ramp(n_fft, bin_mm / SPEED_OF_SOUND, *band_mhz)
    filt = np.fft.irfft(np.fft.rfft(sino, n=n_fft, axis=1) * h, n=n_fft, axis=1)[:, :n_bins]
    # Reconstructing with a wrong speed of sound reads each trace at a stretched time axis.
    ratio = 1.0 + rng.normal(0.0, sos_error)
    d_rec = d0 + (np.arange(n_bins) + 0.5) * bin_mm
    src = np.clip((d_rec * ratio - d0) / bin_mm - 0.5, 0, n_bins - 1.001)
    i0 = src.astype(np.int64)
    frac = src - i0
    filt = filt[:, i0] * (1 - frac) + filt[:, i0 + 1] * frac
    img = a.T @ filt.ravel().astype(np.float32)
    return img.reshape(size, size).astype(np.float32)
