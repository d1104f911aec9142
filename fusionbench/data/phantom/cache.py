"""The phantom's on-disk case cache and :func:`load_phantom`, which fills it in parallel."""
from __future__ import annotations

import os

from ...executors import pool_map
from ..cache import NpzCache
from ..case import Case
from .config import GENERATOR_VERSION, PhantomConfig, split_animals
from .generate import generate_case

__all__ = ["load_phantom"]

_ARRAY_META = ("flow_mri_to_pat", "fluence", "p0")


def _case_to_entry(case: Case):
    arrays = {"pat": case.pat, "mri": case.mri, "labels_mri": case.labels_mri, "labels_pat": case.labels_pat,
              "flow_true": case.flow_true}
    meta = {}
    for k, v in case.meta.items():
        if k in _ARRAY_META:
            arrays[k] = v
        else:
            meta[k] = v
    return arrays, meta


def _entry_to_case(name: str, arrays: dict, meta: dict) -> Case:
    meta = dict(meta)
    for k in _ARRAY_META:
        if k in arrays:
            meta[k] = arrays[k]
    return Case(id=name, pat=arrays["pat"], mri=arrays["mri"], labels_mri=arrays["labels_mri"],
                labels_pat=arrays["labels_pat"], flow_true=arrays["flow_true"], meta=meta)


def _cache_for(cfg: PhantomConfig, cache_dir) -> NpzCache:
    return NpzCache("phantom", GENERATOR_VERSION, cfg.render_params(), root=cache_dir)


def _generate_into_cache(cfg: PhantomConfig, animal: int, level: str, cache_dir) -> str:
    case = generate_case(cfg, animal, level)
    _cache_for(cfg, cache_dir).save(case.id, *_case_to_entry(case))
    return case.id


def load_phantom(split: str = "test", cfg: PhantomConfig | None = None, *, cache_dir=None, jobs: int | None = None,
                 progress: bool = False) -> list[Case]:
    """The cases of one split, generated once and then read from the on-disk cache.

    Parameters
    ----------
    split : {"train", "val", "test"}
        Which animals (splits are disjoint by animal).
    cfg : PhantomConfig, optional
        Defaults to ``PhantomConfig()`` (48 test pairs at 256², moderate misalignment).
    cache_dir : path-like, optional
        Cache root (default ``$FUSIONBENCH_CACHE`` or ``~/.cache/fusionbench``).
    jobs : int, optional
        Worker processes for missing cases (default: all cores); ``1`` generates in this process.
    progress : bool
        Show a progress bar while generating.

    Returns
    -------
    list of Case
        Ordered by animal, then level (head to tail).
    """
    cfg = cfg if cfg is not None else PhantomConfig()
    cache = _cache_for(cfg, cache_dir)
    wanted = [(a, lv) for a in split_animals(cfg, split) for lv in cfg.levels]
    names = [f"a{a:03d}_{lv}" for a, lv in wanted]
    missing = [w for w, name in zip(wanted, names) if name not in cache]
    if missing:
        jobs = (os.cpu_count() or 1) if jobs is None else int(jobs)
        if jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {jobs}")
        bar = _progress(progress, len(missing), f"phantom {split}")
        with bar as (advance):
            if jobs == 1 or len(missing) == 1:
                for a, lv in missing:
                    _generate_into_cache(cfg, a, lv, cache_dir)
                    advance()
            else:
                for _ in pool_map(_generate_into_cache, [(cfg, a, lv, cache_dir) for a, lv in missing], jobs):
                    advance()
    cases = []
    for (a, lv), name in zip(wanted, names):
        hit = cache.load(name)
        if hit is None:  # unreadable entry (e.g. a disk problem): regenerate in-process
            _generate_into_cache(cfg, a, lv, cache_dir)
            hit = cache.load(name)
        cases.append(_entry_to_case(name, *hit))
    return cases


class _progress:
    """Context manager yielding an ``advance()`` callable; a rich progress bar when enabled."""

    def __init__(self, enabled: bool, total: int, label: str):
        self.enabled, self.total, self.label = enabled, total, label

    def __enter__(self):
        if not self.enabled:
            return lambda: None
        from rich.progress import Progress

        self._p = Progress(transient=True)
        self._p.__enter__()
        task = self._p.add_task(self.label, total=self.total)
        return lambda: self._p.advance(task)

    def __exit__(self, *exc):
        if self.enabled:
            self._p.__exit__(*exc)
        return False
