"""What a PAMRFuse+ training run shows: the running losses while it trains and the loss curves.

:class:`TrainingProgress` draws a rich progress bar per epoch with the step's losses (plain lines in
a log file); :func:`save_loss_curves` writes the per-epoch means as one panel per loss term.
"""
from __future__ import annotations

import io
import math
from pathlib import Path

from fusionbench.data.io import atomic_write_bytes

__all__ = ["TrainingProgress", "save_loss_curves"]


class TrainingProgress:
    """A rich progress bar with the running losses (plain text lines when not a terminal)."""

    def __init__(self, epochs: int, enabled: bool = True):
        self.bar = None
        if enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                                TimeRemainingColumn(), TextColumn("{task.fields[losses]}"), transient=False)
            self.bar.start()
            self.task = None
        self.epochs = epochs
        self._epoch = -1

    def update(self, epoch, stage, step, steps, log):
        if self.bar is None:
            return
        if epoch != self._epoch:
            if self.task is not None:
                self.bar.update(self.task, completed=steps)
            self.task = self.bar.add_task(f"epoch {epoch + 1}/{self.epochs} (stage {stage})", total=steps,
                                          losses="")
            self._epoch = epoch
        self.bar.update(self.task, completed=step, losses=" ".join(f"{k} {v:.4g}" for k, v in log.items()))
        if not self.bar.console.is_terminal and (step % 10 == 0 or step == steps):
            # A log file gets plain lines (rich only draws the bar on a terminal).
            print(f"epoch {epoch + 1}/{self.epochs} (stage {stage}) step {step}/{steps} "
                  + " ".join(f"{k} {v:.4g}" for k, v in log.items()), flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.stop()


def save_loss_curves(history: list[dict[str, float]], path: Path) -> None:
    """One panel per loss term, epoch on x; the stage boundary as a dashed line."""
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({k for h in history for k in h} - {"epoch", "stage"})
    cols = min(4, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    boundary = [h["epoch"] for h in history if h["stage"] == 1]
    for ax, key in zip(axes.flat, keys):
        pts = [(h["epoch"], h[key]) for h in history if key in h]
        ax.plot(*zip(*pts), marker=".")
        if boundary:
            ax.axvline(max(boundary) + 0.5, ls="--", c="grey", lw=0.8)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
