"""The benchmark harness: fit -> register -> fuse -> score, cached, resumable, parallel (DESIGN §6).

A run writes, under its output folder ``OUT``::

    run.json                        the configuration (methods, dataset + fingerprint, versions, ...)
    cases/METHOD/CASE.json          one file per (method, case): status, error, metric rows
    fused/METHOD/CASE.png           the fused image (8-bit)
    flows/METHOD/CASE.npy           the displacement found by a registration (or joint) method
    registered/METHOD/CASE.npy      the PAT image warped by that registration (float32)
    sources/CASE/{pat,mri}.png      the inputs, for the report's figures
    results.csv, failures.csv       assembled from cases/ by :func:`fusionbench.results.assemble`

A case file is written last and atomically, after the images of that case, so it marks the case
as done: ``--resume`` skips exactly the cases whose file says ``"ok"`` and was written by the same
method configuration (its weights included, and for fusions the registration's), a killed run
loses at most the cases in flight, and nothing ever holds half a row.

The protocol follows the paper: every fusion method that needs aligned input fuses the PAT image
registered by one registration method (``--registration``, default ``p2m+vm`` when registered,
else ``identity``); registration is computed once per case and shared. Joint methods
(``needs_alignment=False``) register and fuse themselves. The registration metrics are computed for
the identity (the unregistered input, Table 1's first row), the chosen registration, and every joint
method. Trainable methods are fitted once, on the train split, in this process, and cached under a
hash of their name, configuration and the dataset fingerprint.
"""
from __future__ import annotations

import hashlib
import inspect
import io
import json
import pickle
import platform
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from typing import Any, Sequence

import numpy as np

from . import __version__
from .data.io import as_image, atomic_write_bytes, check_same_shape, write_image
from .executors import make_executor
from .methods import create_method, get_method_info, list_methods, load_plugins
from .scoring import fusion_columns, score_fusion, score_registration

__all__ = ["RunConfig", "RunSummary", "MethodStatus", "Progress", "run", "fit_method",
           "default_registration", "resolve_device", "case_file", "DEFAULT_REGISTRATION"]

DEFAULT_REGISTRATION = "p2m+vm"
IDENTITY = "identity"


class RunError(RuntimeError):
    """The run cannot start (bad option, incompatible existing output); the message says why."""


@dataclass
class RunConfig:
    """Options of ``fusionbench run``; see the CLI for their meaning."""

    methods: Sequence[str]
    out: Path
    dataset: str = "phantom"
    registration: str | None = None
    jobs: int | None = None
    scheduler: str | None = None
    resume: bool = False
    limit: int | None = None
    device: str = "auto"
    convention: str = "paper"
    metrics: Sequence[str] | None = None  # fusion metrics to compute; None: the whole suite
    cache_dir: Path | None = None
    #: Trainable methods that may be trained in this run when they have no weights for the data
    #: (the CLI puts the methods named explicitly here, or all with ``--fit``); the others are
    #: skipped with a note, so ``--methods all`` never starts hours of training unasked.
    fit: Sequence[str] | bool = True
    #: Keyword settings per method name, passed to the method's factory (``--set pamrfuse+.preset=paper``).
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class MethodStatus:
    name: str
    role: str
    total: int = 0
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    untrained: str = ""  # why the method was left out (no weights for these data)

    @property
    def state(self) -> str:
        if self.untrained:
            return "untrained"
        if self.failed and not self.ok and not self.skipped:
            return "failed"
        return "partial" if self.failed else "ok"


@dataclass
class RunSummary:
    out: Path
    registration: str
    methods: dict[str, MethodStatus]
    executor: str
    seconds: float

    @property
    def all_failed(self) -> bool:
        fusion = [m for m in self.methods.values() if m.role != "registration"]
        return bool(fusion) and all(m.state == "failed" for m in fusion)


class Progress:
    """Receives the run's progress; the CLI's implementation draws rich progress bars."""

    def add(self, key: str, total: int, done: int = 0) -> None: ...

    def advance(self, key: str, ok: bool) -> None: ...

    def note(self, text: str) -> None: ...


# ---------------------------------------------------------------------------------------- paths

def case_file(out: Path, method: str, case_id: str) -> Path:
    return Path(out) / "cases" / method / f"{case_id}.json"


def _case_done(out: Path, method: str, case_id: str, fingerprint: str | None = None) -> bool:
    """An ``"ok"`` case file, written by the same method configuration (weights included) when
    ``fingerprint`` is given; files written before fingerprints existed carry none and count as done."""
    path = case_file(out, method, case_id)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    if record.get("status") != "ok":
        return False
    return fingerprint is None or record.get("fingerprint") in (None, fingerprint)


def config_fingerprint(*configs: Any) -> str:
    """A short hash of method configurations (``method.config()``, which names the weights)."""
    payload = json.dumps(configs, sort_keys=True, default=repr)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=1, sort_keys=True, default=repr) + "\n").encode()


# ------------------------------------------------------------------------- methods and devices

def default_registration() -> str:
    """``p2m+vm`` (the paper's protocol) when a plugin registers it, else ``identity``."""
    return DEFAULT_REGISTRATION if DEFAULT_REGISTRATION in list_methods() else IDENTITY


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; ``cuda`` without a GPU is an error."""
    device = device.lower()
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise RunError(f"--device must be auto, cpu or cuda, got {device!r}")
    if device == "cpu":
        return device
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if device == "auto":
        return "cuda" if has_cuda else "cpu"
    if not has_cuda:
        raise RunError(f"--device {device}: no CUDA device is available (use --device cpu or auto)")
    return device


def _accepts_device(factory) -> bool:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
    return "device" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _create(name: str, device: str | None, settings: dict[str, Any] | None = None):
    info = get_method_info(name)
    cfg = {"device": device} if device is not None and _accepts_device(info.factory) else {}
    try:
        return create_method(name, **{**(settings or {}), **cfg})
    except TypeError as exc:
        if not settings:
            raise
        raise ValueError(f"{name}: settings {settings} not accepted ({exc})") from None


def _fit_key(name: str, method, fingerprint: str) -> str:
    payload = json.dumps({"method": name, "config": method.config(), "dataset": fingerprint,
                          "class": f"{type(method).__module__}.{type(method).__qualname__}"},
                         sort_keys=True, default=repr)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def fit_cache_root(cache_dir: str | Path | None = None) -> Path:
    """Where fitted methods are cached: ``cache_dir``, else ``fit/`` under the user cache
    (``$FUSIONBENCH_CACHE`` or ``~/.cache/fusionbench``), shared by ``fusionbench fit`` and every
    run, so a method fitted once is found by all later runs on the same data."""
    from .data.cache import default_cache_dir

    return Path(cache_dir) if cache_dir is not None else default_cache_dir() / "fit"


def _cache_root(config: RunConfig) -> Path:
    return fit_cache_root(config.cache_dir)


def fit_method(name: str, dataset: str, *, cache_dir: Path, device: str = "cpu", method=None,
               train_cases=None, log=None, settings: dict[str, Any] | None = None):
    """Create (unless given) and fit one trainable method on ``dataset``'s train split, cached.

    The fitted instance is pickled to ``cache_dir/KEY/method.pkl`` with ``KEY`` a hash of the
    method's name, class, configuration and the dataset fingerprint; ``fit`` gets
    ``cache_dir/KEY/work`` as its working folder. A later call with the same key loads the pickle
    instead of training. ``settings`` go to the method's factory (e.g. ``{"preset": "paper"}``).
    Returns the fitted instance.
    """
    from .data.datasets import dataset_fingerprint, load_dataset

    method = method if method is not None else _create(name, device, settings)
    if not getattr(method, "trainable", False) and not get_method_info(name).trainable:
        return method
    key = _fit_key(name, method, dataset_fingerprint(dataset))
    folder = Path(cache_dir) / f"{name}-{key}"
    cached = folder / "method.pkl"
    if cached.exists():
        with open(cached, "rb") as fh:
            return pickle.load(fh)
    if log:
        log(f"fitting {name} on the train split of {dataset} (cache {folder})")
    cases = train_cases if train_cases is not None else load_dataset(dataset, split="train")
    workdir = folder / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    method.fit(cases, workdir)
    atomic_write_bytes(cached, pickle.dumps(method, protocol=pickle.HIGHEST_PROTOCOL))
    return method


def _may_fit(name: str, fit: Sequence[str] | bool) -> bool:
    return fit if isinstance(fit, bool) else name in fit


def training_state(name: str, method, dataset: str, train_cases, cache_dir: Path) -> str:
    """How a trainable ``method`` stands for ``dataset``: ``"cached"`` (a fit of this run's cache),
    ``"weights"`` (its loaded weights were trained on exactly these cases, e.g. shipped ones) or
    ``"untrained"``.

    A method tells about its weights through ``method.needs_training(train_cases)``; a method
    without that hook is taken to need its ``fit``.
    """
    from .data.datasets import dataset_fingerprint

    key = _fit_key(name, method, dataset_fingerprint(dataset))
    if (Path(cache_dir) / f"{name}-{key}" / "method.pkl").exists():
        return "cached"
    hook = getattr(method, "needs_training", None)
    if callable(hook) and not hook(train_cases):
        return "weights"
    return "untrained"


# ----------------------------------------------------------------------------------- the tasks

@dataclass
class _Task:
    kind: str  # "register" | "fuse" | "joint"
    method: str
    case_id: str
    pat: np.ndarray  # the input PAT for "register"/"joint", the registered PAT for "fuse"
    mri: np.ndarray
    flow_true: np.ndarray | None = None
    labels_pat: np.ndarray | None = None
    labels_mri: np.ndarray | None = None


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip()


def _check_flow(flow, shape) -> np.ndarray:
    flow = np.asarray(flow, dtype=np.float32)
    if flow.shape != (2, *shape) or not np.all(np.isfinite(flow)):
        raise ValueError(f"registration returned a flow of shape {flow.shape} "
                         f"(expected {(2, *shape)}) or with NaN/Inf")
    return flow


def _execute(context: dict, task: _Task) -> dict:
    """Run one task in a worker; every exception of the method becomes a ``failed`` result."""
    method = context["methods"][task.method]
    out: dict[str, Any] = {"rows": [], "fused": None, "flow": None, "registered": None}
    times: dict[str, float] = {}
    stage = "start"
    try:
        pat = task.pat
        if task.kind in ("register", "joint"):
            stage = "register"
            t0 = perf_counter()
            registered, flow = method.register(task.pat, task.mri)
            times["registration"] = perf_counter() - t0
            registered = as_image(registered, f"{task.method} registered output")
            check_same_shape(registered=registered, mri=task.mri)
            flow = _check_flow(flow, task.mri.shape)
            stage = "score registration"
            t0 = perf_counter()
            out["rows"] += score_registration(registered, task.mri, flow, flow_true=task.flow_true,
                                              labels_pat=task.labels_pat, labels_mri=task.labels_mri)
            times["scoring"] = perf_counter() - t0
            out["flow"], out["registered"], pat = flow, registered, registered
        if task.kind in ("fuse", "joint"):
            stage = "fuse"
            t0 = perf_counter()
            fused = method.fuse(pat, task.mri)
            times["fusion"] = perf_counter() - t0
            fused = as_image(fused, f"{task.method} fused output")
            check_same_shape(fused=fused, mri=task.mri)
            stage = "score fusion"
            t0 = perf_counter()
            out["rows"] += score_fusion(pat, task.mri, fused, convention=context["convention"],
                                       metrics=context["metrics"])
            times["scoring"] = times.get("scoring", 0.0) + perf_counter() - t0
            out["fused"] = fused
    except Exception as exc:  # noqa: BLE001 - a failing method must not stop the run
        return {"status": "failed", "stage": stage, "error": _error_text(exc),
                "traceback": traceback.format_exc(limit=-8), "rows": []}
    out["rows"] += [{"group": "time", "metric": k, "value": v, "seconds": v} for k, v in times.items()]
    out["status"] = "ok"
    return out


# ------------------------------------------------------------------------------------- the run

def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"fusionbench": __version__, "python": platform.python_version()}
    for pkg in ("numpy", "scipy", "scikit-image", "torch", "PyWavelets", "opencv-python-headless"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def _load_run_json(out: Path) -> dict | None:
    try:
        return json.loads((out / "run.json").read_text())
    except (OSError, ValueError):
        return None


def _check_resume(out: Path, config: RunConfig, record: dict) -> None:
    has_cases = (out / "cases").is_dir() and any((out / "cases").rglob("*.json"))
    old = _load_run_json(out)
    if has_cases and not config.resume:
        raise RunError(f"{out} already holds results; pass --resume to continue that run, "
                       "or choose another --out")
    if old is None or not config.resume:
        return
    for key in ("dataset_fingerprint", "registration", "convention", "metrics"):
        if old.get(key) != record.get(key):
            raise RunError(f"--resume: {key} differs from the run in {out} "
                           f"({old.get(key)!r} there, {record.get(key)!r} now); use another --out")


def _write_case(out: Path, method: str, role: str, case_id: str, registration: str | None,
                result: dict, write_images: bool = True, fingerprint: str | None = None) -> None:
    if result.get("status") == "ok" and write_images:
        if result.get("fused") is not None:
            write_image(out / "fused" / method / f"{case_id}.png", result["fused"])
        if result.get("flow") is not None:
            atomic_write_bytes(out / "flows" / method / f"{case_id}.npy", _npy_bytes(result["flow"]))
            atomic_write_bytes(out / "registered" / method / f"{case_id}.npy",
                               _npy_bytes(result["registered"]))
    record = {"method": method, "case": case_id, "role": role, "registration": registration,
              "status": result.get("status", "failed"), "stage": result.get("stage"),
              "error": result.get("error"), "traceback": result.get("traceback"),
              "rows": result.get("rows", []), "fingerprint": fingerprint}
    atomic_write_bytes(case_file(out, method, case_id), _json_bytes(record))


def run(config: RunConfig, progress: Progress | None = None) -> RunSummary:
    """Run the benchmark described by ``config``; returns per-method status.

    Raises :class:`RunError` before any work if an option is invalid or the output folder holds an
    incompatible run. Failures of methods never raise: they are recorded in the case files.
    """
    from .data.datasets import dataset_fingerprint, load_dataset
    from .results import assemble

    t_start = perf_counter()
    progress = progress or Progress()
    load_plugins()
    out = Path(config.out)
    names = list(config.methods)
    if not names:
        raise RunError("no method selected")
    infos = {}
    for n in names:
        try:
            infos[n] = get_method_info(n)
        except KeyError as exc:
            raise RunError(str(exc.args[0])) from None
    registration = (config.registration or default_registration()).lower()
    try:
        reg_info = get_method_info(registration)
    except KeyError as exc:
        raise RunError(f"--registration: {exc.args[0]}") from None
    if reg_info.role not in ("registration", "joint"):
        raise RunError(f"--registration {registration!r} is a {reg_info.role} method, not a registration")
    if config.metrics:
        try:
            config.metrics = fusion_columns(config.convention, config.metrics)
        except ValueError as exc:
            raise RunError(f"--metrics: {exc}") from None
    if config.limit is not None and config.limit < 1:
        raise RunError(f"--limit must be >= 1, got {config.limit}")
    stray = sorted(set(config.settings) - {*names, registration})
    if stray:
        raise RunError(f"--set names method(s) not in this run: {', '.join(stray)}")

    cases = load_dataset(config.dataset, split="test")
    if config.limit is not None:
        cases = cases[: config.limit]
    if not cases:
        raise RunError(f"dataset {config.dataset!r} has no test cases")
    fingerprint = dataset_fingerprint(config.dataset)
    any_device = any(_accepts_device(i.factory) for i in [*infos.values(), reg_info])
    device = resolve_device(config.device) if any_device else "cpu"

    # Fusion methods that need aligned input use the shared registration; joint methods do not.
    # Registration methods named in --methods are scored too (the registration table's rows).
    reg_methods = list(dict.fromkeys([IDENTITY, registration]
                                     + [n for n in names if infos[n].role == "registration"]))
    fusion_names = [n for n in names if n not in reg_methods]
    record = {"methods": fusion_names, "registration_methods": reg_methods, "registration": registration,
              "dataset": config.dataset, "dataset_fingerprint": fingerprint,
              "cases": [c.id for c in cases], "limit": config.limit, "device": device,
              "convention": config.convention,
              "metrics": list(config.metrics) if config.metrics else None, "versions": _versions(), "method_configs": {},
              "method_settings": {k: dict(v) for k, v in config.settings.items()}}
    out.mkdir(parents=True, exist_ok=True)
    _check_resume(out, config, record)

    statuses: dict[str, MethodStatus] = {}
    instances: dict[str, Any] = {}
    method_errors: dict[str, str] = {}
    train_cases = None
    for n in reg_methods + fusion_names:
        info = get_method_info(n)
        role = "registration" if n in reg_methods else info.role
        statuses[n] = MethodStatus(n, role, total=len(cases))
        try:
            method = _create(n, device, config.settings.get(n))
            if info.trainable or getattr(method, "trainable", False):
                if train_cases is None:
                    train_cases = load_dataset(config.dataset, split="train")
                state = training_state(n, method, config.dataset, train_cases, _cache_root(config))
                if state == "untrained" and n not in reg_methods and not _may_fit(n, config.fit):
                    sets = "".join(f" --set {k}={json.dumps(v)}" for k, v in config.settings.get(n, {}).items())
                    statuses[n].untrained = (f"no weights for {config.dataset}; train it with "
                                             f"`fusionbench fit {n} --dataset {config.dataset}{sets}` or run with --fit")
                    progress.note(f"{n}: skipped, {statuses[n].untrained}")
                    continue
                if state != "weights":
                    method = fit_method(n, config.dataset, cache_dir=_cache_root(config), device=device,
                                        method=method, train_cases=train_cases, log=progress.note)
            instances[n] = method
            record["method_configs"][n] = method.config()
        except Exception as exc:  # noqa: BLE001 - a method that cannot start fails alone
            method_errors[n] = f"setup: {_error_text(exc)}"
            record["method_configs"][n] = None
    fusion_names = [n for n in fusion_names if not statuses[n].untrained]
    record["methods"] = fusion_names
    record["untrained"] = {n: st.untrained for n, st in statuses.items() if st.untrained}
    old = _load_run_json(out) if config.resume else None
    if old:  # keep methods of earlier invocations of a resumed run in the report
        record["methods"] = list(dict.fromkeys(old.get("methods", []) + fusion_names))
        record["registration_methods"] = list(dict.fromkeys(old.get("registration_methods", []) + reg_methods))
        record["method_configs"] = {**old.get("method_configs", {}), **record["method_configs"]}
        record["method_settings"] = {**old.get("method_settings", {}), **record["method_settings"]}
    atomic_write_bytes(out / "run.json", _json_bytes(record))

    for c in cases:
        for role, img in (("pat", c.pat), ("mri", c.mri)):
            path = out / "sources" / c.id / f"{role}.png"
            if not path.exists():
                write_image(path, img)

    # A resumed run redoes the cases of a method whose configuration or weights changed, and the
    # fusions that used a changed registration.
    configs = record["method_configs"]
    fingerprints = {n: config_fingerprint(configs.get(n)) for n in reg_methods + fusion_names}
    for n in fusion_names:
        if get_method_info(n).needs_alignment:
            fingerprints[n] = config_fingerprint(configs.get(n), configs.get(registration))
    executor = make_executor(config.jobs, config.scheduler)
    context = {"methods": instances, "convention": config.convention,
               "metrics": list(config.metrics) if config.metrics else None}
    try:
        # Phase 1: registration (shared), phase 2: fusion and joint methods.
        _run_phase(executor, context, out, reg_methods, cases, statuses, method_errors, progress,
                   make_task=lambda n, c: _Task("register", n, c.id, c.pat, c.mri, c.flow_true,
                                                c.labels_pat, c.labels_mri),
                   registration=None, fingerprints=fingerprints)
        registered = {}
        for c in cases:
            path = out / "registered" / registration / f"{c.id}.npy"
            if _case_done(out, registration, c.id, fingerprints.get(registration)) and path.exists():
                registered[c.id] = np.load(path, allow_pickle=False)

        def fusion_task(n, c):
            if not get_method_info(n).needs_alignment:
                return _Task("joint", n, c.id, c.pat, c.mri, c.flow_true, c.labels_pat, c.labels_mri)
            if c.id not in registered:
                return None
            return _Task("fuse", n, c.id, registered[c.id], c.mri)

        _run_phase(executor, context, out, fusion_names, cases, statuses, method_errors, progress,
                   make_task=fusion_task, registration=registration, fingerprints=fingerprints,
                   missing_error=f"registration {registration!r} failed on this case")
    finally:
        executor.close()
    assemble(out)
    return RunSummary(out=out, registration=registration, methods=statuses,
                      executor=executor.describe(), seconds=perf_counter() - t_start)


def _run_phase(executor, context, out, names, cases, statuses, method_errors, progress, *, make_task,
               registration, fingerprints: dict[str, str], missing_error: str = "") -> None:
    tasks = []
    for n in names:
        st = statuses[n]
        todo = [c for c in cases if not _case_done(out, n, c.id, fingerprints.get(n))]
        st.skipped = len(cases) - len(todo)
        progress.add(n, total=len(cases), done=st.skipped)
        for c in todo:
            task = None if n in method_errors else make_task(n, c)
            if task is None:
                error = method_errors.get(n) or missing_error
                _write_case(out, n, st.role, c.id, registration,
                            {"status": "failed", "stage": "setup" if n in method_errors else "input",
                             "error": error}, fingerprint=fingerprints.get(n))
                st.failed += 1
                if error not in st.errors:
                    st.errors.append(error)
                progress.advance(n, ok=False)
            else:
                tasks.append(task)
    # Interleave methods so that every progress bar moves and a kill leaves each method partly done.
    case_order = {c.id: i for i, c in enumerate(cases)}
    tasks.sort(key=lambda t: (case_order[t.case_id], names.index(t.method)))
    for task, result in executor.run(_execute, tasks, context):
        st = statuses[task.method]
        if isinstance(result, BaseException):
            result = {"status": "failed", "stage": "worker", "error": _error_text(result), "rows": []}
        _write_case(out, task.method, st.role, task.case_id,
                    registration if task.kind == "fuse" else None, result,
                    fingerprint=fingerprints.get(task.method))
        ok = result["status"] == "ok"
        if ok:
            st.ok += 1
            st.seconds += sum(r["value"] for r in result["rows"] if r["group"] == "time")
        else:
            st.failed += 1
            if result["error"] not in st.errors:
                st.errors.append(result["error"])
        progress.advance(task.method, ok=ok)
