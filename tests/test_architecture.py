"""The layering rules of pyproject.toml's import-linter contracts hold (run as part of the tests)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _lint_imports() -> list[str]:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert exe, "import-linter is a dev dependency (pip install -e '.[dev]')"
    return [exe, "--no-cache"]


def test_import_contracts_are_kept():
    result = subprocess.run(_lint_imports(), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "5 kept, 0 broken" in result.stdout


def test_the_contracts_catch_a_forbidden_import(tmp_path):
    """A core module that imports a plugin breaks the first contract: the check is not vacuous."""
    config = (ROOT / "pyproject.toml").read_text()
    probe = ROOT / "fusionbench" / "_contract_probe.py"
    probe.write_text("import baselines.fusion  # noqa: F401\n")
    try:
        (tmp_path / "pyproject.toml").write_text(config)
        result = subprocess.run(_lint_imports() + ["--config", str(tmp_path / "pyproject.toml")], cwd=ROOT,
                                capture_output=True, text=True, timeout=600)
    finally:
        probe.unlink()
    assert result.returncode == 1
    assert "The core names no plugin and no task" in result.stdout and "BROKEN" in result.stdout
