#!/usr/bin/env bash
# The default pack's label-free directions (SeFa and GANSpace), shipped in the pack, with their preview
# grids under docs/directions/<pack>/, then the evaluation whose edit-quality section (boundaries and directions,
# in-domain vs MSE codes, LEC) goes into docs/results.md.
#
#   bash scripts/directions_figures.sh [PACK] [TEST_IMAGES] [EVAL_OUT]
#
# PACK defaults to the bundled default pack: --add-to-pack then writes into src/idinvert/packs/<pack>/
# (directions/*.npy and config.json "directions"), which is what the package ships. The two direction
# runs take seconds on a CPU; the evaluation about as long as the one in docs/results.md plus LEC
# (8 images re-inverted per boundary, direction and method: --lec-count).
set -euo pipefail
cd "$(dirname "$0")/.."
PACK=${1:-default}
IMAGES=${2:-data/utkface-test-64}
EVAL=${3:-results/eval-directions}
IDINVERT=${IDINVERT:-.venv/bin/idinvert}
PYTHON=${PYTHON:-.venv/bin/python}
NUM=${NUM:-8}
# previews go under the pack's real name (the default is an alias)
NAME=$("$PYTHON" -c "import sys; from idinvert.pack import resolve_pack; print(resolve_pack(sys.argv[1]).name)" "$PACK")
DOCS=docs/directions/$NAME

# SeFa over every layer (the method's default) and GANSpace on 10 000 prior samples, seed 0.
"$IDINVERT" directions --method sefa --model "$PACK" --num "$NUM" --out "$DOCS/sefa" --add-to-pack
"$IDINVERT" directions --method ganspace --model "$PACK" --num "$NUM" --samples 10000 --seed 0 \
    --out "$DOCS/ganspace" --add-to-pack

# Edit quality of every boundary and direction on 100 spread test photos (resumable).
"$IDINVERT" evaluate --pack "$PACK" --images "$IMAGES" --out "$EVAL" --count 100 --spread --resume
echo "directions: $DOCS/{sefa,ganspace}/index.html; edit quality: $EVAL/results.md (section 'Edit quality')"
