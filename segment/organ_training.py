"""Training one organ model per image source with the same configuration: reuse of saved models,
local worker processes or a Dask scheduler.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .organ_data import data_hash, stack_images, stack_labels
from .organ_model import OrganModel, training_config

__all__ = ["train_sources", "safe_name"]


def _train_one(source: str, config: dict, images: np.ndarray, labels: np.ndarray, workdir: str,
               threads: int | None, log=None) -> str:
    import torch

    if threads is not None:  # None: in this process, keep the caller's torch / OMP_NUM_THREADS setting
        torch.set_num_threads(max(1, int(threads)))
    model = OrganModel(source=source, config=dict(config)).fit(list(images), list(labels), workdir, log=log)
    if log:
        log(f"organ model {source}: {model.record['steps_run']} steps in {model.record['seconds']:.0f} s")
    return workdir


def train_sources(data: Mapping[str, tuple[Sequence, Sequence]], workdir: str | os.PathLike,
                  preset: str | Mapping[str, Any] = "quick", *, jobs: int | None = None,
                  scheduler: str | None = None, reuse: bool = True, log=None, **overrides: Any
                  ) -> dict[str, OrganModel]:
    """Train one organ model per source with the same configuration, in parallel.

    Parameters
    ----------
    data : mapping source -> (images, labels)
        The training set of every source.
    workdir : path
        Each source's model goes to ``workdir/SOURCE/`` (``config.json`` and ``model.pt``).
    preset, **overrides : the training configuration shared by all sources.
    jobs : int, optional
        Local worker processes (default: one per available core, at most one per source);
        ``1`` trains in this process with its current torch threads (``OMP_NUM_THREADS``); each
        worker process gets ``cores // jobs`` torch threads.
    scheduler : str, optional
        A Dask scheduler address (``tcp://HOST:8786``); needs ``dask[distributed]``.
    reuse : bool
        Load a source's model instead of training when its saved config and training-data hash
        match.
    """
    from fusionbench.executors import default_jobs, pool_map

    config = training_config(preset, **overrides)
    workdir = Path(workdir)
    todo, models = {}, {}
    for source, (images, labels) in data.items():
        folder = workdir / safe_name(source)
        x = stack_images(images, f"{source}/images")
        y = stack_labels(labels, x.shape[1:], config["n_classes"])
        if reuse and (folder / "config.json").exists() and (folder / "model.pt").exists():
            saved = json.loads((folder / "config.json").read_text())
            if saved.get("train_hash") == data_hash(x, y) and all(saved.get(k) == v for k, v in config.items()):
                models[source] = OrganModel.load(folder)
                continue
        todo[source] = (x, y, str(folder))
    if not todo:
        return models
    cores = default_jobs()
    jobs = min(len(todo), cores if jobs is None or jobs <= 0 else jobs)
    threads = max(1, cores // jobs)
    if log:
        log(f"training {len(todo)} organ model(s) ({config['preset']} preset) on {jobs} worker(s)")
    if scheduler:
        from distributed import Client

        with Client(scheduler) as client:
            futures = [client.submit(_train_one, s, config, x, y, f, threads, pure=False)
                       for s, (x, y, f) in todo.items()]
            client.gather(futures)
    elif jobs == 1:
        for s, (x, y, f) in todo.items():
            if log:
                log(f"training the organ model of {s}")
            _train_one(s, config, x, y, f, None, log)
    else:
        for _ in pool_map(_train_one, [(s, config, x, y, f, threads) for s, (x, y, f) in todo.items()], jobs):
            pass
    for s, (_, _, f) in todo.items():
        models[s] = OrganModel.load(f)
    return {s: models[s] for s in data}


def safe_name(source: str) -> str:
    """A source name as a folder name (method names may hold characters such as ``+``)."""
    return "".join(ch if ch.isalnum() or ch in "-_.+" else "_" for ch in str(source))
