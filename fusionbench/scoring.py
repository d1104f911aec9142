"""Scoring one case: every fusion metric of a fused image, every registration metric of a warp.

Shared by the harness (:mod:`fusionbench.runner`) and ``fusionbench score``. Metrics come from
:mod:`fusionbench.metrics`; this module only decides what is compared with what:

- fusion metrics: ``fusion_suite(a=registered PAT, b=MRI, f=fused)`` (the fused image is judged
  against the sources it was made from, i.e. after registration);
- registration metrics: MI, NMI and NCC between the registered PAT and the MRI (paper Table 1),
  and, where the case has ground truth, the endpoint error of the flow against the true flow inside
  the MRI body mask (labels > 0) in pixels, the Dice of the warped PAT labels against the MRI labels
  (percent) and the share of folded pixels (non-positive Jacobian determinant) inside that mask.

Each metric is timed on its own, so the ``seconds`` column of the results says what a metric costs
(except on the GPU path, which computes all fusion metrics in one call; see :func:`score_fusion`).
"""
from __future__ import annotations

from time import perf_counter
from typing import Any, Sequence

import numpy as np

from .data.io import as_image, check_same_shape

__all__ = ["FUSION_METRICS", "REGISTRATION_METRICS", "GROUND_TRUTH_METRICS", "MetricRow", "fusion_columns",
           "score_fusion", "score_registration", "score_triplet"]

#: The fusion metrics in the column order of the paper's Table 2, then the extra ones.
FUSION_METRICS = ("MI", "VIF", "Qabf", "SF", "SSIM", "FMI_pixel", "FMI_dct", "FMI_w",
                  "EN", "SD", "AG", "PSNR")
#: The image-similarity columns of the paper's Table 1.
REGISTRATION_METRICS = ("MI", "NMI", "NCC")
#: Ground-truth columns (phantom data only): (name, higher is better).
GROUND_TRUTH_METRICS = (("EPE_mean", False), ("EPE_p95", False), ("Dice", True), ("Folding", False))

MetricRow = dict  # {"group": str, "metric": str, "value": float, "seconds": float}


def _row(group: str, metric: str, value: float, seconds: float) -> MetricRow:
    return {"group": group, "metric": metric, "value": float(value), "seconds": float(seconds)}


def score_fusion(pat: np.ndarray, mri: np.ndarray, fused: np.ndarray, *, convention: str = "paper",
                 metrics: Sequence[str] | None = None, device: str | None = None,
                 backend: str = "auto") -> list[MetricRow]:
    """One ``group="fusion"`` row per metric of ``fusion_suite``, each timed separately.

    Parameters
    ----------
    pat, mri : (H, W) array
        The sources as the fusion method saw them (PAT already registered to the MRI).
    fused : (H, W) array
        The fused image.
    convention : str
        Passed to :func:`fusionbench.metrics.fusion.fusion_suite` (``"paper"`` reproduces the
        seed paper's Table 2 conventions).
    metrics : sequence of str, optional
        Subset of metric names; default all of :data:`FUSION_METRICS` the suite provides.
    device : str, optional
        The run's device as :func:`fusionbench.runner.resolve_device` gives it (``"cpu"``,
        ``"cuda"``, ``"cuda:N"``); None counts as the CPU.
    backend : {"auto", "numpy", "torch"}
        ``"auto"``: on a CUDA ``device`` with the ``paper`` convention, the batched torch path
        (:func:`fusionbench.metrics.torch.fusion_suite_batch`, equal to numpy to ~1e-12) computes
        every metric on the GPU; otherwise the numpy core, as always. ``"numpy"`` and ``"torch"``
        force a path (``"torch"`` runs on ``device``, the CPU for None, and needs ``paper``).
    """
    from .metrics.fusion import fusion_suite

    metrics = list(metrics) if metrics else fusion_columns(convention)
    pat, mri, fused = as_image(pat, "pat"), as_image(mri, "mri"), as_image(fused, "fused")
    check_same_shape(pat=pat, mri=mri, fused=fused)
    if _use_torch(backend, convention, device):
        return _score_fusion_torch(pat, mri, fused, convention, metrics, device)
    rows = []
    for name in metrics:
        t0 = perf_counter()
        value = fusion_suite(pat, mri, fused, convention=convention, metrics=[name])[name]
        rows.append(_row("fusion", name, value, perf_counter() - t0))
    return rows


def _use_torch(backend: str, convention: str, device: str | None) -> bool:
    if backend not in ("auto", "numpy", "torch"):
        raise ValueError(f"score_fusion: backend must be 'auto', 'numpy' or 'torch', got {backend!r}")
    if backend == "auto":
        return convention == "paper" and device is not None and str(device).lower().startswith("cuda")
    return backend == "torch"


def _score_fusion_torch(pat, mri, fused, convention: str, metrics: list[str], device) -> list[MetricRow]:
    """The rows of :func:`score_fusion` from one batched torch call (a batch of one triplet)."""
    from .metrics.torch import fusion_suite_batch  # imports torch: only on this path

    t0 = perf_counter()
    batch = fusion_suite_batch(pat, mri, fused, convention=convention, metrics=metrics, device=device)
    values = {name.lower(): float(value[0]) for name, value in batch.items()}  # float() waits for the GPU
    # One call computes every metric, so its time is split evenly over the rows: per-metric costs
    # are not measured on this path.
    seconds = (perf_counter() - t0) / len(metrics)
    return [_row("fusion", name, values[name.lower()], seconds) for name in metrics]


def fusion_columns(convention: str = "paper", metrics: Sequence[str] | None = None) -> list[str]:
    """The fusion metric names ``convention`` defines, in table order, or ``metrics`` canonicalised.

    Raises ``ValueError`` naming an unknown metric.
    """
    from .metrics.fusion import SUITE_COLUMNS, suite_columns

    if metrics:
        by_lower = {c.lower(): c for c in SUITE_COLUMNS}
        unknown = [m for m in metrics if m.lower() not in by_lower]
        if unknown:
            raise ValueError(f"unknown fusion metric(s) {', '.join(unknown)}; expected some of "
                             f"{', '.join(SUITE_COLUMNS)}")
        return [by_lower[m.lower()] for m in metrics]
    return list(suite_columns(convention))


def _timed(fn, *args, **kwargs) -> tuple[Any, float]:
    t0 = perf_counter()
    out = fn(*args, **kwargs)
    return out, perf_counter() - t0


def score_registration(registered: np.ndarray, mri: np.ndarray, flow: np.ndarray | None = None, *,
                       flow_true: np.ndarray | None = None, labels_pat: np.ndarray | None = None,
                       labels_mri: np.ndarray | None = None, roi: np.ndarray | None = None) -> list[MetricRow]:
    """``group="registration"`` rows: MI, NMI, NCC, and the ground-truth errors that apply.

    Parameters
    ----------
    registered : (H, W) array
        The PAT image warped into MRI space (or the unregistered PAT for the identity).
    mri : (H, W) array
        The fixed image.
    flow : (2, H, W) array, optional
        The displacement the registration found (``warp(pat, flow) == registered``); zero if None.
    flow_true : (2, H, W) array, optional
        The true displacement; gives ``EPE_mean``/``EPE_p95`` (pixels, inside ``labels_mri > 0``
        when labels are given, else inside ``roi``, else everywhere) and ``Folding`` (fraction,
        same mask).
    labels_pat, labels_mri : (H, W) int arrays, optional
        Organ labels in PAT and MRI space; give ``Dice`` (percent, mean over organs) of the PAT
        labels warped by ``flow`` against the MRI labels.
    """
    from .metrics import registration as reg

    registered, mri = as_image(registered, "registered"), as_image(mri, "mri")
    check_same_shape(registered=registered, mri=mri)
    if flow is None:
        flow = np.zeros((2, *mri.shape), dtype=np.float32)
    rows = []
    for name, fn in (("MI", reg.mi), ("NMI", reg.nmi), ("NCC", reg.ncc)):
        value, sec = _timed(fn, registered, mri)
        rows.append(_row("registration", name, value, sec))
    mask = labels_mri > 0 if labels_mri is not None else roi
    if flow_true is not None:
        epe, sec = _timed(reg.endpoint_error, flow, flow_true, mask=mask)
        rows.append(_row("registration", "EPE_mean", epe["mean"], sec))
        rows.append(_row("registration", "EPE_p95", epe["p95"], 0.0))
        value, sec = _timed(reg.folding_fraction, flow, mask=mask)
        rows.append(_row("registration", "Folding", value, sec))
    if labels_pat is not None and labels_mri is not None:
        dice, sec = _timed(reg.warped_label_dice, labels_pat, labels_mri, flow)
        rows.append(_row("registration", "Dice", dice["mean"], sec))
    return rows


def score_triplet(pat: np.ndarray, mri: np.ndarray, fused: np.ndarray, *, convention: str = "paper",
                  flow_true: np.ndarray | None = None, labels_pat: np.ndarray | None = None,
                  labels_mri: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """Every fusion metric of ``fused`` and every registration metric between ``pat`` and ``mri``.

    The registration metrics describe the pair as given (no flow), so with ``flow_true`` the
    endpoint error is the residual misalignment of the pair. Returns
    ``{"fusion": {name: value}, "registration": {name: value}}``.
    """
    fusion_rows = score_fusion(pat, mri, fused, convention=convention)
    reg_rows = score_registration(pat, mri, None, flow_true=flow_true, labels_pat=labels_pat,
                                  labels_mri=labels_mri)
    return {"fusion": {r["metric"]: r["value"] for r in fusion_rows},
            "registration": {r["metric"]: r["value"] for r in reg_rows}}
