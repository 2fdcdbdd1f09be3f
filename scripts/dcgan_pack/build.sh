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
. scripts/pack_steps.sh

# 1. the generator, converted with strict checks, and the framing its samples use
[ -d "$R/base" ] || $I convert --dcgan generateme --out "$R/base" --name dcgan-faces64
[ -f "$R/framing.json" ] || $PY scripts/dcgan_pack/measure_framing.py "$R/base" --samples 2000 --out "$R/framing.json"

# 2. real photos aligned to that framing (train splits for training, test splits for evaluation only)
prep "$R/celeba_train" "$R/base" celeba6k/images.tar celeba6k/attributes.csv train
prep "$R/celeba_test" "$R/base" celeba6k/images.tar celeba6k/attributes.csv test
prep "$R/utk_test" "$R/base" utkface/images.tar utkface/labels.csv test

# 3. encoders: the conventional one (Eq. 1) on generated pairs, then the domain-guided one on real
#    CelebA train photos, warm-started from it, against a discriminator trained from scratch
run "$R/conv" train-conventional --pack "$R/base" --kimg 20 --batch 32 --lr 3e-4 --snapshot-kimg 5
run "$R/enc" train-encoder --pack "$R/conv/pack" --data "$R/celeba_train" --warm-start --kimg 10 --batch 16 \
    --lr 2e-4 --snapshot-kimg 2

# 4. the attribute predictor (the bundled utkface64 one, reading the matching crop of this framing),
#    then boundaries in Z
[ -f "$R/predictor.done" ] || { .venv/bin/python scripts/dcgan_pack/add_predictor.py "$R/enc/pack"; touch "$R/predictor.done"; }
boundaries "$R/enc/pack" --samples 6000 --search-samples 64
step "done: $R/enc/pack"
