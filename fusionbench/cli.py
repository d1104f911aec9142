"""The ``fusionbench`` command line (DESIGN §6).

Errors in what the user passed (unknown method, unreadable image, incompatible ``--resume``) print
one line and exit with status 2; ``run`` exits with 1 only when every fusion method failed.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Registration and fusion benchmark for unaligned PAT/MRI images.")
console = Console()
err_console = Console(stderr=True)


def _fail(message: str, code: int = 2) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _setting_value(text: str):
    """A ``--set`` value: JSON where it parses (numbers, true/false, lists), else the text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _method_settings(items: list[str], *, per_method: bool) -> dict:
    """``--set`` items, ``KEY=VALUE`` or (``per_method``) ``METHOD.KEY=VALUE``, as settings."""
    settings: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        method, dot, name = key.rpartition(".") if per_method else ("", "", key)
        if not sep or not name.strip() or (per_method and not (dot and method.strip())):
            form = "METHOD.KEY=VALUE" if per_method else "KEY=VALUE"
            _fail(f"--set {item!r}: expected {form}")
        target = settings.setdefault(method.strip().lower(), {}) if per_method else settings
        target[name.strip()] = _setting_value(value)
    return settings


class _RichProgress:
    """One progress bar per method, coloured by its state."""

    def __init__(self, progress):
        self._progress = progress
        self._tasks: dict[str, int] = {}
        self._failed: dict[str, int] = {}

    def add(self, key: str, total: int, done: int = 0) -> None:
        self._failed[key] = 0
        self._tasks[key] = self._progress.add_task(key, total=total, completed=done, status="")

    def advance(self, key: str, ok: bool) -> None:
        if not ok:
            self._failed[key] += 1
        failed = self._failed[key]
        self._progress.update(self._tasks[key], advance=1,
                              status=f"[red]{failed} failed[/]" if failed else "[green]ok[/]")

    def note(self, text: str) -> None:
        self._progress.console.print(text, highlight=False)


@app.command("run")
def run_cmd(
    methods: str = typer.Option("all", "--methods", "-m",
                                help="all | classic | deep | a kind | NAME,... | shell pattern | none "
                                     "(no registration or fusion: only the --tasks evaluations of the PAT "
                                     "and MRI images; the only choice on a PAT-only dataset)"),
    dataset: str = typer.Option("phantom", "--dataset", "-d", help="phantom[:n=..,size=..] | folder:PATH"),
    out: Path = typer.Option(..., "--out", "-o", help="run folder"),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", help="local worker processes (default: cores)"),
    scheduler: Optional[str] = typer.Option(None, "--scheduler",
                                            help="Dask scheduler address tcp://HOST:8786, or local[:N]"),
    resume: bool = typer.Option(False, "--resume", help="continue a run in OUT, skipping finished cases"),
    limit: Optional[int] = typer.Option(None, "--limit", help="only the first N test cases"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    registration: Optional[str] = typer.Option(None, "--registration",
                                               help="registration for methods needing aligned input "
                                                    "(default p2m+vm if installed, else identity)"),
    convention: str = typer.Option("paper", "--convention", help="fusion-metric convention"),
    metrics: Optional[str] = typer.Option(None, "--metrics", help="fusion metrics NAME,... (default all)"),
    report: bool = typer.Option(True, "--report/--no-report", help="build tables and figures afterwards"),
    fit: bool = typer.Option(False, "--fit", help="train every selected trainable method on the dataset's "
                             "train split unless weights made on these data exist (default: shipped weights)"),
    external: Optional[list[str]] = typer.Option(None, "--external", help="NAME=DIR[,size=crop|pad]: score "
                                                 "fused images made elsewhere, one file per case named by case "
                                                 "id (repeatable)"),
    tasks: Optional[str] = typer.Option(None, "--tasks", help="then run task evaluations NAME,... "
                                        "(e.g. contour,organs; see `fusionbench segment`)"),
    preset: str = typer.Option("quick", "--preset", help="task training preset (quick | standard)"),
    settings: Optional[list[str]] = typer.Option(None, "--set", help="METHOD.KEY=VALUE passed to a method, "
                                                 "e.g. pamrfuse+.preset=paper (repeatable)"),
) -> None:
    """Register, fuse and score every selected method on a dataset's test split.

    Trainable methods use weights made on the dataset (shipped or cached), else with --fit they
    are trained on its train split, else they run with their shipped weights and every table says
    on what data those were trained. Methods without any weights are listed as untrained.

    A PAT-only dataset (e.g. from `fusionbench data import coco`) has no MRI to register to or
    fuse with: evaluate its PAT images with `--methods none --tasks contour,organs`.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .methods import resolve_methods
    from .runner import RunConfig, RunError, run

    try:
        names = resolve_methods(methods)
    except KeyError as exc:
        _fail(str(exc.args[0]))
    if not names and methods.strip().lower() != "none":
        _fail(f"--methods {methods!r} selects no method (write --methods none for a run of the --tasks only)")
    config = RunConfig(methods=names, out=out, dataset=dataset, registration=registration, jobs=jobs,
                       scheduler=scheduler, resume=resume, limit=limit, device=device, fit=fit,
                       external=list(external or []),
                       convention=convention,
                       metrics=[m.strip() for m in metrics.split(",") if m.strip()] if metrics else None,
                       settings=_method_settings(settings or [], per_method=True))
    columns = [TextColumn("{task.description:<16}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("{task.fields[status]}")]
    try:
        with Progress(*columns, console=console, transient=False) as bars:
            summary = run(config, progress=_RichProgress(bars))
    except RunError as exc:
        _fail(str(exc))
    except (ValueError, FileNotFoundError, RuntimeError) as exc:  # dataset and scheduler errors
        _fail(f"{type(exc).__name__}: {exc}")

    table = Table(title=f"fusionbench run: {summary.out} ({summary.executor}, {summary.seconds:.1f} s)")
    for col in ("method", "role", "state", "ok", "failed", "resumed", "s/case"):
        table.add_column(col, no_wrap=True)
    table.add_column("weights", no_wrap=True, overflow="ellipsis", max_width=44)
    for st in summary.methods.values():
        colour = {"ok": "green", "partial": "yellow", "failed": "red", "untrained": "dim"}[st.state]
        per_case = f"{st.seconds / st.ok:.3f}" if st.ok else "–"
        table.add_row(st.name, st.role, f"[{colour}]{st.state}[/]", str(st.ok), str(st.failed),
                      str(st.skipped), per_case, st.weights)
    if summary.methods:
        console.print(table)
    for st in summary.methods.values():
        if st.untrained:
            console.print(f"[dim]{st.name}[/]: {st.untrained}", highlight=False, soft_wrap=True)
        for error in st.errors[:3]:
            console.print(f"[red]{st.name}[/]: {error}", highlight=False, soft_wrap=True)
    if any(st.errors for st in summary.methods.values()):
        console.print(f"details: {summary.out / 'failures.csv'} and the case files under "
                      f"{summary.out / 'cases'}", highlight=False, soft_wrap=True)
    if not names and not tasks:
        console.print(f"no methods: {summary.out} holds the run record and source images; evaluate them with "
                      f"`fusionbench segment {summary.out}`", highlight=False, soft_wrap=True)
    if tasks:
        _run_task_evaluations(summary.out, tasks, preset=preset, jobs=jobs, scheduler=scheduler)
    if report:  # after the tasks, so the page holds their tables too
        from .report import build_report

        written = build_report(summary.out)
        console.print(f"report: {summary.out / 'report' / 'index.html'} "
                      f"({sum(len(v) for v in written.values())} files)")
    if summary.all_failed:
        raise typer.Exit(1)


TASK_GROUP = "fusionbench.tasks"


def load_tasks() -> dict[str, object]:
    """Task evaluations registered in the ``fusionbench.tasks`` entry-point group, by name."""
    from importlib.metadata import entry_points

    return {ep.name: ep.load() for ep in entry_points(group=TASK_GROUP)}


def _run_task_evaluations(run_dir: Path, names: str, *, preset: str, jobs, scheduler, methods=None) -> None:
    import sys

    available = load_tasks()
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in available]
    if unknown:
        _fail(f"unknown task(s) {', '.join(unknown)}; available: {', '.join(sorted(available)) or 'none'}")
    # Tasks of one package run together when it offers run_tasks (shared per-source training).
    by_module: dict[str, list[str]] = {}
    for n in wanted:
        by_module.setdefault(type(available[n]).__module__.split(".")[0], []).append(n)
    selection = {"methods": methods} if methods is not None else {}
    try:
        for package, group in by_module.items():
            run_many = getattr(sys.modules[package], "run_tasks", None)
            if run_many is not None:
                run_many(run_dir, tasks=group, preset=preset, jobs=jobs, scheduler=scheduler, log=console.print,
                         **selection)
            else:
                for n in group:
                    available[n].run(run_dir, preset=preset, jobs=jobs, scheduler=scheduler, log=console.print,
                                     **selection)
    except (ValueError, FileNotFoundError) as exc:  # a run or dataset the tasks cannot use (no labels, ...)
        _fail(f"tasks {', '.join(wanted)}: {exc}")
    console.print(f"tasks {', '.join(wanted)}: tables in {run_dir / 'segment'}", highlight=False)


@app.command("segment")
def segment_cmd(run_dir: Path = typer.Argument(..., help="a run folder of `fusionbench run`"),
                tasks: str = typer.Option("contour,organs", "--tasks", help="task evaluations NAME,..."),
                preset: str = typer.Option("quick", "--preset", help="training preset (quick | standard)"),
                jobs: Optional[int] = typer.Option(None, "--jobs", "-j"),
                scheduler: Optional[str] = typer.Option(None, "--scheduler"),
                methods: Optional[str] = typer.Option(None, "--methods", "-m",
                                                      help="only these of the run's methods (PAT and MRI always; "
                                                           "none: only them)")
                ) -> None:
    """Task-driven evaluation of a run's fused images (body contour, organs: paper Tables 3-4)."""
    if not (run_dir / "run.json").exists():
        _fail(f"{run_dir}: not a fusionbench run folder (no run.json)")
    selected = None
    if methods:
        from .methods import resolve_methods

        try:
            selected = resolve_methods(methods)
        except KeyError as exc:
            _fail(str(exc.args[0]))
    _run_task_evaluations(run_dir, tasks, preset=preset, jobs=jobs, scheduler=scheduler, methods=selected)


@app.command("list")
def list_cmd(kind: Optional[str] = typer.Option(None, "--kind", help="only this kind")) -> None:
    """List the registered methods."""
    from .methods import get_method_info, list_methods

    table = Table(title="fusionbench methods")
    for col in ("name", "kind", "role", "aligned input", "trainable"):
        table.add_column(col, overflow="fold")
    table.add_column("reference", overflow="fold", ratio=1, min_width=20)
    for name in list_methods(kind=kind):
        info = get_method_info(name)
        table.add_row(name, info.kind, info.role,
                      "–" if info.role == "registration" else ("yes" if info.needs_alignment else "no (joint)"),
                      "yes" if info.trainable else "no", info.reference)
    console.print(table)


@app.command("report")
def report_cmd(run_dir: Path = typer.Argument(..., help="a run folder")) -> None:
    """Rebuild the tables, figures and report page (report/index.html) of a run from its results."""
    from .report import build_report

    try:
        written = build_report(run_dir)
    except FileNotFoundError as exc:
        _fail(str(exc))
    for kind, paths in written.items():
        if kind == "html":  # the page, then its many images: name the page, count the images
            console.print(f"{kind:>13}: {paths[0]} ({len(paths) - 1} images under {paths[0].parent / 'img'})",
                          highlight=False)
            continue
        console.print(f"{kind:>13}: " + ", ".join(str(p) for p in paths), highlight=False)
    md = run_dir / "report" / "fusion.md"
    if md.exists():
        console.print(md.read_text(), highlight=False)


@app.command("fit")
def fit_cmd(method: str = typer.Argument(...), dataset: str = typer.Option("phantom", "--dataset", "-d"),
            device: str = typer.Option("auto", "--device"),
            preset: Optional[str] = typer.Option(None, "--preset", help="the method's preset, e.g. "
                                                 "pamrfuse+ --preset paper (same as --set preset=...)"),
            settings: Optional[list[str]] = typer.Option(None, "--set", help="KEY=VALUE passed to the method "
                                                         "(repeatable)"),
            ship: bool = typer.Option(False, "--ship", help="maintainers: make the fitted weights the "
                                      "plugin's shipped weights (with their provenance); only when the "
                                      "validation curve has stopped improving"),
            budget: Optional[str] = typer.Option(None, "--budget", help="wall-clock time for this session, "
                                                 "e.g. 2h, 90m, 1h30m: training stops at the next checkpoint "
                                                 "after it (exit code 75); the same command continues"),
            val_every: Optional[int] = typer.Option(None, "--val-every", help="steps between validation "
                                                    "points (default: about 50 per run)"),
            cache_dir: Optional[Path] = typer.Option(None, "--cache-dir",
                                                     help="default $FUSIONBENCH_CACHE/weights or "
                                                          "~/.cache/fusionbench/weights"),
            init: Optional[Path] = typer.Option(None, "--init", help="start from this weights folder "
                                                "(fine-tuning; other settings allowed where the networks "
                                                "agree); run the result with --set METHOD.weights=FOLDER "
                                                "or --ship it")) -> None:
    """Train one method on a dataset's train split and cache its weights for later runs.

    A run uses the weights when it creates the method alike: ``fusionbench fit pamrfuse+ --preset
    paper`` then ``fusionbench run --methods pamrfuse+ --set pamrfuse+.preset=paper``. An
    interrupted fit resumes from its checkpoint when the same command is run again. The length of
    a run is the method's setting (``--set steps=N``; PAMRFuse+ ``--set epochs_stage1=..``); the
    dataset's val split is scored along the way (curves.png beside the checkpoints, the curve and
    its last-20 % trend in the weights' provenance).
    """
    from .data.datasets import load_dataset
    from .fitting import BudgetExhausted, FitControl, parse_budget
    from .methods import get_method_info
    from .runner import RunError, fit_method, resolve_device
    from .weights import WeightsError, converged, ship_weights

    try:
        info = get_method_info(method)
        dev = resolve_device(device)
        seconds = parse_budget(budget)
    except (KeyError, RunError, ValueError) as exc:
        _fail(str(exc.args[0]) if isinstance(exc, KeyError) else str(exc))
    if not info.trainable:
        console.print(f"{method} is not trainable; nothing to fit")
        return
    if val_every is not None and val_every < 1:
        _fail(f"--val-every must be >= 1, got {val_every}")
    try:
        options = _method_settings(settings or [], per_method=False)
        if preset is not None:
            options["preset"] = preset
        if "weights" in options:
            _fail(f"--set weights=...: fit trains its own weights; a weights folder is for `fusionbench run "
                  f"--set {info.name}.weights=FOLDER`")
        cases = load_dataset(dataset, split="train")
        if not all(c.has_mri for c in cases):
            _fail(f"dataset {dataset!r} is PAT-only (no MRI images); {info.name} trains on PAT/MRI pairs")
        try:
            val_cases = load_dataset(dataset, split="val")
        except ValueError:
            val_cases = []
        if not val_cases:
            console.print(f"{dataset}: no val split; training without a validation curve (such weights "
                          "cannot be shipped)", highlight=False)
        control = FitControl(budget=seconds, val_cases=val_cases or None, val_every=val_every)
        try:
            fitted, state = fit_method(info.name, dataset, cache_dir=cache_dir, device=dev, settings=options,
                                       train_cases=cases, allow_fit=True, log=console.print, control=control,
                                       init=init)
        except BudgetExhausted as exc:
            console.print(f"{info.name}: {exc}", highlight=False)
            raise typer.Exit(75)
        console.print(f"{info.name}: {state} weights, {fitted.weights_note()}", highlight=False)
        if state == "fitted" or state == "cached":
            ok, why = converged(fitted.provenance)
            console.print(f"{info.name}: {'converged' if ok else 'not converged'}: {why}", highlight=False)
        if ship and state != "shipped":
            console.print(f"shipped: {ship_weights(fitted, fitted.provenance['folder'])}", highlight=False)
    except (ValueError, FileNotFoundError, WeightsError) as exc:
        _fail(f"{type(exc).__name__}: {exc}")


@app.command("phantom")
def phantom_cmd(out: Path = typer.Option(..., "--out", "-o", help="folder to write (created if missing)"),
                n: int = typer.Option(64, "--n", help="number of pairs"),
                size: int = typer.Option(256, "--size", help="image side in pixels (32-1024)"),
                misalign: str = typer.Option("moderate", "--misalign", help="none | mild | moderate | severe"),
                seed: int = typer.Option(0, "--seed"),
                split: str = typer.Option("test", "--split", help="train | val | test"),
                jobs: Optional[int] = typer.Option(None, "--jobs", "-j",
                                                   help="worker processes for missing cases (default: cores)"),
                progress: bool = typer.Option(True, "--progress/--no-progress"),
                version: Optional[str] = typer.Option(None, "--version",
                                                      help="phantom look: 1.2 | 2.0 (default: the default's); "
                                                           "with --realism a list, e.g. 1.2,2.0"),
                realism: Optional[list[str]] = typer.Option(
                    None, "--realism", metavar="FOLDER",
                    help="instead of writing the phantom, compare it with real images (a dataset folder; "
                         "repeatable) and write realism.csv and realism.png to OUT")) -> None:
    """Write the built-in phantom data set to a folder (usable as --dataset folder:OUT).

    Writes pat/, mri/, labels_mri/, labels_pat/ (PNG), flow/ (.npy, PAT -> MRI), manifest.csv, preview.png.
    With --realism, compares the first N phantom pairs of the split with every case of the real
    folders instead (intensities inside and outside the body, power spectrum, gradients, body size).

    Cases are read from (or generated into) the phantom cache under $FUSIONBENCH_CACHE.
    """
    from .data.phantom import write_phantom_folder

    if realism:
        _realism(out, realism, n=n, size=size, seed=seed, split=split, jobs=jobs, version=version)
        return
    try:
        path = write_phantom_folder(out, n=n, size=size, misalign=misalign, seed=seed, split=split, jobs=jobs,
                                    progress=progress, version=version)
    except ValueError as exc:
        _fail(str(exc))
    console.print(f"wrote {n} phantom cases to {path}")


def _realism(out: Path, folders: list[str], *, n: int, size: int, seed: int, split: str, jobs, version) -> None:
    from .data.folder import load_folder
    from .data.io import ImageError
    from .data.phantom import DEFAULT_VERSION, PhantomConfig, load_phantom
    from .data.realism import realism_report

    versions = [v.strip() for v in (version or DEFAULT_VERSION).split(",") if v.strip()]
    try:
        sets = {}
        for v in versions:
            cfg = PhantomConfig.from_params(n=n, size=size, misalign="none", seed=seed, version=v)
            sets[f"phantom {v}"] = load_phantom(split, cfg, jobs=jobs)[:n]
        for folder in folders:
            name = Path(folder.removeprefix("folder:")).name
            sets[name] = load_folder(folder.removeprefix("folder:"))
        rows = realism_report(sets, out, reference=Path(folders[0].removeprefix("folder:")).name)
    except (ValueError, ImageError) as exc:
        _fail(str(exc))
    names = list(sets)
    for modality in ("pat", "mri"):
        part = [r for r in rows if r["modality"] == modality]
        if not part:
            continue
        table = Table(title=f"{modality.upper()}: per-image median (10th-90th percentile); "
                            f"distances (last rows) from {part[0]['reference']}")
        table.add_column("statistic")
        present = [k for k in names if k in part[0]]
        for k in present:
            table.add_column(k, justify="right")
        for r in part:
            cells = []
            for k in present:
                if f"{k}_p10" in r:
                    cells.append(f"{r[k]:.3f} ({r[f'{k}_p10']:.3f}-{r[f'{k}_p90']:.3f})")
                else:
                    cells.append(f"{r[k]:.3f}")
            table.add_row(r["statistic"], *cells)
        console.print(table)
    console.print(f"wrote {out / 'realism.csv'} and {out / 'realism.png'}")


@app.command("score")
def score_cmd(pat: Path = typer.Option(..., "--pat"), mri: Path = typer.Option(..., "--mri"),
              fused: Path = typer.Option(..., "--fused"), as_json: bool = typer.Option(False, "--json"),
              convention: str = typer.Option("paper", "--convention"),
              flow_true: Optional[Path] = typer.Option(None, "--flow-true", help="(2, H, W) .npy, pixels"),
              labels_pat: Optional[Path] = typer.Option(None, "--labels-pat"),
              labels_mri: Optional[Path] = typer.Option(None, "--labels-mri")) -> None:
    """Score one PAT/MRI/fused triplet of image files with every metric."""
    import numpy as np

    from .data.io import ImageError, read_image
    from .scoring import score_triplet

    try:
        images = [read_image(p) for p in (pat, mri, fused)]
        flow = None
        if flow_true is not None:
            flow = np.asarray(read_image(flow_true, raw=True), dtype=np.float32)
        labels = [None if p is None else read_image(p, raw=True) for p in (labels_pat, labels_mri)]
        scores = score_triplet(*images, convention=convention, flow_true=flow, labels_pat=labels[0],
                               labels_mri=labels[1])
    except (ImageError, ValueError) as exc:
        _fail(str(exc))
    if as_json:
        typer.echo(json.dumps(scores, indent=2))
        return
    for group, values in scores.items():
        table = Table(title=f"{group} metrics")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for k, v in values.items():
            table.add_row(k, f"{v:.6g}")
        console.print(table)


data_app = typer.Typer(no_args_is_help=True, help="Prepare datasets: import public real PAT/MRI data.")
import_app = typer.Typer(no_args_is_help=True,
                         help="Turn a dataset you already have on disk into fusionbench folder datasets "
                              "(nothing is downloaded).")
data_app.add_typer(import_app, name="import")
app.add_typer(data_app, name="data")


@import_app.command("pamrfuse-v1")
def import_pamrfuse_v1_cmd(
    repo: Path = typer.Argument(..., help="a clone of github.com/zhongniuniu/PAMRFuse"),
    out: Path = typer.Argument(..., help="output folder (created if missing)"),
    parts: str = typer.Option("registered,unaligned,external", "--parts",
                              help="what to import: registered (fusion_data/OursregPATMRI), unaligned "
                                   "(reg_data/val2D), external (fusion_result)"),
    unaligned_format: str = typer.Option("png16", "--unaligned-format",
                                         help="png16 | npy: storage of the unaligned pairs' (x+1)/2 values"),
) -> None:
    """Import PAMRFuse v1's public pairs and fused images into folder datasets under OUT.

    Writes OUT/registered/{pat,mri}/N.png (uN.jpg = PAT, oN.jpg = MRI, gray 8-bit), OUT/unaligned/
    {pat,mri}/NAME.png (reg_data/val2D: B = PAT, A = MRI, [-1, 1] -> 16-bit [0, 1]) and
    OUT/external/pamrfuse-v1/N.png (PAMRFuse v1's own fused images, native 296x296).
    """
    from .data.importers import import_pamrfuse_v1
    from .data.io import ImageError

    try:
        report = import_pamrfuse_v1(repo, out, parts=[p.strip() for p in parts.split(",") if p.strip()],
                                    unaligned_format=unaligned_format)
    except ImageError as exc:
        _fail(str(exc))
    for line in report.lines():
        console.print(line, highlight=False, soft_wrap=True)


@import_app.command("coco")
def import_coco_cmd(
    out: Path = typer.Argument(..., help="output folder (created if missing)"),
    images: Path = typer.Option(..., "--images", help="folder of the annotated images"),
    annotations: Path = typer.Option(..., "--annotations", help="COCO JSON file with polygon annotations"),
    mapping: Optional[list[str]] = typer.Option(None, "--map", help="NAME=ORGAN: COCO category -> organ name "
                                                "(or NAME=ignore); repeatable. Defaults: vert=spine, "
                                                "vessel=vessels, kidney=kidneys, organ names to themselves"),
) -> None:
    """Import COCO polygon annotations of PAT images as gray images and organ label maps.

    Writes OUT/pat/NAME.png, OUT/labels_pat/NAME.png (uint8 organ ids of fusionbench.data.ORGANS:
    body first, later annotations win) and OUT/manifest.csv (id,pat,labels_pat). SFE-GCN's PAT data
    (lzc-smu/SFEGCN data/space/train) import with the defaults. OUT is a PAT-only dataset: evaluate
    it with `fusionbench run --dataset folder:OUT,split=auto --methods none --tasks contour,organs`.
    """
    from .data.importers import import_coco, parse_map
    from .data.io import ImageError

    try:
        report = import_coco(images, annotations, out, mapping=parse_map(mapping))
    except ImageError as exc:
        _fail(str(exc))
    for line in report.lines():
        console.print(line, highlight=False, soft_wrap=True)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
