#!/usr/bin/env bash
# How the pack stylegan-faces64 is made: the bundled dcgan-faces64 generator distilled into a StyleGAN
# with W+ codes, then the same encoders, predictor and boundaries as dcgan-faces64 (2-core CPU; every
# step resumable: rerun the script to continue, a finished step is skipped).
#
#   bash scripts/stylegan_pack/build.sh RUNS_DIR [DCGAN_RUNS_DIR]      (../shared beside the repository)
#
# Environment: ARCH (stylegan or stylegan2 student, default stylegan2: no droplet blob), KIMG (distillation images,
# thousands, default 300), PROCS (data-parallel processes of the training steps, default 1), CHUNK
# (minutes per distillation chunk, default 120: the script stops after
# a chunk and says so; rerun it to go on), THREADS (default 1); for a smoke run of the whole chain at toy
# sizes: CONV_KIMG (20), ENC_KIMG (10), BOUNDARY_SAMPLES (6000), SEARCH_SAMPLES (128), FIG_SAMPLES (1000),
# FIGURES (docs/stylegan-faces64: where the distillation's figures go).
# DCGAN_RUNS_DIR holds the photos aligned to the teacher's framing that scripts/dcgan_pack/build.sh made
# (celeba_train for the domain-guided encoder); they are made here when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
R=${1:-$HOME/runs/stylegan}
D=${2:-$HOME/runs/dcgan}
S=${SHARED:-../shared}/data
I=".venv/bin/idinvert"
PY=".venv/bin/python"
ARCH=${ARCH:-stylegan2}
KIMG=${KIMG:-300}
CHUNK=${CHUNK:-120}
PROCS=${PROCS:-1}
CONV_KIMG=${CONV_KIMG:-20}
ENC_KIMG=${ENC_KIMG:-10}
FIGURES=${FIGURES:-docs/stylegan-faces64}
export OMP_NUM_THREADS=${THREADS:-1}
mkdir -p "$R"
. scripts/pack_steps.sh

# 1. the student, in chunks; a chunk that ends before KIMG leaves a checkpoint and stops the script
if [ ! -f "$R/distill/pack/config.json" ]; then
    step "distill ($ARCH, $KIMG kimg, chunk of $CHUNK min)"
    if [ -f "$R/distill/checkpoint.pt" ]; then
        train distill --teacher dcgan-faces64 --run-dir "$R/distill" --resume --max-minutes "$CHUNK" \
            --name stylegan-faces64  # the final chunk writes the pack: it needs the name too
    else
        train distill --teacher dcgan-faces64 --arch "$ARCH" --kimg "$KIMG" --run-dir "$R/distill" \
            --name stylegan-faces64 --max-minutes "$CHUNK"
    fi
    [ -f "$R/distill/pack/config.json" ] || { step "distillation not finished yet: rerun to continue"; exit 0; }
fi

# 2. photos in the teacher's framing (train split for the encoder, test splits for evaluation only)
prep "$D/celeba_train" dcgan-faces64 celeba6k/images.tar celeba6k/attributes.csv train
prep "$D/celeba_test" dcgan-faces64 celeba6k/images.tar celeba6k/attributes.csv test
prep "$D/utk_test" dcgan-faces64 utkface/images.tar utkface/labels.csv test

# 3. encoders: conventional (generated pairs), then domain-guided on real CelebA train photos,
#    warm-started from it, against a discriminator trained from scratch (distillation trains none)
run "$R/conv" train-conventional --pack "$R/distill/pack" --kimg "$CONV_KIMG" --batch 32 --lr 3e-4 --snapshot-kimg 5
run "$R/enc" train-encoder --pack "$R/conv/pack" --data "$D/celeba_train" --warm-start --kimg "$ENC_KIMG" --batch 16 \
    --lr 2e-4 --snapshot-kimg 2

# 4. the bundled utkface64 predictor reading the matching crop of this framing; boundaries in W+ with
#    the layer-wise search (which layers each attribute lives in)
[ -f "$R/predictor.done" ] || { $PY scripts/dcgan_pack/add_predictor.py "$R/enc/pack"; touch "$R/predictor.done"; }
boundaries "$R/enc/pack" --samples "${BOUNDARY_SAMPLES:-6000}" --layers auto \
    --search-samples "${SEARCH_SAMPLES:-128}"

# 5. label-free directions shipped with the pack (seconds)
if [ ! -f "$R/directions.done" ]; then
    $I directions --method sefa --model "$R/enc/pack" --num 8 --out "$R/directions/sefa" --add-to-pack --quiet
    $I directions --method ganspace --model "$R/enc/pack" --num 8 --samples 10000 --seed 0 \
        --out "$R/directions/ganspace" --add-to-pack --quiet
    touch "$R/directions.done"
fi

# 6. the figures of the distillation itself (fidelity to the teacher, style mixing, cost)
$PY benchmarks/distill_figures.py --student "$R/enc/pack" --teacher dcgan-faces64 --run "$R/distill" \
    --samples "${FIG_SAMPLES:-1000}" --cutoff 4 2 --out "$FIGURES/distill.json" --pictures "$FIGURES"
$PY benchmarks/run_costs.py --out "$FIGURES/training.json" distillation="$R/distill" conventional="$R/conv" \
    domain-guided="$R/enc"
step "done: $R/enc/pack (bundle it with scripts/bundle_pack.py --name stylegan-faces64)"
