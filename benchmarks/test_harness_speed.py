"""Speed of the harness itself (pytest-benchmark; not correctness tests).

``test_harness_overhead``: one serial run of the reference methods on a small phantom set; the
overhead is the run's wall time minus the registration, fusion and scoring time the case files
record, i.e. what the harness adds (loading cached data, pickling, writing PNG/NPY/JSON files,
assembling results.csv). Target: under 5 % of the run for classic methods. Reported in
``extra_info`` (``overhead_fraction``, ``overhead_per_case_s``).

``test_main_job_on_a_fresh_machine``: ``fusionbench run --methods all --jobs 2`` on the default
phantom set with an empty cache, as a fresh clone runs the main job; it must train nothing. It takes
minutes; it runs only with ``FUSIONBENCH_FULL_BENCH=1``.

    .venv/bin/pytest benchmarks/test_harness_speed.py --benchmark-only -s
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from time import perf_counter

import pytest

from fusionbench.data.datasets import load_dataset
from fusionbench.results import load_results
from fusionbench.runner import RunConfig, run

SPEC = "phantom:n=8,size=128"


@pytest.fixture(scope="module")
def warm_cache():
    load_dataset(SPEC, "test")  # generation is the dataset's cost, not the harness's


def test_harness_overhead(benchmark, tmp_path, warm_cache):
    outs = iter(range(100))

    def one_run():
        out = tmp_path / f"run{next(outs)}"
        t0 = perf_counter()
        run(RunConfig(methods=["average", "maximum"], out=out, dataset=SPEC, registration="identity", jobs=1))
        return out, perf_counter() - t0

    out, wall = benchmark.pedantic(one_run, rounds=3, iterations=1)
    df = load_results(out)
    inside = df.loc[df["group"] == "time", "value"].sum()
    n_tasks = df[df["group"] == "time"].groupby(["method", "case"]).ngroups
    benchmark.extra_info.update(overhead_fraction=(wall - inside) / wall,
                                overhead_per_case_s=(wall - inside) / n_tasks, wall_s=wall,
                                method_and_metric_s=inside, tasks=n_tasks)
    print(f"\nharness overhead: {(wall - inside):.3f} s of {wall:.3f} s "
          f"({100 * (wall - inside) / wall:.1f} %), {(wall - inside) / n_tasks * 1e3:.1f} ms per task")


@pytest.mark.skipif(os.environ.get("FUSIONBENCH_FULL_BENCH") != "1", reason="set FUSIONBENCH_FULL_BENCH=1")
def test_main_job_on_a_fresh_machine(benchmark, tmp_path):
    """The main job as a fresh clone runs it: a cache holding only what scripts/setup-env.sh puts
    there (the ImageNet VGG-16 features), so the phantom is generated and nothing is trained: every
    trainable method has shipped weights for the phantom. Two worker processes."""
    import shutil

    from fusionbench.nn.vgg import installed_path

    cmd = [sys.executable, "-m", "fusionbench.cli", "run", "--methods", "all", "--dataset", "phantom",
           "--jobs", "2", "--out", str(tmp_path / "all")]
    env = {**os.environ, "FUSIONBENCH_CACHE": str(tmp_path / "cache")}
    (tmp_path / "cache").mkdir()
    if installed_path() is not None:
        shutil.copy(installed_path(), tmp_path / "cache" / installed_path().name)

    def full():
        return subprocess.run(cmd, capture_output=True, text=True, env=env,
                              cwd=Path(__file__).resolve().parents[1])

    result = benchmark.pedantic(full, rounds=1, iterations=1)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "fitting" not in result.stdout and "untrained" not in result.stdout, result.stdout[-3000:]
    assert not (tmp_path / "cache" / "weights").exists()  # no fit was cached either
