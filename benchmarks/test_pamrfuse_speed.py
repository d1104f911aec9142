"""PAMRFuse+ speed: CPU inference per 256² pair, training step time per stage and preset.

Run: ``pytest benchmarks/test_pamrfuse_speed.py --benchmark-only``. The ``paper`` training steps
on CPU take minutes each; they run only with ``FUSIONBENCH_BENCH_PAPER=1``.
"""
import os
import warnings

import numpy as np
import pytest
import torch

from pamrfuse.method import PAMRFusePlus
from pamrfuse.presets import get_config
from pamrfuse.trainer import Trainer

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
PAPER = os.environ.get("FUSIONBENCH_BENCH_PAPER") == "1"


@pytest.mark.parametrize("preset", ["lite", "paper"])
def test_inference_256(benchmark, preset):
    rng = np.random.default_rng(0)
    pat, mri = rng.random((256, 256), dtype=np.float32), rng.random((256, 256), dtype=np.float32)
    method = PAMRFusePlus(preset=preset, weights=None, device="cpu")
    benchmark.pedantic(lambda: method.fuse(pat, mri), rounds=2, iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("stage", [1, 2])
@pytest.mark.parametrize("preset", ["tiny", "lite", pytest.param("paper", marks=pytest.mark.skipif(
    not PAPER, reason="set FUSIONBENCH_BENCH_PAPER=1 (minutes per step on CPU)"))])
def test_training_step(benchmark, tmp_path, preset, stage):
    cfg = get_config(preset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = Trainer(cfg, tmp_path, device="cpu", progress=False)
    x = torch.rand(cfg.batch, 1, cfg.size, cfg.size)
    y = torch.rand(cfg.batch, 1, cfg.size, cfg.size)
    step = trainer.step_stage1 if stage == 1 else trainer.step_stage2
    benchmark.pedantic(lambda: step(x, y), rounds=2, iterations=1, warmup_rounds=1)
