"""Task-driven evaluation: body-contour and multi-organ segmentation per image source (paper §4.3).

The CLI finds the tasks through the ``fusionbench.tasks`` entry-point group::

    [project.entry-points."fusionbench.tasks"]
    contour = "segment:contour_task"
    organs = "segment:organs_task"

Each object is a :class:`SegmentationTask` with a ``name`` and ``run(run_dir, *, preset="quick",
jobs=None, scheduler=None, log=None)``; several tasks of one run are best run together with
:func:`segment.task.run_tasks`, which trains each source's models once.
Importing this package is cheap: torch and MONAI load only when a task runs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["SegmentationTask", "contour_task", "organs_task", "register_tasks", "run_tasks"]


@dataclass(frozen=True)
class SegmentationTask:
    """One task of the ``fusionbench.tasks`` group."""

    name: str
    description: str

    def run(self, run_dir, *, preset: str = "quick", jobs: int | None = None, scheduler: str | None = None,
            log=None, methods=None) -> dict[str, Any]:
        from .task import run_tasks

        return run_tasks(run_dir, tasks=(self.name,), preset=preset, jobs=jobs, scheduler=scheduler, log=log,
                         methods=methods)


contour_task = SegmentationTask("contour", "Body-contour segmentation by polar graph search (Table 3)")
organs_task = SegmentationTask("organs", "Multi-organ segmentation trained per image source (Table 4)")


def register_tasks() -> dict[str, SegmentationTask]:
    """The tasks this package provides, by name."""
    return {t.name: t for t in (contour_task, organs_task)}


def run_tasks(*args, **kwargs):
    """See :func:`segment.task.run_tasks`."""
    from .task import run_tasks as _run_tasks

    return _run_tasks(*args, **kwargs)
