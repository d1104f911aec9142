"""Body-contour segmentation by optimal graph search in polar coordinates (paper §4.3.1, Table 3).

The seed paper (Zhong et al., PAMRFuse+, §4.3.1) segments the body contour of every image source
with the optimal-graph-search method of Liang et al. (2022, Med. Image Anal. 75:102275), trained
once per source. This module is the 2-D version of that method (planning notes §2a), after the
polar closed-contour formulation of Chiu et al. (2012, Biomed. Opt. Express 3:1127):

1. *energy*: ``|I - b|``, with ``b`` the median of the image border (the coupling water), so the
   same code serves MRI (dark background), signed PAT stored with zero at 0.5, and fused images
   of any background level; smoothed and normalised by a high percentile;
2. *centre*: the centroid of the convex hull of the coarse tissue mask (energy above the border
   level plus ``k`` MADs), robust to a single bright blob;
3. *polar unwrap* along ``n_angles`` rays with :func:`scipy.ndimage.map_coordinates`;
4. *cost* ``C(θ, r) = 1 - drop(θ, r) + β · outside(θ, r)``: the normalised outward drop of the
   energy plus the fraction of tissue samples left outside the boundary. The region term makes
   the path take the *outermost* tissue edge rather than the edge of a bright internal organ;
   a gradient-only cost works on MRI but not on PAT (planning notes §2a);
5. *optimal closed path*: ``r(θ)`` minimising ``Σ C(θ, r(θ)) + λ Σ |r(θ) - r(θ-1)|`` under the
   hard constraint ``|r(θ) - r(θ-1)| <= Δ`` for every pair of consecutive rays *including the
   pair (last, first)*, solved exactly by dynamic programming (Viterbi) run jointly for every
   start radius, vectorised over (start, radius);
6. the filled mask of the polygon ``(r(θ), θ)`` with :func:`skimage.draw.polygon`.

A learned cost (:class:`ContourSegmenter` with ``cost="learned"``) replaces the energy by the
body probability of a small MONAI U-Net trained per image source, as the paper trains one model
per source; the graph search stays the same, so the contour is always closed and smooth.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy import ndimage as ndi
from skimage.draw import polygon as draw_polygon
from skimage.measure import label as label_components
from skimage.morphology import convex_hull_image

from fusionbench.data.io import as_image

__all__ = ["ContourResult", "ContourSegmenter", "body_energy", "estimate_centre", "polar_unwrap",
           "contour_cost", "region_cost", "body_prior", "largest_component_centre", "optimal_closed_path",
           "contour_mask", "segment_body"]


@dataclass
class ContourResult:
    """A closed body contour: ``radii[k]`` (pixels) along the ray at ``angles[k]`` from ``centre``.

    A ray at angle ``θ`` runs through ``(row, col) = centre + r (sin θ, cos θ)``.
    """

    mask: np.ndarray
    centre: tuple[float, float]
    angles: np.ndarray
    radii: np.ndarray
    max_step: float
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def points(self) -> np.ndarray:
        """(n_angles, 2) contour vertices as (row, col)."""
        return np.stack([self.centre[0] + self.radii * np.sin(self.angles),
                         self.centre[1] + self.radii * np.cos(self.angles)], axis=1)


def _border(image: np.ndarray, width: int) -> np.ndarray:
    return np.concatenate([image[:width].ravel(), image[-width:].ravel(),
                           image[:, :width].ravel(), image[:, -width:].ravel()])


def body_energy(image, *, sigma: float = 2.0, border: int = 4) -> np.ndarray:
    """Tissue energy ``|I - b|``: distance from the background level, smoothed, in [0, 1].

    ``b`` is the median of a ``border``-pixel frame (the water around the animal). Taking the
    absolute value turns bipolar PAT back-projections (zero at 0.5) into an envelope, as the
    planning notes (§2a step 1) prescribe, and leaves MRI (``b`` near 0) unchanged up to an
    offset. Normalised by its 99.5th percentile and clipped to [0, 1].

    Parameters
    ----------
    image : (H, W) array_like
        Any image source in [0, 1] (see :func:`fusionbench.data.io.as_image`).
    sigma : float
        Gaussian smoothing (pixels).
    border : int
        Width of the frame that estimates the background level.
    """
    image = as_image(image, "image")
    border = int(max(1, min(border, min(image.shape) // 4)))
    background = float(np.median(_border(image, border)))
    energy = ndi.gaussian_filter(np.abs(image - background), sigma) if sigma > 0 else np.abs(image - background)
    scale = float(np.percentile(energy, 99.5))
    if scale <= 1e-12:
        return np.zeros_like(energy, dtype=np.float32)
    return np.clip(energy / scale, 0.0, 1.0).astype(np.float32)


def _tissue_threshold(energy: np.ndarray, border: int, k: float, floor: float = 0.05) -> float:
    frame = _border(energy, border)
    median = float(np.median(frame))
    mad = 1.4826 * float(np.median(np.abs(frame - median)))
    # The floor matters where the border is quieter than the water near the body (PAT streaks
    # fade with distance) or perfectly flat (synthetic images, MAD 0).
    return max(median + k * mad, floor)


def estimate_centre(energy, *, sigma: float = 4.0, k: float = 6.0, floor: float = 0.05, border: int = 4) -> tuple[float, float]:
    """Polar origin: centroid of the convex hull of the coarse tissue mask.

    The coarse energy (``energy`` smoothed by ``sigma``) is thresholded at the border median plus
    ``k`` robust standard deviations (1.4826 MAD) of the border, with a floor of 0.05; the largest
    connected component is kept and its convex hull's centroid returned. The hull makes the centre
    insensitive to a dark interior or to one bright internal blob, which pulls an
    intensity-weighted centroid or an Otsu mask (planning notes §2a step 2).

    Returns
    -------
    (row, col) : tuple of float
        The image centre if no tissue is found.
    """
    energy = np.asarray(energy, dtype=np.float32)
    coarse = ndi.gaussian_filter(energy, sigma)
    border = int(max(1, min(border, min(energy.shape) // 4)))
    tissue = coarse > _tissue_threshold(coarse, border, k, floor)
    if not tissue.any():
        return (energy.shape[0] - 1) / 2.0, (energy.shape[1] - 1) / 2.0
    labels = label_components(tissue, connectivity=2)
    largest = labels == (np.argmax(np.bincount(labels.ravel())[1:]) + 1)
    rows, cols = np.nonzero(convex_hull_image(largest))
    return float(rows.mean()), float(cols.mean())


def polar_unwrap(image, centre: tuple[float, float], *, n_angles: int = 360, max_radius: float | None = None,
                 radial_step: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample ``image`` along rays from ``centre``: ``P[k, j] = image(centre + r_j (sin θ_k, cos θ_k))``.

    Bilinear interpolation (:func:`scipy.ndimage.map_coordinates`, ``order=1``); samples outside the
    image repeat the nearest border pixel, so the image edge creates no artificial step.

    Returns
    -------
    polar : (n_angles, n_radii) float32
    angles : (n_angles,) float64, radians, ``2π k / n_angles``
    radii : (n_radii,) float64, pixels, ``0, radial_step, ...``
    """
    image = np.asarray(image, dtype=np.float32)
    if max_radius is None:
        max_radius = float(np.hypot(*image.shape)) / 2.0
    angles = 2.0 * np.pi * np.arange(n_angles) / n_angles
    radii = np.arange(0.0, max_radius + 1e-9, radial_step)
    rows = centre[0] + np.sin(angles)[:, None] * radii[None, :]
    cols = centre[1] + np.cos(angles)[:, None] * radii[None, :]
    polar = ndi.map_coordinates(image, [rows, cols], order=1, mode="nearest")
    return polar.astype(np.float32), angles, radii


def contour_cost(polar_energy, *, threshold: float, beta: float = 1.0, ramp: float = 1.0,
                 min_radius: int = 2) -> np.ndarray:
    """Node cost ``C = 1 - drop + β · outside`` of the polar graph (planning notes §2a step 4).

    ``drop`` is the outward decrease ``P(r) - P(r + 1)`` (clipped at 0), divided by the median over
    rays of each ray's largest drop and clipped at 1, so the cost is low on falling edges (tissue inside, water outside). ``outside(θ, r)`` is the
    tissue weight ``clip((P - t) / (ramp · t), 0, 1)`` summed beyond ``r`` on the ray and divided
    by the number of radii (soft, so the faint streaks in the water around PAT count little):
    a boundary that leaves tissue outside pays for it, which is what stops the path on the
    outermost edge of PAT images, whose bright internal organs have stronger edges than the skin.

    Parameters
    ----------
    polar_energy : (n_angles, n_radii) array
        Polar energy or body probability in [0, 1].
    threshold : float
        Energy above which a sample counts as tissue.
    beta : float
        Weight of the region term.
    ramp : float
        Width of the soft tissue weight, in units of ``threshold``.
    min_radius : int
        Radii below this index are forbidden (infinite cost): a contour must enclose its centre.
    """
    polar = np.asarray(polar_energy, dtype=np.float64)
    # Forward difference: drop[:, j] is the fall between radii j and j+1, so the boundary of a
    # path at index j lies half a step outside radius j (see _graph_search).
    drop = np.clip(polar[:, :-1] - polar[:, 1:], 0.0, None)
    drop = np.concatenate([drop, np.zeros((polar.shape[0], 1))], axis=1)
    # Normalise by the typical boundary strength (median over rays of the strongest drop) and
    # clip: the edge of a bright internal organ, stronger than the skin on a few rays, gets no
    # more reward than the skin, so the region term decides and the outermost edge wins.
    peak = float(np.median(drop.max(axis=1)))
    edge_cost = 1.0 - (np.clip(drop / peak, 0.0, 1.0) if peak > 0 else drop)
    # Soft tissue weight: samples just above the threshold (streaks in the water around PAT
    # bodies) count little, the bright rim and organs fully.
    tissue = np.clip((polar - threshold) / max(ramp * threshold, 1e-6), 0.0, 1.0)
    # Tissue strictly beyond radius index j: reverse cumulative sum, shifted by one.
    beyond = np.cumsum(tissue[:, ::-1], axis=1)[:, ::-1]
    outside = np.concatenate([beyond[:, 1:], np.zeros((polar.shape[0], 1))], axis=1) / polar.shape[1]
    cost = edge_cost + beta * outside
    cost[:, :min_radius] = np.inf
    return cost


def optimal_closed_path(cost, max_step: int, *, smoothness: float = 0.0) -> np.ndarray:
    """Exact minimum-cost closed path through a polar cost image (Viterbi).

    Minimises ``Σ_k C[k, r_k] + λ Σ_k |r_k - r_{k-1}|`` over radius indices ``r_k`` subject to
    ``|r_k - r_{k-1}| <= Δ`` for all ``k`` *cyclically* (``r_{-1} = r_{K-1}``), i.e. a closed
    contour whose every step, the seam included, obeys the hard smoothness constraint. The DP is
    run for all start radii at once: the accumulated cost is an (n_start, n_radii) array
    updated once per ray with ``2Δ`` shifted minima (ties keep the smaller change), so the work is
    ``O(K · R² · (2Δ+1))`` array operations and never a loop over pixels.

    Parameters
    ----------
    cost : (K, R) array
        Node costs; ``inf`` marks forbidden nodes.
    max_step : int
        Δ >= 0, the largest radius change (in radius indices) between consecutive rays.
    smoothness : float
        λ >= 0, the soft penalty per index of radius change.

    Returns
    -------
    (K,) int array
        The radius index on each ray.
    """
    cost = np.asarray(cost, dtype=np.float64)
    if cost.ndim != 2 or min(cost.shape) < 1:
        raise ValueError(f"cost: expected a non-empty (n_angles, n_radii) array, got shape {cost.shape}")
    max_step = int(max_step)
    if max_step < 0:
        raise ValueError(f"max_step must be >= 0, got {max_step}")
    if smoothness < 0:
        raise ValueError(f"smoothness must be >= 0, got {smoothness}")
    n_angles, n_radii = cost.shape
    starts = np.flatnonzero(np.isfinite(cost[0]))
    if starts.size == 0:
        raise ValueError("cost: every radius of the first ray is forbidden (inf)")
    # acc[s, r]: best cost of a path starting at radius starts[s] and ending at r on this ray.
    acc = np.full((starts.size, n_radii), np.inf)
    acc[np.arange(starts.size), starts] = cost[0, starts]
    back = np.zeros((n_angles, starts.size, n_radii), dtype=np.int8 if max_step < 127 else np.int32)
    padded = np.full((starts.size, n_radii + 2 * max_step), np.inf)
    best = np.empty_like(acc)
    for k in range(1, n_angles):
        padded[:, max_step:max_step + n_radii] = acc
        # Arriving at r from r - d costs acc[s, r - d] + λ|d|; keep the best d per (s, r).
        best[:] = acc
        back_k = back[k]
        back_k[:] = 0
        for d in range(1, max_step + 1):
            for signed in (d, -d):
                candidate = padded[:, max_step - signed:max_step - signed + n_radii] + smoothness * d
                better = candidate < best
                np.copyto(best, candidate, where=better)
                np.copyto(back_k, signed, where=better)
        acc = best + cost[k][None, :]
    # Close the loop: the last radius must be within Δ of the start radius.
    r_grid = np.arange(n_radii)[None, :]
    seam = np.abs(r_grid - starts[:, None])
    total = np.where(seam <= max_step, acc + smoothness * seam, np.inf)
    flat = int(np.argmin(total))
    if not np.isfinite(total.flat[flat]):
        raise ValueError("no closed path satisfies the smoothness constraint (all costs infinite)")
    s, r = np.unravel_index(flat, total.shape)
    path = np.empty(n_angles, dtype=np.int64)
    path[-1] = r
    for k in range(n_angles - 1, 0, -1):
        path[k - 1] = path[k] - back[k, s, path[k]]
    return path


def contour_mask(shape: tuple[int, int], centre: tuple[float, float], angles, radii) -> np.ndarray:
    """Filled boolean mask of the polygon ``centre + r(θ)(sin θ, cos θ)`` (:func:`skimage.draw.polygon`)."""
    rows = centre[0] + np.asarray(radii) * np.sin(angles)
    cols = centre[1] + np.asarray(radii) * np.cos(angles)
    mask = np.zeros(shape, dtype=bool)
    rr, cc = draw_polygon(rows, cols, shape=shape)
    mask[rr, cc] = True
    return mask


def _check_params(n_angles: int, max_step: float, radial_step: float, beta: float) -> None:
    if int(n_angles) < 8:
        raise ValueError(f"n_angles must be >= 8, got {n_angles}")
    if not max_step >= 0:
        raise ValueError(f"max_step must be >= 0 pixels, got {max_step}")
    if not radial_step > 0:
        raise ValueError(f"radial_step must be > 0 pixels, got {radial_step}")
    if not beta >= 0:
        raise ValueError(f"beta must be >= 0, got {beta}")


def _graph_search(field_map: np.ndarray, centre, threshold: float, *, n_angles: int, max_step: float,
                  radial_step: float, beta: float, smoothness: float, ramp: float = 1.0) -> ContourResult:
    polar, angles, radii = polar_unwrap(field_map, centre, n_angles=n_angles, radial_step=radial_step)
    cost = contour_cost(polar, threshold=threshold, beta=beta, ramp=ramp)
    step_index = int(np.floor(max_step / radial_step + 1e-9))
    path = optimal_closed_path(cost, step_index, smoothness=smoothness)
    r = radii[path] + 0.5 * radial_step
    mask = contour_mask(field_map.shape, centre, angles, r)
    return ContourResult(mask=mask, centre=(float(centre[0]), float(centre[1])), angles=angles, radii=r,
                         max_step=step_index * radial_step, meta={"threshold": float(threshold)})


def segment_body(image, *, n_angles: int = 360, max_step: float = 2.0, radial_step: float = 1.0,
                 beta: float = 3.0, smoothness: float = 0.1, sigma: float = 1.5,
                 k_mad: float = 6.0, tissue_floor: float = 0.1, ramp: float = 2.0,
                 centre: tuple[float, float] | None = None) -> ContourResult:
    """Segment the body contour of one image with the hand-made cost.

    Parameters
    ----------
    image : (H, W) array_like
        PAT (signed, zero at 0.5), MRI or a fused image, in [0, 1].
    n_angles : int
        Rays (one per degree by default).
    max_step : float
        Δ, the hard bound on the radius change between consecutive rays, in pixels
        (1-3 px per degree, planning notes §2a).
    radial_step : float
        Radial sampling (pixels); Δ is rounded down to a multiple of it.
    beta : float
        Weight of the region term of :func:`contour_cost`.
    smoothness : float
        λ, the soft penalty per radius index of change.
    sigma : float
        Smoothing of the energy (pixels).
    k_mad : float
        Tissue threshold in robust standard deviations of the border (:func:`estimate_centre`).
    tissue_floor : float
        Lowest tissue threshold on the normalised energy (the water near a PAT body is streakier
        than the border that sets the MAD).
    ramp : float
        Width of the soft tissue weight of :func:`contour_cost`, in units of the threshold.

    Notes
    -----
    The defaults (``beta=3``, ``ramp=2``, ``tissue_floor=0.1``, ``smoothness=0.1``, ``sigma=1.5``)
    were chosen
    on eight 128² phantom pairs (PAT, MRI and their average) so that no source is favoured. On
    bipolar PAT the envelope ``|I - b|`` includes the negative lobe just outside the skin, which
    moves the contour outward by a fraction of a pixel; more smoothing makes that bias larger.
    centre : (row, col), optional
        Polar origin; estimated when omitted.

    Returns
    -------
    ContourResult
        ``mask`` (bool (H, W)), ``centre``, ``angles``, ``radii`` (pixels), ``max_step`` (pixels).
    """
    _check_params(n_angles, max_step, radial_step, beta)
    energy = body_energy(image, sigma=sigma)
    if centre is None:
        centre = estimate_centre(energy, k=k_mad, floor=tissue_floor)
    threshold = _tissue_threshold(energy, 4, k_mad, tissue_floor)
    return _graph_search(energy, centre, threshold, n_angles=n_angles, max_step=max_step,
                         radial_step=radial_step, beta=beta, smoothness=smoothness, ramp=ramp)


def largest_component_centre(mask: np.ndarray) -> tuple[float, float] | None:
    """Centroid of the convex hull of the largest 8-connected component of ``mask`` (None if empty).

    For a body probability thresholded at 0.5: dark reconstruction artefacts and stray blobs
    form separate or smaller components and do not move the polar origin.
    """
    if not mask.any():
        return None
    labels = label_components(mask, connectivity=2)
    largest = labels == (np.argmax(np.bincount(labels.ravel())[1:]) + 1)
    rows, cols = np.nonzero(convex_hull_image(largest))
    return float(rows.mean()), float(cols.mean())


def body_prior(probability: np.ndarray, *, inside: float = 0.75, outside: float = 0.25) -> np.ndarray:
    """The body probability with what one animal's body is: one connected region without holes.

    ``p > 0.5`` is reduced to its largest 8-connected component with its holes filled. A hole
    (a dark organ or artefact the network doubts, enclosed by body) is raised to at least
    ``inside``; a separate blob (an artefact in the water) is lowered to at most ``outside``.
    Elsewhere, near the body's edge included, ``p`` is unchanged, so the contour still follows it.
    """
    p = np.asarray(probability, dtype=np.float32)
    core = p > 0.5
    if not core.any():
        return p
    labels = label_components(core, connectivity=2)
    body = ndi.binary_fill_holes(labels == (np.argmax(np.bincount(labels.ravel())[1:]) + 1))
    out = p.copy()
    out[body] = np.maximum(out[body], inside)
    out[core & ~body] = np.minimum(out[core & ~body], outside)
    return out


def region_cost(polar_probability, radii, *, clip: float = 1e-4, min_radius: int = 2) -> np.ndarray:
    """Node cost of the maximum a posteriori star-shaped region under a body probability.

    With independent pixel probabilities ``p``, the log-likelihood of a region R is
    ``sum_R log p + sum_(not R) log(1 - p)``, i.e. up to a constant the sum of the logits
    ``log(p / (1 - p))`` over R. For a region bounded by radius index ``j`` on ray θ this is the
    cumulative logit along the ray weighted by the area element ``r dr dθ``. The cost is its
    negative (divided by the mean radius, so a unit of cost is a pixel of area per ray at mean
    radius): a dark hole inside the body cannot pull the contour in when body lies beyond it, and
    an artefact outside, with low probability, can only push the cost up.

    Parameters
    ----------
    polar_probability : (n_angles, n_radii) array in [0, 1]
    radii : (n_radii,) array, the sample radii in pixels
    clip : float
        Probabilities are clipped to [clip, 1 - clip] (logits bounded by about 9.2).
    min_radius : int
        Radius indices below this are forbidden: the contour must enclose its centre.
    """
    p = np.clip(np.asarray(polar_probability, dtype=np.float64), clip, 1.0 - clip)
    radii = np.asarray(radii, dtype=np.float64)
    step = radii[1] - radii[0] if radii.size > 1 else 1.0
    weight = (radii + 0.5 * step) / max(float(np.mean(radii + 0.5 * step)), 1e-9)
    cost = -np.cumsum(np.log(p / (1.0 - p)) * weight[None, :], axis=1)
    cost[:, :min_radius] = np.inf
    return cost


class ContourSegmenter:
    """Body-contour segmenter for one image source: graph search with a hand-made or learned cost.

    ``cost="hand"`` uses :func:`segment_body` (no training; :meth:`fit` is a no-op).
    ``cost="learned"`` trains a MONAI ``UNet`` to predict the body probability ``p`` on this
    source's training images (binary ``DiceCELoss``, AdamW with a one-cycle schedule, fixed seed,
    :func:`segment.organ_unet.train_unet`), at a working resolution of ``size``² (the body is a
    large, smooth structure), with flips, similarity transforms and intensity changes
    (``augment="full"``); the probability is resampled to the image's own size. The graph search
    then runs on :func:`region_cost`, the maximum a posteriori star-shaped region under ``p``
    (after :func:`body_prior`: one connected body without holes), from the centre of the largest
    component of ``p > 0.5``: the contour stays closed and smooth, and neither a dark artefact
    outside the body nor a dark organ inside it can capture it. One
    segmenter is fitted per source, as the paper trains one model per source.

    Parameters
    ----------
    cost : {"hand", "learned"}
    steps, epochs : int
        Training budget of the learned cost: at most one (default ``steps=800``).
    batch_size, lr, seed : training settings of the learned cost.
    size : int
        Working resolution of the learned cost (images are area-resampled to ``size`` x ``size``).
    channels : sequence of int
        U-Net channels per level (strides 2).
    augment : bool or "full"
        Augmentation of :func:`segment.organ_unet.train_unet`.
    **search : keyword arguments of :func:`segment_body` (``max_step``, ``beta``, ...).
    """

    def __init__(self, cost: str = "hand", *, steps: int | None = None, epochs: int | None = None,
                 batch_size: int = 16, lr: float = 3e-3, seed: int = 0, size: int = 96,
                 channels: Sequence[int] = (16, 32, 64, 128), augment: bool | str = "full",
                 **search: Any) -> None:
        if cost not in ("hand", "learned"):
            raise ValueError(f"cost must be 'hand' or 'learned', got {cost!r}")
        if steps is not None and epochs is not None:
            raise ValueError(f"give steps or epochs, not both (got {steps} and {epochs})")
        if int(size) < 16 or int(size) % 2 ** (len(channels) - 1):
            raise ValueError(f"size must be >= 16 and a multiple of {2 ** (len(channels) - 1)}, got {size}")
        self.cost = cost
        budget = {"epochs": int(epochs)} if epochs is not None else {"steps": int(steps or 800)}
        self.train_config = {**budget, "batch_size": int(batch_size), "lr": float(lr), "seed": int(seed),
                             "size": int(size), "channels": [int(c) for c in channels], "augment": augment}
        self.search = {"n_angles": 360, "max_step": 2.0, "radial_step": 1.0, "beta": 3.0,
                       "smoothness": 0.1, "ramp": 2.0, **search}
        _check_params(self.search["n_angles"], self.search["max_step"], self.search["radial_step"],
                      self.search["beta"])
        self.model = None
        self.losses: list[float] = []

    def _resize(self, image: np.ndarray, order: int = 1) -> np.ndarray:
        from skimage.transform import resize

        size = self.train_config["size"]
        return resize(image, (size, size), order=order, anti_aliasing=order > 0, preserve_range=True)

    def fit(self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray], log=None) -> "ContourSegmenter":
        """Train the learned cost on (image, body mask) pairs; no-op for the hand-made cost."""
        if self.cost == "hand":
            return self
        from .organ_unet import train_unet

        if len(images) != len(masks) or not images:
            raise ValueError(f"fit: need as many masks as images (>= 1), got {len(images)} and {len(masks)}")
        small = [self._resize(as_image(im, "image")).astype(np.float32) for im in images]
        # Area-average the mask, then threshold: the body at working resolution, no aliasing.
        labels = [(self._resize((np.asarray(m) > 0).astype(np.float32)) > 0.5).astype(np.int64) for m in masks]
        config = dict(self.train_config)
        size = config.pop("size")
        self.model, self.losses = train_unet(small, labels, n_classes=2, log=log, size=None, patch=None,
                                             **config)
        self.model.fb_inference["work_size"] = size
        return self

    @staticmethod
    def training_hash(images: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> str:
        """Short SHA-256 of a training set (images as float32, body masks as booleans)."""
        import hashlib

        h = hashlib.sha256()
        for im, m in zip(images, masks):
            h.update(np.ascontiguousarray(im, dtype=np.float32).tobytes())
            h.update(np.ascontiguousarray(np.asarray(m) > 0).tobytes())
        return h.hexdigest()[:16]

    def save(self, folder, train_hash: str = "") -> None:
        """Write a fitted learned cost: ``model.pt`` and ``config.json`` (settings, inference
        statistics, losses, ``train_hash``: what :meth:`load` and a cache check compare)."""
        import io
        import json

        import torch

        from fusionbench.data.io import atomic_write_bytes

        if self.model is None:
            raise RuntimeError("only a fitted learned cost can be saved")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        torch.save(self.model.state_dict(), buf)
        atomic_write_bytes(folder / "model.pt", buf.getvalue())
        record = {"config": self.config(), "train_hash": train_hash, "inference": self.model.fb_inference,
                  "losses": self.losses}
        atomic_write_bytes(folder / "config.json", (json.dumps(record, indent=1) + "\n").encode())

    @classmethod
    def load(cls, folder, expect: "ContourSegmenter | None" = None, train_hash: str | None = None
             ) -> "ContourSegmenter | None":
        """A learned cost written by :meth:`save`; ``None`` when there is none, or when its settings
        differ from ``expect``'s or its training data from ``train_hash``."""
        import json

        import torch

        from .organ_unet import make_unet

        folder = Path(folder)
        try:
            record = json.loads((folder / "config.json").read_text())
        except (OSError, ValueError):
            return None
        if expect is not None and record["config"] != json.loads(json.dumps(expect.config())):
            return None
        if train_hash is not None and record["train_hash"] != train_hash:
            return None
        train = record["config"]["train"]
        seg = cls("learned", **{k: v for k, v in train.items() if k in ("steps", "epochs", "batch_size", "lr",
                                                                         "seed", "size", "channels", "augment")},
                  **record["config"]["search"])
        model = make_unet(2, train["channels"], (2,) * (len(train["channels"]) - 1), 1)
        model.load_state_dict(torch.load(folder / "model.pt", weights_only=True))
        model.eval()
        model.fb_inference = record["inference"]
        seg.model, seg.losses = model, record["losses"]
        return seg

    def probability(self, image) -> np.ndarray:
        """Body probability map of the learned cost, float32 (H, W) at the image's own size."""
        if self.model is None:
            raise RuntimeError("ContourSegmenter(cost='learned') must be fitted before use")
        from skimage.transform import resize

        from .organ_unet import predict_proba

        image = as_image(image, "image")
        prob = predict_proba(self.model, [self._resize(image).astype(np.float32)])[0][1]
        return np.clip(resize(prob, image.shape, order=1, preserve_range=True), 0.0, 1.0).astype(np.float32)

    def segment(self, image) -> ContourResult:
        """The contour of one image."""
        if self.cost == "hand":
            return segment_body(image, **self.search)
        image = as_image(image, "image")
        prob = body_prior(self.probability(image))
        centre = largest_component_centre(prob > 0.5)
        if centre is None:
            centre = ((image.shape[0] - 1) / 2.0, (image.shape[1] - 1) / 2.0)
        s = self.search
        polar, angles, radii = polar_unwrap(prob, centre, n_angles=s["n_angles"], radial_step=s["radial_step"])
        cost = region_cost(polar, radii)
        step_index = int(np.floor(s["max_step"] / s["radial_step"] + 1e-9))
        path = optimal_closed_path(cost, step_index, smoothness=s["smoothness"])
        r = radii[path] + 0.5 * s["radial_step"]
        mask = contour_mask(image.shape, centre, angles, r)
        return ContourResult(mask=mask, centre=(float(centre[0]), float(centre[1])), angles=angles, radii=r,
                             max_step=step_index * s["radial_step"], meta={"cost": "region"})

    def config(self) -> dict[str, Any]:
        return {"cost": self.cost, **({"train": self.train_config} if self.cost == "learned" else {}),
                "search": dict(self.search)}

