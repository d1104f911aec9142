"""Task-driven evaluation of a harness run: body contour (Table 3) and organs (Table 4).

``run_tasks(RUN)`` reads a run written by :mod:`fusionbench.runner` (``RUN/run.json`` names the
dataset, the fusion methods and the shared registration; ``RUN/fused/METHOD/CASE.png`` holds the
fused test images) and evaluates every *image source*:

* ``PAT``: the raw PAT image, scored in its own frame against ``labels_pat`` (PAT alone is what a
  PAT-only study would segment; warping it would mix registration error into the PAT row);
* ``MRI``: the MRI image against ``labels_mri``;
* each fusion method: its fused image, which lives in MRI space, against ``labels_mri``.

Training data per source (the paper trains one model per source, §4.3): the dataset's **train
split**, rendered the way the test images were, i.e. for a method the train pairs are registered
with the run's registration method and fused by that method (``create_method(name).fuse``; joint
methods register and fuse themselves), with the fitted instances taken from the harness's fit
cache. Fused training images are cached under ``RUN/segment/train_images/``.

Outputs under ``RUN/segment/``: ``contour.{csv,tex,md}``, ``contour_rows.csv`` (per case),
``organs.{csv,tex,md}``, ``organ_instances.csv``, ``organ_rows.csv``, ``overlay.png``, and the organ
models with their training configurations in ``organ_models/SOURCE/``.
"""
from __future__ import annotations

import json
from pathlib import Path
from time import perf_counter
from typing import Any, Sequence

import numpy as np
import pandas as pd

from fusionbench.data.io import atomic_write_bytes, read_image, write_image

from .contour import ContourSegmenter
from .organ_scoring import organ_table, score_organs
from .organ_training import train_sources
from .report import overlay_figure, write_contour_tables, write_organ_tables

__all__ = ["TASKS", "run_tasks", "source_images", "CONTOUR_PRESETS"]

TASKS = ("contour", "organs")
#: Contour cost per preset: the hand-made cost needs no training (quick); ``standard`` learns a
#: body-probability cost per source as the paper trains one contour model per source.
CONTOUR_PRESETS = {"quick": {"cost": "hand"}, "standard": {"cost": "learned", "epochs": 8}}


def _load_run(run_dir: Path) -> dict:
    path = run_dir / "run.json"
    try:
        return json.loads(path.read_text())
    except OSError:
        raise FileNotFoundError(f"{run_dir}: not a fusionbench run (no run.json); run `fusionbench run` first") from None


def _fit_cache(run_dir: Path) -> Path:
    from fusionbench.runner import fit_cache_root  # the runs' cache: fitted methods are reused

    return fit_cache_root()


def _fused_train_images(run_dir: Path, record: dict, method: str, cases, log=None) -> list[np.ndarray]:
    """The train split fused by ``method`` after the run's registration, cached as PNG."""
    from fusionbench.methods import get_method_info, load_plugins
    from fusionbench.runner import config_fingerprint, fit_method

    load_plugins()
    folder = run_dir / "segment" / "train_images" / method
    paths = [folder / f"{c.id}.png" for c in cases]
    # Valid only for the method configuration (weights included) and registration of the run's
    # test images: a rerun with new weights must not segment stale train fusions.
    configs = record.get("method_configs", {})
    fingerprint = config_fingerprint(configs.get(method), configs.get(record.get("registration", "identity")))
    stamp = folder / "fingerprint.txt"
    if all(p.exists() for p in paths) and stamp.exists() and stamp.read_text().strip() == fingerprint:
        return [read_image(p) for p in paths]
    dataset, cache = record["dataset"], _fit_cache(run_dir)
    device = record.get("device", "cpu")
    settings = record.get("method_settings", {})  # the run's --set, so the same methods fuse
    fuser = fit_method(method, dataset, cache_dir=cache, device=device, train_cases=cases,
                       settings=settings.get(method))
    info = get_method_info(method)
    registration = record.get("registration", "identity")
    registrar = None
    if info.needs_alignment and registration != "identity":
        registrar = fit_method(registration, dataset, cache_dir=cache, device=device, train_cases=cases,
                               settings=settings.get(registration))
    if log:
        log(f"fusing {len(cases)} train pairs with {method}")
    out = []
    for case, path in zip(cases, paths):
        pat = case.pat
        if not info.needs_alignment:
            pat, _ = fuser.register(case.pat, case.mri)
        elif registrar is not None:
            pat, _ = registrar.register(case.pat, case.mri)
        fused = np.clip(np.asarray(fuser.fuse(pat, case.mri), dtype=np.float32), 0.0, 1.0)
        write_image(path, fused)
        out.append(read_image(path))  # the 8-bit round trip the test images went through
    atomic_write_bytes(stamp, fingerprint.encode())
    return out


def source_images(run_dir: Path, record: dict, split_cases, split: str, sources: Sequence[str], log=None
                  ) -> dict[str, tuple[list[np.ndarray], list[np.ndarray]]]:
    """(images, reference label maps) of each source for one split (see the module docstring)."""
    data = {}
    for source in sources:
        if source == "PAT":
            data[source] = ([c.pat for c in split_cases], [c.labels_pat for c in split_cases])
        elif source == "MRI":
            data[source] = ([c.mri for c in split_cases], [c.labels_mri for c in split_cases])
        elif split == "test":
            data[source] = ([read_image(run_dir / "fused" / source / f"{c.id}.png") for c in split_cases],
                            [c.labels_mri for c in split_cases])
        else:
            data[source] = (_fused_train_images(run_dir, record, source, split_cases, log),
                            [c.labels_mri for c in split_cases])
    return data


def _spacing(cases) -> tuple[float, str]:
    px = {c.meta.get("px_mm") for c in cases}
    if len(px) == 1 and None not in px:
        return float(px.pop()), "mm"
    return 1.0, "px"


def _contour_rows(source, segmenter, images, refs, cases, spacing) -> tuple[list[dict], list]:
    from fusionbench.metrics.segmentation import dsc, hausdorff, iou, msd

    rows, results = [], []
    for img, ref, case in zip(images, refs, cases):
        res = segmenter.segment(img)
        body = np.asarray(ref) > 0
        for name, fn in (("dsc", dsc), ("iou", iou)):
            rows.append({"source": source, "case": case.id, "metric": name, "value": fn(res.mask, body)})
        for name, fn in (("hausdorff", hausdorff), ("msd", msd)):
            rows.append({"source": source, "case": case.id, "metric": name,
                         "value": fn(res.mask, body, spacing=spacing)})
        results.append(res)
    return rows, results


def run_tasks(run_dir, tasks: Sequence[str] = TASKS, preset: str = "quick", jobs: int | None = None, *,
              scheduler: str | None = None, methods: Sequence[str] | None = None, figure_cases: int = 3,
              train_overrides: dict | None = None, log=None) -> dict[str, Any]:
    """Evaluate a run's fused images on the segmentation tasks; write tables and a figure.

    Parameters
    ----------
    run_dir : path
        A folder written by ``fusionbench run``.
    tasks : sequence of {"contour", "organs"}
    preset : {"quick", "standard"}
        Organ-model budget (:data:`segment.organ_model.PRESETS`) and contour cost
        (:data:`CONTOUR_PRESETS`).
    jobs : int, optional
        Parallel training processes for the organ models (default: the available cores).
    scheduler : str, optional
        Dask scheduler address for the organ training.
    methods : sequence of str, optional
        Subset of the run's methods (default: every method with fused images).
    train_overrides : dict, optional
        Changes to the organ preset (``epochs``, ``size``, ...), the same for every source.

    Returns
    -------
    dict
        ``{"sources": [...], "paths": [...], "seconds": {...}, "contour": DataFrame | None,
        "organs": DataFrame | None}``.
    """
    from fusionbench.data.datasets import load_dataset

    run_dir = Path(run_dir)
    tasks = [t.strip().lower() for t in tasks if t.strip()]
    unknown = set(tasks) - set(TASKS)
    if unknown or not tasks:
        raise ValueError(f"unknown task(s) {sorted(unknown)}; expected some of {', '.join(TASKS)}")
    if preset not in CONTOUR_PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {', '.join(CONTOUR_PRESETS)}")
    record = _load_run(run_dir)
    run_methods = [m for m in record.get("methods", []) if (run_dir / "fused" / m).is_dir()]
    if methods is not None:
        missing = sorted(set(methods) - set(run_methods))
        if missing:
            raise ValueError(f"method(s) {missing} have no fused images in {run_dir}")
        run_methods = [m for m in run_methods if m in methods]
    test_ids = record.get("cases")
    test_cases = load_dataset(record["dataset"], split="test")
    if test_ids:
        wanted = set(test_ids)
        test_cases = [c for c in test_cases if c.id in wanted]
    test_cases = [c for c in test_cases if all((run_dir / "fused" / m / f"{c.id}.png").exists() for m in run_methods)]
    if not test_cases:
        raise ValueError(f"{run_dir}: no test case has fused images for every method")
    if any(c.labels_mri is None or c.labels_pat is None for c in test_cases):
        raise ValueError("the segmentation tasks need label maps (labels_mri and labels_pat) on the test cases")
    sources = ["PAT", "MRI", *run_methods]
    out_dir = run_dir / "segment"
    out_dir.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    spacing, unit = _spacing(test_cases)
    test = source_images(run_dir, record, test_cases, "test", sources)
    needs_train = "organs" in tasks or CONTOUR_PRESETS[preset]["cost"] == "learned"
    train = None
    if needs_train:
        t0 = perf_counter()
        train_cases = load_dataset(record["dataset"], split="train")
        train = source_images(run_dir, record, train_cases, "train", sources, log)
        seconds["train_images"] = perf_counter() - t0
    paths, result = [], {"sources": sources, "contour": None, "organs": None}
    contour_results, organ_preds = {}, {}

    if "contour" in tasks:
        t0 = perf_counter()
        rows = []
        for source in sources:
            seg = ContourSegmenter(**CONTOUR_PRESETS[preset])
            if seg.cost == "learned":
                seg.fit(*train[source])
            r, contour_results[source] = _contour_rows(source, seg, *test[source], test_cases, spacing)
            rows += r
        frame = pd.DataFrame(rows)
        atomic_write_bytes(out_dir / "contour_rows.csv", frame.to_csv(index=False).encode())
        paths += write_contour_tables(frame, sources, out_dir, unit)
        result["contour"] = frame
        seconds["contour"] = perf_counter() - t0

    if "organs" in tasks:
        t0 = perf_counter()
        models = train_sources(train, out_dir / "organ_models", preset, jobs=jobs, scheduler=scheduler, log=log,
                               **(train_overrides or {}))
        seconds["organ_training"] = perf_counter() - t0
        rows_by_source = {}
        for source in sources:
            images, refs = test[source]
            organ_preds[source] = models[source].predict(images)
            rows_by_source[source] = score_organs(organ_preds[source], refs, case_ids=[c.id for c in test_cases])
        dsc_frame, inst = organ_table(rows_by_source)
        all_rows = pd.DataFrame([{"source": s, **r} for s, rows in rows_by_source.items() for r in rows])
        atomic_write_bytes(out_dir / "organ_rows.csv", all_rows.to_csv(index=False).encode())
        paths += write_organ_tables(dsc_frame, inst, out_dir)
        result["organs"] = dsc_frame
        seconds["organs"] = perf_counter() - t0

    panels = []
    for case_index in range(min(figure_cases, len(test_cases))):
        for source in sources:
            images, refs = test[source]
            res = contour_results.get(source, [None] * len(test_cases))[case_index]
            preds = organ_preds.get(source)
            panels.append({"title": f"{source} {test_cases[case_index].id}", "image": images[case_index],
                           "contour": None if res is None else res.points,
                           "ref_mask": np.asarray(refs[case_index]) > 0,
                           "labels": None if preds is None else preds[case_index]})
    paths.append(overlay_figure(panels, out_dir / "overlay.png", n_cols=len(sources)))
    atomic_write_bytes(out_dir / "segment.json", (json.dumps(
        {"tasks": tasks, "preset": preset, "sources": sources, "cases": [c.id for c in test_cases],
         "spacing": spacing, "unit": unit, "seconds": seconds}, indent=1) + "\n").encode())
    result["paths"] = paths
    result["seconds"] = seconds
    return result
