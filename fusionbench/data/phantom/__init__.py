"""The built-in PAT/MRI phantom: deterministic synthetic mouse cross-sections (DESIGN §7).

Each case is one cross-section of one synthetic nude mouse at one of four body levels (head,
thorax, upper abdomen, lower abdomen; optional subcutaneous 4T1-like tumour), with

* ``labels_mri``: the anatomy label map (ids of :data:`fusionbench.data.ORGANS`) in the MRI frame;
* ``mri``: a 7 T T2-weighted-like rendering (per-organ contrast table, texture, Gaussian PSF,
  smooth multiplicative bias field, Rician magnitude noise; Gudbjartsson & Patz 1995);
* ``pat``: an MSOT-like rendering in its own frame: initial pressure ``p0 = Γ μa Φ`` with the
  fluence Φ from the 2-D diffusion approximation and light entering through the whole skin
  (``fluence="fast"``: ``exp(-μeff d)``), then a limited-view (270°, 128 elements) ring-array
  acquisition with band-limited detection, noise and (off by default) a speed-of-sound error, and
  back-projection.
  The reconstruction is signed; it is stored as ``0.5 + 0.5 · signed / pat_scale`` clipped to
  [0, 1], so zero (the water) is mid-gray, as vendor 8-bit exports are. ``pat_scale`` is a
  robust percentile of ``|signed|`` (saturation is rare) and is recorded in ``meta``;
* ``flow_true``: the displacement with ``warp(pat, flow_true)`` aligned to ``mri``, and
  ``labels_pat``, the same anatomy in the PAT frame. The anatomy is drawn in the MRI frame,
  warped into the PAT frame with the inverse field (``meta["flow_mri_to_pat"]``), and the PAT
  physics is rendered there, so fluence and reconstruction artefacts are not warped.

The per-organ tables :data:`DEFAULT_MRI_T2` and :data:`DEFAULT_PAT_MUA` make the modalities'
complementarity explicit (seed paper, Zhong et al., Table 4): kidneys, spine, heart, lungs and
brain are clear in MRI but weak at depth in PAT; spleen and tumour are close to the surrounding
tissue in MRI but strongly absorbing (blood-rich) in PAT. Absorption values at 800 nm and the
geometry follow the planning notes (data notes §1b).

Splits are by animal: test animals have ids 0..499, validation 500..999, train 1000.., so the
test set depends only on ``seed`` and ``n_test_animals``. Every animal gives one case per level.
A case depends only on the rendering parameters, ``seed``, the animal id and the level
(``numpy.random.SeedSequence([seed, animal, level, stream])``), hence is identical on any machine
and independent of the split sizes; cases are cached on disk per case.

Modules: :mod:`.config` (parameters, tables, splits), :mod:`.anatomy` (label maps),
:mod:`.deformation` (the misalignment field), :mod:`.render` and :mod:`.pat_physics` (the two
modalities), :mod:`.generate` (one case), :mod:`.cache` (the on-disk cache, :func:`load_phantom`)
and :mod:`.export` (display, preview, a folder of files; ``fusionbench phantom`` writes one).
"""
from __future__ import annotations

from .anatomy import LEVELS
from .cache import load_phantom
from .config import (DEFAULT_MRI_T2, DEFAULT_PAT_MUA, DEFAULT_VERSION, GENERATOR_VERSION, MISALIGN_PRESETS, SPLITS,
                     VERSIONS, PhantomConfig, split_animals, split_of)
from .export import LABEL_COLOURS, display, preview_grid, write_phantom_folder
from .generate import generate_case

__all__ = ["GENERATOR_VERSION", "VERSIONS", "DEFAULT_VERSION", "LEVELS", "SPLITS", "MISALIGN_PRESETS", "DEFAULT_MRI_T2", "DEFAULT_PAT_MUA",
           "PhantomConfig", "generate_case", "split_animals", "split_of", "load_phantom", "display",
           "write_phantom_folder", "preview_grid", "LABEL_COLOURS"]
