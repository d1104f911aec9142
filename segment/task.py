"""Task-driven evaluation of a harness run: body contour (Table 3) and organs (Table 4).

``run_tasks(RUN)`` reads a run written by :mod:`fusionbench.runner` (``RUN/run.json`` names the
dataset, the fusion methods and the shared registration; ``RUN/fused/METHOD/CASE.png`` holds the
fused test images) and evaluates every *image source*:

* ``PAT``: the raw PAT image, scored in its own frame against ``labels_pat`` (PAT alone is what a
  PAT-only study would segment; warping it would mix registration error into the PAT row);
* ``MRI``: the MRI image against ``labels_mri``, when the dataset has MRI images;
* each fusion method: its fused image, which lives in MRI space, against ``labels_mri``.

On a PAT-only dataset (cases with ``mri=None``, e.g. a ``fusionbench data import coco`` folder run
with ``fusionbench run --methods none``) the only source is ``PAT``, and only ``labels_pat`` is
needed. Train cases without the label maps their sources need are left out of training (said in
the log); a test case without them is an error naming it.

Training data per source (the paper trains one model per source, §4.3): the dataset's **train
split**, rendered the way the test images were, i.e. for a method the train pairs are registered
with the run's registration method and fused by that method (``create_method(name).fuse``; joint
methods register and fuse themselves) through :class:`fusionbench.pipeline.Pipeline`, with the
weights the run used (shipped or cached; a mismatch is an error, never a silent refit). Fused training images are cached under ``RUN/segment/train_images/``.

Outputs under ``RUN/segment/``:

* ``results.csv`` (and an empty ``failures.csv``): the result rows in the core's long form
  (``method, case, group, metric, value, seconds``; ``method`` is the image source, ``group`` the
  task, one row per test image and metric), assembled from ``cases/SOURCE/CASE.json``; read it
  with :func:`fusionbench.results.load_results` (:mod:`segment.report` lists the metrics);
* ``contour.{csv,tex,md}`` (Table 3) and ``organs.{csv,tex,md}`` (Table 4), made from those rows
  by :mod:`fusionbench.report.tables` for the sources and test images of the last call, and
  ``organs_significance.csv``: per organ, each fusion method against the better of PAT and MRI
  (paired Wilcoxon, Holm; :func:`segment.report.organ_significance`);
* ``overlay.png``; ``segment.json`` (tasks, preset, sources, cases, spacing, seconds);
* the organ models with their training configurations in ``organ_models/SOURCE/``, the learned
  contour costs in ``contour_models/SOURCE/`` (both reused while their settings and training
  images are the same) and the fused train images in ``train_images/METHOD/``.
"""
from __future__ import annotations

import json
from pathlib import Path
from time import perf_counter
from typing import Any, Sequence

import numpy as np

from fusionbench.data.io import atomic_write_bytes, read_image, write_image
from fusionbench.report.tables import write_table

from .contour import ContourSegmenter
from .organ_scoring import organ_rows, score_organs
from .organ_training import safe_name, train_sources
from .report import CONTOUR_GROUP, contour_table, organ_significance, organ_table, overlay_figure, write_results

__all__ = ["TASKS", "run_tasks", "source_images", "CONTOUR_PRESETS"]

TASKS = ("contour", "organs")
#: Contour cost per preset: the hand-made cost needs no training (quick); ``standard`` learns a
#: body-probability cost per source as the paper trains one contour model per source (400 steps:
#: on real PAT, 800 steps give the cross-validated figures of docs/segmentation.md).
CONTOUR_PRESETS = {"quick": {"cost": "hand"}, "standard": {"cost": "learned", "steps": 400}}


def _load_run(run_dir: Path) -> dict:
    path = run_dir / "run.json"
    try:
        return json.loads(path.read_text())
    except OSError:
        raise FileNotFoundError(f"{run_dir}: not a fusionbench run (no run.json); run `fusionbench run` first") from None


def _run_method(record: dict, name: str, cases):
    """The method as the run used it: same settings, same weights (shipped, cached or fitted)."""
    from fusionbench.runner import config_fingerprint, fit_method, method_identity

    method, state = fit_method(name, record["dataset"], device=record.get("device", "cpu"),
                               settings=record.get("method_settings", {}).get(name), train_cases=cases,
                               allow_fit=False)
    used = record.get("method_configs", {}).get(name)
    if used is not None and config_fingerprint(method_identity(method)) != config_fingerprint(used):
        raise ValueError(f"{name}: its configuration or weights differ from those of the run's test images "
                         f"({state} weights now); rerun `fusionbench run` first")
    return method


def _fused_train_images(run_dir: Path, record: dict, method: str, cases, log=None) -> list[np.ndarray]:
    """The train split through the run's pipeline (its registration, then ``method``), cached as PNG."""
    from fusionbench.methods import IDENTITY, load_plugins
    from fusionbench.pipeline import Pipeline
    from fusionbench.runner import config_fingerprint

    load_plugins()
    folder = run_dir / "segment" / "train_images" / method
    paths = [folder / f"{c.id}.png" for c in cases]
    registration = record.get("registration", IDENTITY)
    # Valid only for the method configuration (weights included) and registration of the run's
    # test images: a rerun with new weights must not segment stale train fusions.
    configs = record.get("method_configs", {})
    fingerprint = config_fingerprint(configs.get(method), configs.get(registration))
    stamp = folder / "fingerprint.txt"
    if all(p.exists() for p in paths) and stamp.exists() and stamp.read_text().strip() == fingerprint:
        return [read_image(p) for p in paths]
    pipeline = Pipeline(_run_method(record, method, cases), _run_method(record, registration, cases))
    if log:
        log(f"fusing {len(cases)} train pairs with {method}")
    out = []
    for case, path in zip(cases, paths):
        write_image(path, pipeline.run(case.pat, case.mri)["fused"])
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


def _needed_labels(sources: Sequence[str]) -> list[str]:
    """The label maps the sources are scored against: PAT in its own frame, the others in MRI space."""
    return ["labels_pat"] + (["labels_mri"] if any(s != "PAT" for s in sources) else [])


def _spacing(cases) -> tuple[float, str]:
    px = {c.meta.get("px_mm") for c in cases}
    if len(px) == 1 and None not in px:
        return float(px.pop()), "mm"
    return 1.0, "px"


def _contour_rows(source, segmenter, images, refs, cases, spacing) -> tuple[list[dict], list]:
    """Result rows (group ``contour``) of one source's test images, and the segmentations."""
    from fusionbench.metrics.segmentation import dsc, hausdorff, iou, msd

    metrics = (("dsc", dsc, {}), ("iou", iou, {}), ("hausdorff", hausdorff, {"spacing": spacing}),
               ("msd", msd, {"spacing": spacing}))
    rows, results = [], []
    for img, ref, case in zip(images, refs, cases):
        res = segmenter.segment(img)
        body = np.asarray(ref) > 0
        for name, fn, kwargs in metrics:
            t0 = perf_counter()
            value = fn(res.mask, body, **kwargs)
            rows.append({"method": source, "case": case.id, "group": CONTOUR_GROUP, "metric": name,
                         "value": value, "seconds": perf_counter() - t0})
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
        ``{"sources": [...], "paths": [...], "seconds": {...}, "results": DataFrame, "contour": Table | None,
        "organs": Table | None}``: ``results`` every row of ``RUN/segment/results.csv``, the tables
        :class:`fusionbench.report.tables.Table` of this call's sources and test images.
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
    needs_train = "organs" in tasks or CONTOUR_PRESETS[preset]["cost"] == "learned"
    if needs_train:  # an external folder holds test fusions only: no train split to learn from
        skipped = [m for m in run_methods if m in record.get("external", {})]
        run_methods = [m for m in run_methods if m not in skipped]
        if skipped and log:
            log(f"left out of the trained tasks (external folders hold no train fusions): {', '.join(skipped)}")
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
    has_mri = all(c.has_mri for c in test_cases)
    if run_methods and not has_mri:
        raise ValueError(f"{run_dir}: the run has fused images ({', '.join(run_methods)}) but its dataset "
                         f"{record['dataset']} has no MRI images")
    sources = ["PAT", *(["MRI"] if has_mri else []), *run_methods]
    needed = _needed_labels(sources)
    unlabelled = [c.id for c in test_cases if any(getattr(c, k) is None for k in needed)]
    if unlabelled:
        raise ValueError(f"the segmentation tasks need label maps ({' and '.join(needed)}) on every test case; "
                         f"{len(unlabelled)} of {len(test_cases)} lack them, e.g. {unlabelled[0]!r}")
    out_dir = run_dir / "segment"
    out_dir.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    spacing, unit = _spacing(test_cases)
    test = source_images(run_dir, record, test_cases, "test", sources)
    train = None
    if needs_train:
        t0 = perf_counter()
        train_cases = load_dataset(record["dataset"], split="train")
        labelled = [c for c in train_cases if all(getattr(c, k) is not None for k in needed)]
        if not labelled:
            raise ValueError(f"dataset {record['dataset']}: no train case has the label maps "
                             f"({' and '.join(needed)}) the trained tasks learn from")
        if len(labelled) < len(train_cases) and log:
            log(f"left out of training: {len(train_cases) - len(labelled)} of {len(train_cases)} train cases "
                f"without {' or '.join(needed)}")
        train_cases = labelled
        train = source_images(run_dir, record, train_cases, "train", sources, log)
        seconds["train_images"] = perf_counter() - t0
    paths, result = [], {"sources": sources, "contour": None, "organs": None}
    contour_results, organ_preds, rows = {}, {}, []

    if "contour" in tasks:
        t0 = perf_counter()
        for source in sources:
            seg = ContourSegmenter(**CONTOUR_PRESETS[preset])
            if seg.cost == "learned":
                # One model per source, kept like the organ models: an interrupted or repeated
                # evaluation trains only what it has not trained on these images yet.
                folder = out_dir / "contour_models" / safe_name(source)
                digest = ContourSegmenter.training_hash(*train[source])
                saved = ContourSegmenter.load(folder, expect=seg, train_hash=digest)
                if saved is not None:
                    seg = saved
                else:
                    if log:
                        log(f"training the body-contour cost of {source}")
                    seg.fit(*train[source])
                    seg.save(folder, digest)
            r, contour_results[source] = _contour_rows(source, seg, *test[source], test_cases, spacing)
            rows += r
        seconds["contour"] = perf_counter() - t0

    if "organs" in tasks:
        t0 = perf_counter()
        models = train_sources(train, out_dir / "organ_models", preset, jobs=jobs, scheduler=scheduler, log=log,
                               **(train_overrides or {}))
        seconds["organ_training"] = perf_counter() - t0
        for source in sources:
            images, refs = test[source]
            organ_preds[source] = models[source].predict(images)
            rows += organ_rows(source, score_organs(organ_preds[source], refs, case_ids=[c.id for c in test_cases]))
        seconds["organs"] = perf_counter() - t0

    results = write_results(out_dir, rows)
    paths.append(out_dir / "results.csv")
    case_ids = [c.id for c in test_cases]
    if "contour" in tasks:
        result["contour"] = contour_table(results, sources, unit, cases=case_ids)
        paths += write_table(result["contour"], out_dir, "contour")
    if "organs" in tasks:
        result["organs"] = organ_table(results, sources, cases=case_ids)
        paths += write_table(result["organs"], out_dir, "organs")
        result["organs_significance"] = organ_significance(results, sources, cases=case_ids)
        significance_path = out_dir / "organs_significance.csv"
        atomic_write_bytes(significance_path, result["organs_significance"].to_csv(index=False).encode())
        paths.append(significance_path)

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
    result["results"] = results
    result["paths"] = paths
    result["seconds"] = seconds
    return result
