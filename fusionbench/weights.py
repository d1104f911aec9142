"""The trainable-weights protocol: one cache key, one weights folder, one provenance record.

A trainable method (``trainable = True``) implements four things and nothing about caching:

``train_config() -> dict``
    Everything that changes its trained weights besides the data: training settings, seed,
    architecture options and a code ``"version"`` that is bumped when the network or the loss
    changes, and the identity of any weights it builds on (e.g. another method's shipped file).
``fit(cases, workdir) -> dict``
    Train on ``cases`` (the train split), keeping checkpoints in ``workdir`` so a killed fit
    resumes; returns the metrics at training time (losses, validation scores) for the record.
``save_weights(folder)`` / ``load_weights(folder)``
    Write / read the weight files of the method into / from a folder.
``shipped_weights() -> Path | None``
    The folder of the weights shipped with the plugin (``None`` when it ships none).

Everything else lives here. A weights folder holds the method's files and ``provenance.json``
(:func:`provenance_record`): the method, its ``train_config``, the fingerprint of the training
data, the metrics at training time, a digest of the weight files and the versions that made them.
Fitted weights are cached under ``ROOT/METHOD/KEY/`` with ``KEY`` = :func:`weights_key` of the
method name, its ``train_config`` and the data fingerprint, so a version bump or any changed
training setting is a new key: nothing stale is ever loaded. Shipped weights count for a dataset
exactly when their provenance names the same ``train_config`` and data fingerprint.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["PROVENANCE_FILE", "WeightsError", "data_fingerprint", "canonical", "weights_key",
           "weights_root", "cache_folder", "weights_digest", "weights_note", "read_provenance", "provenance_record", "load_into",
           "shipped_state", "start_from", "prepare_weights", "converged", "ship_weights"]

PROVENANCE_FILE = "provenance.json"


def weights_note(record: dict[str, Any], state: str | None = None) -> str:
    """One short line for tables: where the weights come from, what they were trained on and
    their digest, e.g. ``shipped: phantom train split [227a4051]``."""
    if not record:
        return "untrained"
    data = record.get("data", {})
    origin = {"shipped": "shipped: ", "shipped-other-data": "shipped: ", "cached": "fit: ",
              "fitted": "fit: ", "given": "given: "}.get(state or "", "trained on ")
    return (f"{origin}{data.get('description') or data.get('fingerprint', '?')} "
            f"[{record.get('weights_sha256', '?')[:8]}]")


class WeightsError(RuntimeError):
    """A weights folder is missing, incomplete or does not fit the method; the message says which."""


def canonical(obj: Any) -> Any:
    """``obj`` as JSON reads it back (tuples become lists, keys strings), so configs compare equal
    whether they come from a live method or from a provenance file."""
    return json.loads(json.dumps(obj, sort_keys=True, default=repr))


def data_fingerprint(cases: Sequence[Any]) -> str:
    """Content hash of training cases (ids and the float32 pixels of PAT and MRI), 16 hex digits.

    Two datasets that render the same cases get the same fingerprint, whatever their spec, folder
    or file times: it names what the weights saw, not where it came from.
    """
    h = hashlib.sha256()
    for case in cases:
        h.update(str(case.id).encode())
        h.update(np.ascontiguousarray(case.pat, dtype=np.float32).tobytes())
        h.update(np.ascontiguousarray(case.mri, dtype=np.float32).tobytes())
    return h.hexdigest()[:16]


def weights_key(name: str, train_config: dict[str, Any], fingerprint: str, init: str | None = None) -> str:
    """The cache key of a method's weights: its name, ``train_config``, data fingerprint and the
    digest of the weights a fit starts from (``None``: the seeded initialisation)."""
    payload = {"method": name.lower(), "train_config": canonical(train_config), "data": fingerprint}
    if init is not None:
        payload["init"] = init
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def weights_root(cache_dir: str | Path | None = None) -> Path:
    """Where fitted weights are cached: ``cache_dir``, else ``weights/`` under the user cache
    (``$FUSIONBENCH_CACHE`` or ``~/.cache/fusionbench``), shared by ``fusionbench fit``, every run
    and the task step."""
    from .data.cache import default_cache_dir

    return Path(cache_dir) if cache_dir is not None else default_cache_dir() / "weights"


def cache_folder(name: str, method, fingerprint: str, cache_dir: str | Path | None = None) -> Path:
    """The cache folder of a fit of ``method`` as it is now on data with ``fingerprint``: its
    ``weights/`` holds the weights once complete, its ``work/`` the checkpoints of a fit in
    progress. A fit starts from the weights the method holds (shipped weights trained on other
    data: fine-tuning), so their digest is part of the key."""
    init = (getattr(method, "provenance", None) or {}).get("weights_sha256")
    return weights_root(cache_dir) / name.lower() / weights_key(name, method.train_config(), fingerprint, init)


def weights_digest(folder: str | Path) -> str:
    """SHA-256 (16 hex digits) over the names and bytes of a folder's weight files."""
    h = hashlib.sha256()
    files = sorted(p for p in Path(folder).iterdir() if p.is_file() and p.name != PROVENANCE_FILE)
    for p in files:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def read_provenance(folder: str | Path) -> dict[str, Any]:
    """The provenance record of a weights folder; :class:`WeightsError` if there is none."""
    path = Path(folder) / PROVENANCE_FILE
    try:
        return json.loads(path.read_text())
    except OSError:
        raise WeightsError(f"{folder}: not a weights folder (no {PROVENANCE_FILE})") from None
    except ValueError as exc:
        raise WeightsError(f"{path}: unreadable provenance ({exc})") from None


def _versions() -> dict[str, str]:
    import importlib.metadata as md
    import platform

    out = {"python": platform.python_version()}
    for pkg in ("fusionbench", "torch", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def provenance_record(name: str, method, fingerprint: str, *, data: str = "", metrics: dict | None = None,
                      seconds: float | None = None, folder: str | Path | None = None) -> dict[str, Any]:
    """The provenance of weights ``method`` holds after a fit on data with ``fingerprint``."""
    record = {"method": name.lower(), "train_config": canonical(method.train_config()),
              "data": {"fingerprint": fingerprint, "description": data},
              "metrics": canonical(metrics or {}), "train_seconds": None if seconds is None else round(seconds, 1),
              "device": str(getattr(method, "device", "cpu")), "created": time.strftime("%Y-%m-%d %H:%M:%S"),
              "versions": _versions()}
    if folder is not None:
        record["weights_sha256"] = weights_digest(folder)
    return record


def load_into(method, folder: str | Path, *, check_config: bool = True) -> dict[str, Any]:
    """Load a weights folder into ``method`` and set ``method.provenance``; returns the record.

    With ``check_config`` the record's ``train_config`` must equal the method's: weights trained
    with other settings (or another code version) are refused instead of silently used.
    """
    folder = Path(folder)
    record = read_provenance(folder)
    if check_config and canonical(method.train_config()) != record.get("train_config"):
        raise WeightsError(f"{folder}: weights were trained with another train_config than "
                           f"{getattr(method, 'name', type(method).__name__)}'s current one")
    method.load_weights(folder)
    method.provenance = {**record, "folder": str(folder)}  # where they were read (not in the file)
    return record


def shipped_state(method, fingerprint: str | None = None) -> str:
    """How the method's shipped weights stand: ``"none"`` (it ships none), ``"stale"`` (trained
    with another ``train_config``: retrain them), ``"other-data"`` (right config, trained on other
    data than ``fingerprint``) or ``"match"``."""
    folder = method.shipped_weights() if hasattr(method, "shipped_weights") else None
    if folder is None or not (Path(folder) / PROVENANCE_FILE).is_file():
        return "none"
    record = read_provenance(folder)
    if record.get("train_config") != canonical(method.train_config()):
        return "stale"
    if fingerprint is not None and record.get("data", {}).get("fingerprint") != fingerprint:
        return "other-data"
    return "match"


def _accepts_control(method) -> bool:
    try:
        return "control" in inspect.signature(method.fit).parameters
    except (TypeError, ValueError):
        return False


def _fit_into(name: str, method, cases, folder: Path, fingerprint: str, data: str, log, control=None) -> None:
    init = (getattr(method, "provenance", None) or {}).get("weights_sha256")
    work = folder / "work"
    work.mkdir(parents=True, exist_ok=True)
    if log:
        log(f"fitting {name} on {data or 'the train split'} ({len(cases)} cases; cache {folder}; "
            f"checkpoints and loss curves in {work})")
    t0 = time.perf_counter()
    # A third-party fit(cases, workdir) without ``control`` still works: no budget, no curve.
    metrics = (method.fit(cases, work, control=control) if control is not None and _accepts_control(method)
               else method.fit(cases, work)) or {}
    seconds = time.perf_counter() - t0
    if isinstance(metrics.get("train_seconds"), (int, float)):
        seconds = metrics["train_seconds"]  # the whole schedule's, over every resumed session
    staging = folder / f"weights.tmp{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    method.save_weights(staging)
    record = provenance_record(name, method, fingerprint, data=data, metrics=metrics, seconds=seconds,
                               folder=staging)
    record["init_weights"] = init
    (staging / PROVENANCE_FILE).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    final = folder / "weights"
    shutil.rmtree(final, ignore_errors=True)
    staging.replace(final)  # the provenance file inside marks the folder complete


def _load_shipped(method) -> None:
    folder = method.shipped_weights()
    if (getattr(method, "provenance", None) or {}).get("weights_sha256") != read_provenance(folder).get(
            "weights_sha256"):
        load_into(method, folder)


def start_from(method, folder: str | Path) -> dict[str, Any]:
    """Load a weights folder into ``method`` as the starting point of a fit (fine-tuning).

    Unlike :func:`load_into` the folder may come from other settings, as long as the networks
    agree (a new loss, schedule or branch on the same layers): the weights' digest enters the fit's
    cache key and its provenance's ``init_weights``, and the folder is not "given" weights to run
    with (:func:`prepare_weights` still fits)."""
    try:
        record = load_into(method, folder, check_config=False)
    except WeightsError:
        raise
    except (RuntimeError, KeyError, ValueError) as exc:  # load_state_dict: missing or misshapen tensors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"{folder}: cannot start {getattr(method, 'name', None) or type(method).__name__} "
                           f"from these weights (its networks differ): {first}") from None
    method.provenance.pop("folder", None)
    return record


def _given_folder(method) -> Path | None:
    """The weights folder the method loaded when it was created, unless it is its shipped one."""
    folder = (getattr(method, "provenance", None) or {}).get("folder")
    if not folder:
        return None
    shipped = method.shipped_weights() if hasattr(method, "shipped_weights") else None
    if shipped is not None and Path(folder).resolve() == Path(shipped).resolve():
        return None
    return Path(folder)


def prepare_weights(name: str, method, train_cases: Sequence[Any] | Callable[[], Sequence[Any]] | None, *,
                    cache_dir: str | Path | None = None, allow_fit: bool = False, data: str = "",
                    log: Callable[[str], None] | None = None, control=None) -> str:
    """Give a trainable ``method`` its weights for a dataset whose train split is ``train_cases``.

    In this order: the weights folder the method was created with (``weights=FOLDER``: the user's
    choice, used as it is, never refitted; ``"given"``); the shipped weights when their provenance
    names the method's ``train_config`` and these data (``"shipped"``); a cached fit under :func:`weights_root` with the same
    :func:`weights_key` (``"cached"``); with ``allow_fit``, a fit now, cached, its checkpoints in
    the cache folder's ``work/`` so an interrupted fit resumes (``"fitted"``; it starts from the
    shipped weights when they have the method's ``train_config``, else from the seeded
    initialisation, and the key and the provenance's ``init_weights`` say which); else the shipped
    weights although they were trained on other data (``"shipped-other-data"``: the tables say
    so); else ``"untrained"``, the method left as it is. ``train_cases`` may be a callable, called
    once here; ``None`` (or a callable returning ``None``) means the dataset has no train split.
    ``control`` (:class:`fusionbench.fitting.FitControl`) gives a fit its time budget and held-out
    cases; a spent budget raises :class:`~fusionbench.fitting.BudgetExhausted` with nothing cached
    but the checkpoint.
    """
    if _given_folder(method) is not None:
        return "given"
    cases = train_cases() if callable(train_cases) else train_cases
    fingerprint = data_fingerprint(cases) if cases else None
    shipped = shipped_state(method, fingerprint)
    if shipped == "match" and fingerprint is not None:
        _load_shipped(method)
        return "shipped"
    if fingerprint is not None:
        # Start from the shipped weights (a fit fine-tunes them) unless it already holds a start.
        if shipped == "other-data" and not (getattr(method, "provenance", None) or {}).get("weights_sha256"):
            _load_shipped(method)
        folder = cache_folder(name, method, fingerprint, cache_dir)
        if (folder / "weights" / PROVENANCE_FILE).is_file():
            load_into(method, folder / "weights")
            return "cached"
        if allow_fit:
            _fit_into(name, method, cases, folder, fingerprint, data, log, control)
            load_into(method, folder / "weights")
            return "fitted"
    elif allow_fit:
        raise WeightsError(f"{name}: the dataset has no train split to fit on")
    if shipped in ("match", "other-data"):
        _load_shipped(method)
        return "shipped-other-data"
    return "untrained"


def converged(record: dict[str, Any]) -> tuple[bool, str]:
    """Whether a provenance record's validation curve has stopped improving, and why (not)."""
    val = (record.get("metrics") or {}).get("validation")
    if not val:
        return False, "the fit has no validation curve (fit on a dataset with a val split)"
    trend = val.get("trend") or {}
    if trend.get("plateaued") is None:
        return False, f"too few validation points in the last {100 * trend.get('tail', 0.2):.0f} % of the run"
    gain = 100 * trend["relative_gain"]
    if not trend["plateaued"]:
        return False, (f"validation {val['metric']} still improves by {gain:.1f} % over the last "
                       f"{100 * trend['tail']:.0f} % of the run; train longer (more steps or epochs)")
    change = f"improves by only {gain:.1f} %" if gain >= 0 else f"gets worse by {-gain:.1f} %"
    return True, f"validation {val['metric']} {change} over the last {100 * trend['tail']:.0f} % of the run"


def ship_weights(method, folder: str | Path, *, require_converged: bool = True) -> Path:
    """Copy a weights folder (with its provenance) to the method's shipped location and return it.

    The maintainers' way to re-ship weights after ``fusionbench fit METHOD --ship``: only weights
    whose validation curve has stopped improving (:func:`converged`) unless ``require_converged``
    is False; the copy is checked to load into ``method`` under its current ``train_config``.
    """
    name = getattr(method, "name", type(method).__name__)
    target = method.shipped_weights() if hasattr(method, "shipped_weights") else None
    if target is None:
        raise WeightsError(f"{name} ships no weights")
    if require_converged:
        ok, why = converged(read_provenance(folder))
        if not ok:
            raise WeightsError(f"{name}: not shipped: {why}")
    target = Path(target)
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(folder, staging, ignore=shutil.ignore_patterns("work"))
    shutil.rmtree(target, ignore_errors=True)
    staging.replace(target)
    load_into(method, target)
    return target
