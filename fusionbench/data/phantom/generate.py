"""One phantom case: anatomy, misalignment and both renderings from per-case random streams."""
from __future__ import annotations

from typing import Any

import numpy as np

from ...warp import warp
from ..case import ORGAN_IDS, Case
from .anatomy import LEVELS, draw_anatomy, draw_animal
from .config import GENERATOR_VERSION, PhantomConfig, split_of
from .deformation import misalignment
from .render import render_mri, render_pat

__all__ = ["generate_case"]

_STREAMS = {"animal": 0, "anatomy": 1, "deform": 2, "mri": 3, "pat": 4}


def _rng(cfg: PhantomConfig, animal: int, level: str | None, stream: str) -> np.random.Generator:
    level_code = 0 if level is None else LEVELS.index(level) + 1
    return np.random.default_rng(np.random.SeedSequence([int(cfg.seed), int(animal), level_code,
                                                         _STREAMS[stream]]))


def generate_case(cfg: PhantomConfig, animal: int, level: str) -> Case:
    """Render one cross-section (pure and deterministic in ``cfg``, ``animal`` and ``level``).

    Parameters
    ----------
    cfg : PhantomConfig
        Rendering parameters and seed.
    animal : int
        Animal id (its split is :func:`split_of`).
    level : str
        One of :data:`LEVELS`.

    Returns
    -------
    Case
        id ``"a017_thorax"``; ``meta`` holds level, animal, split, px_mm, pat_scale, pat_zero,
        pat_saturated, max_disp_px, has_tumour, seed, misalign, generator_version and the inverse
        field ``flow_mri_to_pat`` (and ``fluence``, ``p0`` when ``cfg.keep_physics``).
    """
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}; expected one of {LEVELS}")
    split = split_of(int(animal))
    traits = draw_animal(_rng(cfg, animal, None, "animal"), cfg.tumour_prob)
    labels_mri = draw_anatomy(level, traits, _rng(cfg, animal, level, "anatomy"), cfg.size, cfg.fov_mm,
                              version=cfg.version)
    flow_true, flow_inv, max_disp = misalignment(cfg, _rng(cfg, animal, level, "deform"), labels_mri > 0)
    labels_pat = warp(labels_mri, flow_inv, order=0) if max_disp > 0 else labels_mri.copy()
    mri = render_mri(cfg, labels_mri, _rng(cfg, animal, level, "mri"))
    pat, signed, scale, phi, p0 = render_pat(cfg, labels_pat, _rng(cfg, animal, level, "pat"))
    meta: dict[str, Any] = {
        "level": level, "animal": int(animal), "split": split, "px_mm": cfg.px_mm,
        "pat_scale": scale, "pat_zero": cfg.pat_zero,
        "pat_white": cfg.pat_white, "pat_signed": "signed = (pat - pat_zero) / (pat_white - pat_zero) * pat_scale",
        "pat_saturated": float(np.mean((pat <= 0) | (pat >= 1))),
        "max_disp_px": max_disp, "has_tumour": bool((labels_mri == ORGAN_IDS["tumour"]).any()),
        "seed": int(cfg.seed), "misalign": cfg.misalign, "fluence": cfg.fluence, "version": cfg.version,
        "generator_version": GENERATOR_VERSION, "flow_mri_to_pat": flow_inv,
    }
    if cfg.keep_physics:
        meta["fluence"] = phi
        meta["p0"] = p0.astype(np.float32)
    return Case(id=f"a{int(animal):03d}_{level}", pat=pat, mri=mri, labels_mri=labels_mri, labels_pat=labels_pat,
                flow_true=flow_true, meta=meta)
