#!/usr/bin/env bash
# The device check in one command: every verb on the device, the device against the CPU, speed.
#   bash scripts/gpu_check.sh OUTDIR [--device cuda|cpu] [--quick | --tiny] [--budget-minutes M]
# Writes OUTDIR/gpu_check.md, OUTDIR/gpu_check.json and OUTDIR/gpu_check_logs.tar.gz; exits 0 only
# when no check failed. The logic is in scripts/gpu_check.py (--help lists every option).
# Python: $IDINVERT_PYTHON if set, else .venv (made by scripts/setup.sh), else a python3 that already
# has torch (a GPU machine's own, with src/ on PYTHONPATH), else scripts/setup.sh makes .venv first.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ] || [ "${1#-}" != "$1" ]; then
    echo "usage: bash scripts/gpu_check.sh OUTDIR [--device cuda|cpu] [--quick | --tiny] [...]" >&2
    exit 2
fi
PY=${IDINVERT_PYTHON:-}
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then
        PY=.venv/bin/python
    elif python3 -c "import torch" 2>/dev/null; then
        PY=python3
        export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
    else
        bash scripts/setup.sh
        PY=.venv/bin/python
    fi
fi
exec "$PY" scripts/gpu_check.py "$@"
