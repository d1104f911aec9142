"""What a long training run needs besides its loss: a time budget, a validation curve and its trend.

A trainable method's :meth:`~fusionbench.methods.Trainable.fit` may take ``control=``, a
:class:`FitControl`. Its training loop then

* scores the method on held-out cases every ``val_every`` steps (:func:`validation_scores`: the
  ground-truth endpoint error where the cases carry true flows, else the fusion quality of the
  truly aligned pair), keeps the points with its checkpoint and draws them with the training loss
  (:func:`save_curves`);
* stops at the first checkpoint after the wall-clock budget is spent by raising
  :class:`BudgetExhausted`: nothing is lost, the same command continues from the checkpoint.

:func:`tail_trend` fits a line to the last 20 % of the validation curve; weights are shipped only
when that line shows the metric has stopped improving (:func:`fusionbench.weights.ship_weights`).
This module imports no torch: the loops that use it live in the plugins.
"""
from __future__ import annotations

import io
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["BudgetExhausted", "FitControl", "TrainingClock", "parse_budget", "validation_metric",
           "validation_scores", "validation_record", "tail_trend", "save_curves", "TAIL", "PLATEAU_TOL"]

#: The share of the training steps whose validation points decide whether a run has converged.
TAIL = 0.2
#: A run has stopped improving when the line through its tail gains less than this fraction of the
#: metric's mean over the tail's span.
PLATEAU_TOL = 0.01
#: Held-out cases scored per validation point (the first ones, so every point sees the same cases).
VAL_CASES = 8

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class BudgetExhausted(RuntimeError):
    """Training stopped at a checkpoint because the time budget is spent; rerun to continue."""

    def __init__(self, step: int, total: int, checkpoint: str | Path | None = None, unit: str = "step"):
        self.step, self.total, self.checkpoint = int(step), int(total), checkpoint
        where = f" (checkpoint {checkpoint})" if checkpoint else ""
        super().__init__(f"time budget spent at {unit} {step}/{total}{where}; run the same command again "
                         "to continue")


def parse_budget(text: str | float | int | None) -> float | None:
    """Seconds in a budget such as ``"2h"``, ``"90m"``, ``"1h30m"``, ``"45s"`` or ``3600``.

    ``None``, ``""`` and ``"none"`` mean no budget. Raises ``ValueError`` with the text otherwise.
    """
    if text is None:
        return None
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        s = text.strip().lower()
        if s in ("", "none"):
            return None
        try:
            seconds = float(s)
        except ValueError:
            parts = re.findall(r"(\d+(?:\.\d+)?)\s*([smhd])", s)
            if not parts or re.sub(r"\s+", "", "".join(n + u for n, u in parts)) != re.sub(r"\s+", "", s):
                raise ValueError(f"budget {text!r}: expected e.g. 2h, 90m, 1h30m, 45s or seconds") from None
            seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"budget {text!r}: must be a positive time")
    return seconds


@dataclass
class FitControl:
    """A training session's limits and its held-out cases.

    Parameters
    ----------
    budget : float, optional
        Wall-clock seconds this session may train (from the control's creation); ``None``: no limit.
    val_cases : sequence of Case, optional
        Held-out cases (the dataset's validation split); ``None``: no validation curve.
    val_every : int, optional
        Steps between validation points; ``None`` lets the loop choose (about 50 points per run).
    """

    budget: float | None = None
    val_cases: Sequence[Any] | None = None
    val_every: int | None = None
    started: float = field(default_factory=time.monotonic)

    def spent(self) -> bool:
        """Whether the budget is used up (never, without one)."""
        return self.budget is not None and time.monotonic() - self.started >= self.budget

    def every(self, steps: int, granularity: int = 1) -> int:
        """Steps between validation points for a run of ``steps``, a multiple of ``granularity``."""
        every = self.val_every or max(1, steps // 50)
        return max(granularity, int(math.ceil(every / granularity)) * granularity)

    def cases(self) -> list[Any]:
        return list(self.val_cases or [])[:VAL_CASES]


class TrainingClock:
    """Seconds a run has trained, summed over every session that resumed it.

    A training loop starts one from its checkpoint (:meth:`resume`; a fresh run starts at 0),
    writes :meth:`total` into each checkpoint and reports it as the fit's ``train_seconds``, so the
    weights' provenance says what the whole schedule cost, not only its last resumed part. Work
    done after the last checkpoint of an interrupted session is redone on resume and counted once.
    A checkpoint without the count gives an unknown total: :meth:`total` is then ``None``.
    """

    def __init__(self, before: float | None = 0.0):
        self.before = None if before is None else float(before)
        self.started = time.perf_counter()

    @classmethod
    def resume(cls, saved: dict | None, key: str = "train_seconds") -> "TrainingClock":
        """The clock of a run resumed from checkpoint dict ``saved`` (``None``: a fresh run)."""
        return cls(0.0) if saved is None else cls(saved.get(key))

    def total(self) -> float | None:
        if self.before is None:
            return None
        return self.before + time.perf_counter() - self.started

    def stamp(self, checkpoint: dict, key: str = "train_seconds") -> dict:
        """``checkpoint`` with the total so far under ``key`` (left out while it is unknown)."""
        total = self.total()
        return checkpoint if total is None else {**checkpoint, key: total}


def validation_metric(method) -> tuple[str, bool]:
    """``(name, higher_is_better)`` of the metric :func:`validation_scores` ranks ``method`` by.

    Methods that register (registration and joint ones) are judged by their endpoint error
    (``EPE``, pixels, lower is better); fusion methods by ``SSIM_Qabf``, the mean of the paper's
    SSIM and Qabf (higher is better).
    """
    if hasattr(method, "register"):
        return "EPE", False
    return "SSIM_Qabf", True


def _aligned_pat(case) -> np.ndarray:
    from .warp import warp

    if getattr(case, "flow_true", None) is not None:
        return warp(case.pat, case.flow_true)
    return case.pat


def validation_scores(method, cases: Sequence[Any]) -> dict[str, float]:
    """Score ``method`` on held-out ``cases``; the keys include :func:`validation_metric`'s name.

    * registration and joint methods: ``EPE``, the mean endpoint error (pixels) inside the MRI's
      labelled body against ``flow_true`` (cases without a true flow: ``NCC`` of the registered PAT
      and the MRI instead, and ``EPE`` is NaN);
    * fusion methods (and joint ones, which also fuse): ``SSIM_Qabf``, the mean of the paper's
      SSIM and Qabf of the fusion of the pair aligned by its true flow (as given without one).
    """
    from .metrics import fusion as fm
    from .metrics import registration as rm

    if not cases:
        raise ValueError("validation needs at least one held-out case")
    out: dict[str, list[float]] = {}
    for case in cases:
        if hasattr(method, "register"):
            registered, flow = method.register(case.pat, case.mri)
            if getattr(case, "flow_true", None) is not None:
                mask = case.labels_mri > 0 if getattr(case, "labels_mri", None) is not None else None
                out.setdefault("EPE", []).append(rm.endpoint_error(flow, case.flow_true, mask=mask)["mean"])
            else:
                out.setdefault("EPE", []).append(float("nan"))
                out.setdefault("NCC", []).append(rm.ncc(registered, case.mri))
        if hasattr(method, "fuse"):
            aligned = _aligned_pat(case)
            fused = method.fuse(aligned if getattr(method, "needs_alignment", True) else case.pat, case.mri)
            out.setdefault("SSIM_Qabf", []).append(0.5 * (fm.ssim(aligned, case.mri, fused)
                                                          + fm.qabf(aligned, case.mri, fused)))
    return {k: float(np.mean(v)) for k, v in out.items()}


def tail_trend(points: Sequence[Sequence[float]], higher_is_better: bool, *, total_steps: int | None = None,
               tail: float = TAIL, tol: float = PLATEAU_TOL) -> dict[str, Any]:
    """Has a validation curve stopped improving? A least-squares line through its last ``tail``.

    Parameters
    ----------
    points : sequence of (step, value)
        The validation curve.
    higher_is_better : bool
        The metric's direction.
    total_steps : int, optional
        The run's length; the tail is the points with ``step > (1 - tail) * total_steps`` (default:
        the last point's step).

    Returns
    -------
    dict
        ``slope_per_1k`` (metric units per 1000 steps), ``relative_gain`` (the line's improvement
        across the tail over the tail's mean magnitude; negative when it gets worse), ``points``
        (how many were fitted) and ``plateaued`` (``relative_gain < tol``; ``None`` with fewer than
        3 points in the tail).
    """
    pts = np.asarray([(float(s), float(v)) for s, v in points if math.isfinite(float(v))], dtype=np.float64)
    if pts.size == 0:
        return {"slope_per_1k": None, "relative_gain": None, "points": 0, "plateaued": None, "tail": tail}
    end = float(total_steps) if total_steps else float(pts[-1, 0])
    sel = pts[pts[:, 0] > (1.0 - tail) * end]
    if len(sel) < 3 or np.ptp(sel[:, 0]) == 0:
        return {"slope_per_1k": None, "relative_gain": None, "points": int(len(sel)), "plateaued": None,
                "tail": tail}
    slope = float(np.polyfit(sel[:, 0], sel[:, 1], 1)[0])
    gain = slope * float(np.ptp(sel[:, 0])) * (1.0 if higher_is_better else -1.0)
    scale = max(float(np.mean(np.abs(sel[:, 1]))), 1e-12)
    relative = gain / scale
    return {"slope_per_1k": slope * 1000.0, "relative_gain": relative, "points": int(len(sel)),
            "plateaued": bool(relative < tol), "tail": tail}


def validation_record(method, points: Sequence[Sequence[float]], total_steps: int, n_cases: int) -> dict[str, Any]:
    """The provenance entry of a validation curve: metric, direction, cases, points and tail trend."""
    metric, higher = validation_metric(method)
    pts = [[int(s), float(v)] for s, v in points]
    return {"metric": metric, "higher_is_better": higher, "cases": int(n_cases), "points": pts,
            "trend": tail_trend(pts, higher, total_steps=total_steps)}


def save_curves(path: str | Path, train: Sequence[float], val: Sequence[Sequence[float]] = (), *,
                metric: str = "", title: str = "", total_steps: int | None = None) -> None:
    """A PNG of the training loss (per step, with a running mean) and the validation curve, its tail
    shaded and its trend in the panel's title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .data.io import atomic_write_bytes

    panels = 2 if len(val) else 1
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.0), squeeze=False)
    ax = axes[0, 0]
    y = np.asarray(train, dtype=np.float64)
    if y.size:
        x = np.arange(1, y.size + 1)
        ax.plot(x, y, lw=0.4, alpha=0.35, c="C0")
        w = max(1, y.size // 50)
        if w > 1:
            ax.plot(x[w - 1:], np.convolve(y, np.ones(w) / w, mode="valid"), c="C0", lw=1.2)
    ax.set_xlabel("step", fontsize=8)
    ax.set_title("training loss", fontsize=9)
    if len(val):
        pts = np.asarray(val, dtype=np.float64)
        ax = axes[0, 1]
        ax.plot(pts[:, 0], pts[:, 1], marker=".", c="C1")
        end = float(total_steps or pts[-1, 0])
        ax.axvspan((1 - TAIL) * end, end, color="grey", alpha=0.12, lw=0)
        ax.set_xlabel("step", fontsize=8)
        ax.set_title(f"validation {metric}", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())
