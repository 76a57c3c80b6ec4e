#!/usr/bin/env bash
# Full-size ESMFold on a GPU (see bench/gpu_esmfold.py); stops itself at 8 minutes.
# Usage from the repository root: bench/gpu_esmfold.sh [--json figures.json] [--workdir DIR]
# bench/gpu_esmfold.sh --smoke: the same steps on a CPU with the tiny model (seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-.venv/bin/python}"
[ -x "$python" ] || python=python3
exec timeout --signal=INT 480 "$python" -m bench.gpu_esmfold "$@"
