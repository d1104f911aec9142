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
registered by one registration method (``--registration``; by default the one a plugin declares
the protocol's default, else ``identity``); registration is computed once per case and shared
(:mod:`fusionbench.pipeline` holds the steps). Joint methods (``needs_alignment=False``) register
and fuse themselves. The registration metrics are computed for the identity (the unregistered
input, Table 1's first row), the chosen registration, and every joint method. Trainable methods
get their weights through :mod:`fusionbench.weights`: shipped, cached, or fitted in this process
when allowed.

No methods (``methods=[]``, the CLI's ``--methods none``) runs no registration and no fusion: the
run writes ``run.json`` and ``sources/`` only, the ground for the task evaluations
(``fusionbench segment``) of the PAT (and MRI) images. It is the only choice on a PAT-only dataset
(cases with ``mri=None``, e.g. a ``fusionbench data import coco`` folder): every registration and
fusion method needs the MRI, so naming one there is a :class:`RunError` before any work.
"""
from __future__ import annotations

import hashlib
import inspect
import io
import json
import platform
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from typing import Any, Sequence

import numpy as np

from . import __version__
from .data.io import atomic_write_bytes, write_image
from .executors import make_executor
from .external import ExternalError, ExternalFusion, parse_external
from .methods import IDENTITY, create_method, default_registration, get_method_info, list_methods, load_plugins
from .pipeline import fuse_step, register_step
from .scoring import fusion_columns, score_fusion, score_registration
from .weights import prepare_weights, start_from, weights_note

__all__ = ["RunConfig", "RunSummary", "MethodStatus", "Progress", "RunError", "run", "fit_method",
           "create_configured", "method_identity", "resolve_device", "case_file", "config_fingerprint"]


class RunError(RuntimeError):
    """The run cannot start (bad option, incompatible existing output); the message says why."""


@dataclass
class RunConfig:
    """Options of ``fusionbench run``; see the CLI for their meaning."""

    methods: Sequence[str]  # empty: no registration or fusion (``--methods none``)
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
    #: Trainable methods that may be trained on the dataset's train split when no weights were
    #: made on these data (the CLI's ``--fit``: all of them); the others use their shipped weights
    #: (the tables say on what data they were trained) or, without any, are left out as untrained.
    fit: Sequence[str] | bool = False
    #: Keyword settings per method name, passed to the method's factory (``--set pamrfuse+.preset=paper``).
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Fused images made elsewhere, scored as rows (``--external NAME=DIR[,size=crop|pad]``).
    external: Sequence[str] = ()


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
    weights: str = ""  # where a trainable method's weights come from (the tables' weights note)

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
    registration: str | None  # None when the run registers nothing (no methods)
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

def resolve_device(device: str) -> str:
    """``--device`` as a device name (:func:`fusionbench.nn.layers.resolve_device`, imported only
    when a method may use torch); an unknown name or CUDA without a GPU is a :class:`RunError`."""
    from .nn.layers import resolve_device as torch_device

    try:
        return str(torch_device(device))
    except ValueError as exc:
        raise RunError(f"--device: {exc}") from None


def _accepts_device(factory) -> bool:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
    return "device" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def create_configured(name: str, device: str | None = None, settings: dict[str, Any] | None = None):
    """``create_method(name, **settings)`` on ``device`` where the factory takes one."""
    info = get_method_info(name)
    cfg = {"device": device} if device is not None and _accepts_device(info.factory) else {}
    try:
        return create_method(name, **{**(settings or {}), **cfg})
    except TypeError as exc:
        if not settings:
            raise
        raise ValueError(f"{name}: settings {settings} not accepted ({exc})") from None


def is_trainable(name: str, method) -> bool:
    return bool(getattr(method, "trainable", False) or get_method_info(name).trainable)


def method_identity(method) -> dict[str, Any]:
    """What a method's outputs depend on: its configuration and, for trained ones, the digest of
    the weights it holds (so resumed runs and cached train fusions notice new weights)."""
    prov = getattr(method, "provenance", None) or {}
    return {"config": method.config(), "weights": prov.get("weights_sha256")}


def fit_method(name: str, dataset: str, *, cache_dir: Path | None = None, device: str = "cpu",
               settings: dict[str, Any] | None = None, train_cases=None, allow_fit: bool = True, log=None,
               control=None, init: str | Path | None = None):
    """Create one method and give it its weights for ``dataset``'s train split (shipped, cached,
    or fitted now when ``allow_fit``), through :func:`fusionbench.weights.prepare_weights`.

    Returns ``(method, state)`` with ``state`` one of ``"shipped"``, ``"cached"``, ``"fitted"``,
    ``"untrained"``, or ``"none"`` for a method that trains nothing. ``control``: the fit's budget
    and held-out cases (:class:`fusionbench.fitting.FitControl`). ``init``: a weights folder the
    fit starts from (:func:`fusionbench.weights.start_from`).
    """
    from .data.datasets import describe_dataset, load_dataset

    method = create_configured(name, device, settings)
    if not is_trainable(name, method):
        return method, "none"
    if init is not None:
        start_from(method, init)
    cases = train_cases if train_cases is not None else (lambda: load_dataset(dataset, split="train"))
    state = prepare_weights(name, method, cases, cache_dir=cache_dir, allow_fit=allow_fit,
                            data=f"{describe_dataset(dataset)} train split", log=log, control=control)
    return method, state


def _fit_hint(name: str, dataset: str, settings: dict[str, Any] | None) -> str:
    sets = "".join(f" --set {k}={json.dumps(v)}" for k, v in (settings or {}).items())
    return (f"no weights for {dataset}; train it with `fusionbench fit {name} --dataset {dataset}{sets}` "
            "or run with --fit")


# ----------------------------------------------------------------------------------- the tasks

@dataclass
class _Task:
    kind: str  # "register" | "fuse" | "joint" | "external" (a fused image read from a folder)
    method: str
    case_id: str
    pat: np.ndarray  # the input PAT for "register"/"joint", the registered PAT for "fuse"
    mri: np.ndarray
    flow_true: np.ndarray | None = None
    labels_pat: np.ndarray | None = None
    labels_mri: np.ndarray | None = None
    roi: np.ndarray | None = None


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip()


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
            registered, flow = register_step(method, task.pat, task.mri)
            times["registration"] = perf_counter() - t0
            stage = "score registration"
            t0 = perf_counter()
            out["rows"] += score_registration(registered, task.mri, flow, flow_true=task.flow_true,
                                              labels_pat=task.labels_pat, labels_mri=task.labels_mri,
                                              roi=task.roi)
            times["scoring"] = perf_counter() - t0
            out["flow"], out["registered"], pat = flow, registered, registered
        mri = task.mri
        if task.kind in ("fuse", "joint", "external"):
            stage = "fuse"
            t0 = perf_counter()
            if task.kind == "external":
                fused, pat, mri = method.fused_for(task.case_id, pat, mri)
            else:
                fused = fuse_step(method, pat, mri)
                times["fusion"] = perf_counter() - t0
            stage = "score fusion"
            t0 = perf_counter()
            out["rows"] += score_fusion(pat, mri, fused, convention=context["convention"],
                                       metrics=context["metrics"], device=context.get("device"))
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


@dataclass
class _Plan:
    """A validated run: what :func:`run` does, decided before any work."""

    out: Path
    registration: str | None  # None: nothing to register (no methods, no external fusions)
    reg_methods: list[str]  # scored as registration rows: identity, the shared one, those named
    fusion_names: list[str]
    cases: list
    fingerprint: str
    device: str
    metrics: list[str] | None
    external: dict[str, ExternalFusion]


@dataclass
class _Prepared:
    """The created methods with their weights, and what could not start."""

    statuses: dict[str, MethodStatus]
    instances: dict[str, Any]
    errors: dict[str, str]
    configs: dict[str, Any]
    weights: dict[str, str]


def _validate(config: RunConfig) -> _Plan:
    from .data.datasets import dataset_fingerprint, load_dataset

    load_plugins()
    names = list(config.methods)
    infos = {}
    for n in names:
        try:
            infos[n] = get_method_info(n)
        except KeyError as exc:
            raise RunError(str(exc.args[0])) from None
    # External fusions are scored on the registered PAT, so they need the registration too.
    registers = bool(names or config.external)
    registration, reg_info = None, None
    if registers:
        try:
            registration = (config.registration or default_registration()).lower()
            reg_info = get_method_info(registration)
        except (KeyError, ValueError) as exc:
            raise RunError(f"--registration: {exc.args[0]}") from None
        if reg_info.role not in ("registration", "joint"):
            raise RunError(f"--registration {registration!r} is a {reg_info.role} method, not a registration")
    metrics = None
    if config.metrics:
        try:
            metrics = list(fusion_columns(config.convention, config.metrics))
        except ValueError as exc:
            raise RunError(f"--metrics: {exc}") from None
    if config.limit is not None and config.limit < 1:
        raise RunError(f"--limit must be >= 1, got {config.limit}")
    stray = sorted(set(config.settings) - {*names, registration})
    if stray:
        raise RunError(f"--set names method(s) not in this run: {', '.join(stray)}")
    cases = load_dataset(config.dataset, split="test")[: config.limit]
    if not cases:
        raise RunError(f"dataset {config.dataset!r} has no test cases")
    if registers and not all(c.has_mri for c in cases):
        asked = [*names, *(f"--external {t.partition('=')[0]}" for t in config.external)]
        asked = ", ".join(asked[:4]) + (f", ... {len(asked)} in all" if len(asked) > 4 else "")
        raise RunError(f"dataset {config.dataset!r} is PAT-only (no MRI images), but registration and fusion "
                       f"methods need PAT/MRI pairs ({asked}); run it with --methods none --tasks contour,organs "
                       "to evaluate the PAT images")
    external = {}
    for text in config.external:
        try:
            ext = parse_external(text)
            if ext.name in external or ext.name in names or ext.name in list_methods():
                raise ExternalError(f"--external {ext.name}: the name is taken by a method of this run")
            ext.index(cases)
        except ExternalError as exc:
            raise RunError(str(exc)) from None
        external[ext.name] = ext
    any_device = any(_accepts_device(i.factory) for i in [*infos.values(), *([reg_info] if reg_info else [])])
    reg_methods = list(dict.fromkeys([IDENTITY, registration]
                                     + [n for n in names if infos[n].role == "registration"])) if registers else []
    return _Plan(out=Path(config.out), registration=registration, reg_methods=reg_methods,
                 fusion_names=[n for n in names if n not in reg_methods] + list(external), cases=cases,
                 fingerprint=dataset_fingerprint(config.dataset),
                 device=resolve_device(config.device) if any_device else "cpu", metrics=metrics,
                 external=external)


def _prepare_methods(plan: _Plan, config: RunConfig, progress: Progress) -> _Prepared:
    """Create every method with its weights; untrained ones that may not be fitted are left out,
    and a shared registration that is untrained stops the run before any work."""
    from .data.datasets import load_dataset
    from .data.folder import SplitError

    train: dict[str, Any] = {}

    def train_cases():
        """The train split, loaded once; ``None`` when the dataset has none."""
        if "cases" not in train:
            try:
                train["cases"] = load_dataset(config.dataset, split="train")
            except SplitError as exc:
                train["cases"], train["error"] = None, str(exc)
        return train["cases"]

    prep = _Prepared({}, {}, {}, {}, {})
    for n in plan.reg_methods + plan.fusion_names:
        if n in plan.external:
            prep.statuses[n] = MethodStatus(n, "external", total=len(plan.cases),
                                            weights=plan.external[n].describe())
            prep.instances[n] = plan.external[n]
            prep.configs[n] = {"external": str(plan.external[n].folder), "size": plan.external[n].size}
            prep.weights[n] = plan.external[n].describe()
            continue
        role = "registration" if n in plan.reg_methods else get_method_info(n).role
        prep.statuses[n] = MethodStatus(n, role, total=len(plan.cases))
        settings = config.settings.get(n)
        may_fit = config.fit if isinstance(config.fit, bool) else n in config.fit
        if may_fit and get_method_info(n).trainable and train_cases() is None:
            raise RunError(f"--fit {n}: {train['error']}")
        try:
            method, state = fit_method(n, config.dataset, cache_dir=config.cache_dir, device=plan.device,
                                       settings=settings, train_cases=train_cases, allow_fit=may_fit,
                                       log=progress.note)
        except Exception as exc:  # noqa: BLE001 - a method that cannot start fails alone
            prep.errors[n] = f"setup: {_error_text(exc)}"
            prep.configs[n] = None
            continue
        if state == "untrained":
            if n == plan.registration:
                raise RunError(f"--registration {n}: {_fit_hint(n, config.dataset, settings)}")
            prep.statuses[n].untrained = _fit_hint(n, config.dataset, settings)
            progress.note(f"{n}: skipped, {prep.statuses[n].untrained}")
            continue
        prep.instances[n] = method
        prep.configs[n] = method_identity(method)
        if state != "none":
            prep.weights[n] = prep.statuses[n].weights = weights_note(method.provenance, state)
            if state == "shipped-other-data":
                progress.note(f"{n}: no weights trained on {config.dataset}; using {prep.weights[n]}")
    return prep


def _run_record(plan: _Plan, config: RunConfig, prep: _Prepared) -> dict[str, Any]:
    fusion_names = [n for n in plan.fusion_names if not prep.statuses[n].untrained]
    record = {"methods": fusion_names, "registration_methods": plan.reg_methods,
              "external": {n: prep.configs[n] for n in plan.external},
              "registration": plan.registration, "dataset": config.dataset,
              "dataset_fingerprint": plan.fingerprint, "cases": [c.id for c in plan.cases],
              "limit": config.limit, "device": plan.device, "convention": config.convention,
              "metrics": plan.metrics, "versions": _versions(), "method_configs": dict(prep.configs),
              "method_settings": {k: dict(v) for k, v in config.settings.items()},
              "weights": dict(prep.weights),
              "untrained": {n: st.untrained for n, st in prep.statuses.items() if st.untrained}}
    old = _load_run_json(plan.out) if config.resume else None
    if old:  # keep methods of earlier invocations of a resumed run in the report
        for key in ("methods", "registration_methods"):
            record[key] = list(dict.fromkeys(old.get(key, []) + record[key]))
        for key in ("method_configs", "method_settings", "weights"):
            record[key] = {**old.get(key, {}), **record[key]}
    return record


def _fingerprints(plan: _Plan, configs: dict[str, Any]) -> dict[str, str]:
    """Per method, the hash that marks its case files valid: a resumed run redoes the cases of a
    method whose configuration or weights changed, and the fusions after a changed registration."""
    out = {n: config_fingerprint(configs.get(n)) for n in plan.reg_methods + plan.fusion_names}
    for n in plan.fusion_names:
        if n in plan.external or get_method_info(n).needs_alignment:
            out[n] = config_fingerprint(configs.get(n), configs.get(plan.registration))
    return out


def run(config: RunConfig, progress: Progress | None = None) -> RunSummary:
    """Run the benchmark described by ``config``; returns per-method status.

    Validate -> prepare methods -> register -> fuse (each task scores its output) -> assemble.
    Raises :class:`RunError` before any work if an option is invalid, the shared registration has
    no weights, or the output folder holds an incompatible run. Failures of methods never raise:
    they are recorded in the case files. ``config`` is not modified.
    """
    from .results import assemble

    t_start = perf_counter()
    progress = progress or Progress()
    plan = _validate(config)
    plan.out.mkdir(parents=True, exist_ok=True)
    _check_resume(plan.out, config, {"dataset_fingerprint": plan.fingerprint, "registration": plan.registration,
                                     "convention": config.convention, "metrics": plan.metrics})
    prep = _prepare_methods(plan, config, progress)
    plan.fusion_names = [n for n in plan.fusion_names if not prep.statuses[n].untrained]
    atomic_write_bytes(plan.out / "run.json", _json_bytes(_run_record(plan, config, prep)))
    _write_sources(plan.out, plan.cases)
    fingerprints = _fingerprints(plan, prep.configs)
    executor = make_executor(config.jobs, config.scheduler)
    context = {"methods": prep.instances, "convention": config.convention, "metrics": plan.metrics,
               "device": plan.device}  # scoring runs on the GPU (torch path) when this is CUDA
    phase = dict(executor=executor, context=context, out=plan.out, cases=plan.cases, statuses=prep.statuses,
                 method_errors=prep.errors, progress=progress, fingerprints=fingerprints)
    try:
        _run_phase(names=plan.reg_methods, registration=None, **phase,
                   make_task=lambda n, c: _Task("register", n, c.id, c.pat, c.mri, c.flow_true,
                                                c.labels_pat, c.labels_mri, c.roi))
        registered = _registered_inputs(plan, fingerprints)
        _run_phase(names=plan.fusion_names, registration=plan.registration, **phase,
                   make_task=lambda n, c: _fusion_task(n, c, registered, plan.external),
                   missing_error=f"registration {plan.registration!r} failed on this case")
    finally:
        executor.close()
    assemble(plan.out)
    return RunSummary(out=plan.out, registration=plan.registration, methods=prep.statuses,
                      executor=executor.describe(), seconds=perf_counter() - t_start)


def _write_sources(out: Path, cases) -> None:
    for c in cases:
        for role, img in (("pat", c.pat), ("mri", c.mri)):
            path = out / "sources" / c.id / f"{role}.png"
            if img is not None and not path.exists():  # a PAT-only case has no MRI to show
                write_image(path, img)


def _registered_inputs(plan: _Plan, fingerprints: dict[str, str]) -> dict[str, np.ndarray]:
    """The shared registration's output per case, read back from the run folder."""
    registered = {}
    if plan.registration is None:
        return registered
    for c in plan.cases:
        path = plan.out / "registered" / plan.registration / f"{c.id}.npy"
        if _case_done(plan.out, plan.registration, c.id, fingerprints.get(plan.registration)) and path.exists():
            registered[c.id] = np.load(path, allow_pickle=False)
    return registered


def _fusion_task(name: str, case, registered: dict[str, np.ndarray], external) -> _Task | None:
    if name in external:
        if case.id not in registered:
            return None
        return _Task("external", name, case.id, registered[case.id], case.mri)
    if not get_method_info(name).needs_alignment:
        return _Task("joint", name, case.id, case.pat, case.mri, case.flow_true, case.labels_pat,
                     case.labels_mri, case.roi)
    if case.id not in registered:
        return None
    return _Task("fuse", name, case.id, registered[case.id], case.mri)


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
                    registration if task.kind in ("fuse", "external") else None, result,
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
