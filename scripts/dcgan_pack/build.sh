#!/usr/bin/env bash
# How the bundled pack dcgan-faces64 was made (2-core CPU; each step resumable, rerun to continue).
#   bash scripts/dcgan_pack/build.sh RUNS_DIR        (../shared beside the repository)
set -euo pipefail
cd "$(dirname "$0")/../.."
R=${1:-$HOME/runs/dcgan}
S=${SHARED:-../shared}/data
I=".venv/bin/idinvert"
PY=".venv/bin/python"
mkdir -p "$R"
step() { echo "== $(date +%H:%M:%S) $*"; }

# 1. the generator, converted with strict checks, and the framing its samples use
[ -d "$R/base" ] || $I convert --dcgan generateme --out "$R/base" --name dcgan-faces64
[ -f "$R/framing.json" ] || $PY scripts/dcgan_pack/measure_framing.py "$R/base" --samples 2000 --out "$R/framing.json"

# 2. real photos aligned to that framing (train splits for training, test splits for evaluation only)
prep() {  # prep NAME SOURCE LABELS SPLIT
    [ -f "$R/$1/index.json" ] || { step "prepare $1"; $I prepare-data "$S/$2" --labels "$S/$3" --split "$4" \
        --resolution 64 --align "$R/base" --out "$R/$1"; }
}
prep celeba_train celeba6k/images.tar celeba6k/attributes.csv train
prep celeba_test celeba6k/images.tar celeba6k/attributes.csv test
prep utk_test utkface/images.tar utkface/labels.csv test

# 3. encoders: the conventional one (Eq. 1) on generated pairs, then the domain-guided one on real
#    CelebA train photos, warm-started from it, against a discriminator trained from scratch
run() {  # run DIR VERB ARGS…: start, or resume an unfinished run; DIR/done marks a finished one
    local dir=$1; shift
    if [ -f "$dir/done" ]; then return; fi
    step "$*"
    if [ -f "$dir/checkpoint.pt" ]; then $I "$@" --run-dir "$dir" --resume; else $I "$@" --run-dir "$dir"; fi
    touch "$dir/done"
}
run "$R/conv" train-conventional --pack "$R/base" --kimg 20 --batch 32 --lr 3e-4 --snapshot-kimg 5
run "$R/enc" train-encoder --pack "$R/conv/pack" --data "$R/celeba_train" --warm-start --kimg 10 --batch 16 \
    --lr 2e-4 --snapshot-kimg 2

# 4. the attribute predictor (the bundled utkface64 one, reading the matching crop of this framing),
#    then boundaries in Z
[ -f "$R/predictor.done" ] || { .venv/bin/python scripts/dcgan_pack/add_predictor.py "$R/enc/pack"; touch "$R/predictor.done"; }
for a in age gender smile eyeglasses mouth_open blond_hair; do
    $PY - "$R/enc/pack" "$a" <<'PYEOF' || { step "boundary $a"; $I train-boundary --model "$R/enc/pack" --attribute "$a" --samples 6000 --search-samples 64; }
import sys
from idinvert.pack import read_pack_config
from pathlib import Path
sys.exit(0 if sys.argv[2] in (read_pack_config(Path(sys.argv[1])).get("boundaries") or {}) else 1)
PYEOF
done
step "done: $R/enc/pack"
