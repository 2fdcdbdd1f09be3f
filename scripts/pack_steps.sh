# Shell steps the pack build scripts share (source it; it expects I=idinvert, PY=python, S=shared data).
# Each step is resumable: a finished one is skipped, an unfinished training run resumes.

step() { echo "== $(date +%H:%M:%S) $*"; }

prep() {  # prep OUT FRAMING SOURCE LABELS SPLIT: held-out or train photos aligned to FRAMING at 64 px
    [ -f "$1/index.json" ] || { step "prepare $1"; $I prepare-data "$S/$3" --labels "$S/$4" --split "$5" \
        --resolution 64 --align "$2" --out "$1"; }
}

train() {  # train VERB ARGS…: a training verb, data-parallel under torchrun when PROCS > 1 (one thread or GPU
    # per process; --batch is the global batch, so the recipe does not change with PROCS)
    if [ "${PROCS:-1}" -gt 1 ]; then .venv/bin/torchrun --standalone --nproc_per_node="$PROCS" -m idinvert "$@"
    else $I "$@"; fi
}

run() {  # run DIR VERB ARGS…: start, or resume an unfinished run; DIR/done marks a finished one
    local dir=$1; shift
    if [ -f "$dir/done" ]; then return; fi
    step "$*"
    if [ -f "$dir/checkpoint.pt" ]; then train "$@" --run-dir "$dir" --resume; else train "$@" --run-dir "$dir"; fi
    touch "$dir/done"
}

boundaries() {  # boundaries PACK ARGS… : train-boundary for each attribute the pack does not have yet
    local pack=$1; shift
    for a in age gender smile eyeglasses mouth_open blond_hair; do
        if ! $PY -c "import sys; from pathlib import Path; from idinvert.pack import read_pack_config; \
sys.exit(0 if sys.argv[2] in (read_pack_config(Path(sys.argv[1])).get('boundaries') or {}) else 1)" "$pack" "$a"; then
            step "boundary $a"
            $I train-boundary --model "$pack" --attribute "$a" "$@"
        fi
    done
}
