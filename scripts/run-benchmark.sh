#!/usr/bin/env bash
# Sets up .venv (first call only) and runs every fusion method on the built-in phantom test split.
# Results, tables and figures go to runs/phantom-all (or the --out you pass); a rerun resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh
exec .venv/bin/fusionbench run --methods all --dataset phantom --out runs/phantom-all --resume "$@"
