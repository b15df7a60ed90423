#!/usr/bin/env bash
# Train the shipped priors' GPU recipes (configs/pretrained/gpu/) on a GPU lent for a few minutes, in one call:
# the data are prepared there with the CPU recipes' own `prepare` commands (the same records, bit for bit), three
# trainings share the GPU (black-hole-eht-64, and the knee pair: ambient from R = 4 k-space, clean baseline), and
# every run stops on a wall-clock deadline with a checkpoint. What comes back (OUT, one tarball per run, in parts: its
# metrics.jsonl and one checkpoint) is exported and evaluated HERE, where git and the test sets are:
#
#   bash benchmarks/gpu_session.sh wheels          # here: the project, sigpy, PyWavelets as wheels in .whl/
#   bash benchmarks/gpu_train.sh OUT               # there (.whl/ carried): tarballs + logs in OUT
#   cat OUT/black-hole-eht-64.tar.gz.part* | tar xz -C runs/pretrained-gpu
#   ambient-science prepare black-holes ...         # here too: export reads the run's data file for the card and
#                                                   # its checks (the command in the config's header, ~4 min)
#   ambient-science export-prior runs/pretrained-gpu/black-hole-eht-64 --name black-hole-eht-64 --kind ambient \
#       --config configs/pretrained/gpu/black-hole-eht-64.toml --machine "..." --overwrite
#
# The knee pair's checkpoints are taken at the same step (the last one both runs reached), so the pair compares
# the two routes at an equal number of images seen.
#
# To CONTINUE a run in a later session, carry its unpacked directory (one checkpoint with its optimizer state,
# ~18 MB for the black hole) with the wheels, e.g. carry [".whl", "runs/pretrained-gpu/black-hole-eht-64"]: every
# training starts with --resume=auto (a carried run goes on from its checkpoint, with its data order and RNG
# states; without one it starts fresh), and the data are prepared again there from the same seeds.
#
# Environment (defaults in brackets): GPU_TRAIN_DEADLINE [520] seconds from the start by which the trainings have
# stopped, GPU_TRAIN_DEVICE [cuda], BH_RECORDS [16384], KNEE_VOLUMES [96], GPU_TRAIN_DATA [runs/pretrained: the
# configs' data folder; a data file already there is used as it is, never overwritten], GPU_TRAIN_RUNS
# [runs/pretrained-gpu], GPU_TRAIN_INSTALL [1: install .whl/ into /tmp/site, as gpu_session.sh does; 0: use the
# installed package]. A smoke test on a CPU, in folders of its own (so that no tiny data file or run stands where
# the recipes' do):
#   GPU_TRAIN_DEVICE=cpu GPU_TRAIN_DEADLINE=150 BH_RECORDS=64 KNEE_VOLUMES=8 GPU_TRAIN_INSTALL=0 \
#       GPU_TRAIN_DATA=/tmp/gts/data GPU_TRAIN_RUNS=/tmp/gts/runs bash benchmarks/gpu_train.sh /tmp/gts/out
set -uo pipefail
out=${1:?usage: bash benchmarks/gpu_train.sh OUT}
deadline=${GPU_TRAIN_DEADLINE:-520}
device=${GPU_TRAIN_DEVICE:-cuda}
bh_records=${BH_RECORDS:-16384}
knee_volumes=${KNEE_VOLUMES:-96}
data=${GPU_TRAIN_DATA:-runs/pretrained}
runs=${GPU_TRAIN_RUNS:-runs/pretrained-gpu}
t0=$(date +%s)
mkdir -p "$out" "$data" "$runs"
if [ "${GPU_TRAIN_INSTALL:-1}" = 1 ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1
cli() { python3 -P -m ambient_science.cli "$@"; }  # -P: the checkout's ambient_science/ must not shadow the installed one
elapsed() { echo $(( $(date +%s) - t0 )); }
minutes_left() { python3 -c "print(max(0.5, ($deadline - $(elapsed)) / 60))"; }
nvidia-smi -L 2>/dev/null
log=$out/logs
mkdir -p "$log"
prepared() {  # FILE: true (and say so) when it exists already: used as it is, never overwritten
    [ -e "$1" ] && echo "using the existing $1" >&2
}

# -- the black hole: data (one process, the CPU recipe's command), then training -------------------------------
bh() {
    prepared "$data/black_holes_64.h5" || OMP_NUM_THREADS=8 cli prepare black-holes "$data/black_holes_64.h5" \
        --records "$bh_records" --npix 64 --fov-uas 160 --seed 100 --generator broad --split both \
        > "$log/bh_prepare.log" 2>&1 || return 1
    echo "black-hole records ready at $(elapsed) s"
    OMP_NUM_THREADS=4 cli train configs/pretrained/gpu/black-hole-eht-64.toml --device "$device" --resume=auto \
        --data "$data/black_holes_64.h5" --out-dir "$runs/black-hole-eht-64" --max-minutes "$(minutes_left)" \
        > "$log/bh_train.log" 2>&1
}

# -- the knees: volumes in 8 processes (per-volume seeds: the same volumes as one call), k-space, two trainings --
knee() {
    local per=$(( (knee_volumes + 7) / 8 )) pids=() s
    [ -e "$data/knee_r4_64.h5" ] && [ -e "$data/knee_r1_64.h5" ] && per=$(( knee_volumes + 1 ))  # no volumes needed
    for s in $( [ "$per" -le "$knee_volumes" ] && seq 100 "$per" $(( 100 + knee_volumes - 1 ))); do
        n=$(( 100 + knee_volumes - s < per ? 100 + knee_volumes - s : per ))
        OMP_NUM_THREADS=1 cli prepare synthetic-knee "$data/knee_raw" --volumes "$n" --slices 12 \
            --recon-size 128 --seed "$s" > "$log/knee_raw_$s.log" 2>&1 &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || return 1; done
    prepared "$data/knee_r4_64.h5" || OMP_NUM_THREADS=2 cli prepare fastmri "$data/knee_raw" \
        -o "$data/knee_r4_64.h5" --acceleration 4 --center-fraction 0.08 --resolution 64 --seed 100 \
        > "$log/knee_r4.log" 2>&1 &
    prepared "$data/knee_r1_64.h5" || OMP_NUM_THREADS=2 cli prepare fastmri "$data/knee_raw" \
        -o "$data/knee_r1_64.h5" --acceleration 1 --drop-fraction 0 --resolution 64 --seed 100 \
        > "$log/knee_r1.log" 2>&1 &
    wait -n && wait -n || return 1
    echo "knee k-space ready at $(elapsed) s"
    local m
    m=$(minutes_left)
    for kind in r4 clean; do
        local file=$data/knee_r4_64.h5
        [ $kind = clean ] && file=$data/knee_r1_64.h5
        OMP_NUM_THREADS=2 cli train configs/pretrained/gpu/mri-knee-synthetic-$kind.toml --device "$device" \
            --resume=auto --data "$file" --out-dir "$runs/mri-knee-synthetic-$kind" --max-minutes "$m" \
            > "$log/knee_$kind.log" 2>&1 &
    done
    wait
}

bh & bh_pid=$!
knee & knee_pid=$!
wait $bh_pid; echo "black hole rc=$? at $(elapsed) s"
wait $knee_pid; echo "knees rc=$? at $(elapsed) s"

# -- pack: metrics.jsonl + one checkpoint per run (the knee pair at their common last step) ----------------------
last_step() { ls "$1"/checkpoints 2>/dev/null | sed -n 's/^checkpoint-0*\([0-9][0-9]*\)$/\1/p' | sort -n | tail -1; }
pack() {  # run name, step
    local run=$runs/$1 stage=/tmp/stage/$1 name
    name=$(printf 'checkpoint-%08d' "$2")
    [ -d "$run/checkpoints/$name" ] || { echo "$1: no $name"; return 1; }
    rm -rf "$stage" && mkdir -p "$stage/checkpoints"
    cp -r "$run/checkpoints/$name" "$stage/checkpoints/" && echo "$name" > "$stage/checkpoints/latest"
    cp "$run"/metrics.jsonl "$stage/" 2>/dev/null
    # in parts of 15 MB (what comes back from the machine is at most 16 MiB a file): cat them before tar x
    tar czf - -C /tmp/stage "$1" | split -b 15000000 -d - "$out/$1.tar.gz.part" && echo "packed $1 at step $2"
}
common=$(python3 -c "import sys; s=[int(a) for a in sys.argv[1:] if a]; print(min(s) if len(s) == 2 else '')" \
    "$(last_step "$runs/mri-knee-synthetic-r4")" "$(last_step "$runs/mri-knee-synthetic-clean")")
step=$(last_step "$runs/black-hole-eht-64")
[ -n "$step" ] && pack black-hole-eht-64 "$step"
if [ -n "$common" ]; then
    for kind in r4 clean; do
        # the last checkpoint at or before the common step; none there (a run this short): its first, said so
        s=$(ls "$runs/mri-knee-synthetic-$kind/checkpoints" | sed -n 's/^checkpoint-0*\([0-9][0-9]*\)$/\1/p' \
            | sort -n | awk -v c="$common" 'NR == 1 {f = $1} $1 <= c {k = $1} END {print (k == "" ? f : k)}')
        [ "$s" != "$common" ] && echo "mri-knee-synthetic-$kind: packed at step $s (the pair's common step: $common)"
        pack mri-knee-synthetic-$kind "$s"
    done
fi
for f in "$log"/*_train.log "$log"/knee_r4.log "$log"/knee_clean.log; do [ -f "$f" ] && tail -3 "$f"; done
tar czf "$out/logs.tar.gz" -C "$out" logs && rm -rf "$log"
echo "done at $(elapsed) s"
