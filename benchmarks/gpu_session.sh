#!/usr/bin/env bash
# The GPU check of benchmarks/gpu_check_h200.md in one prepared script, for a machine with a CUDA torch but
# without this project or sigpy installed (a device lent for a few minutes: no network there).
#
#   bash benchmarks/gpu_session.sh wheels      # here: the project, sigpy and PyWavelets as wheels in .whl/
#   bash benchmarks/gpu_session.sh run OUT     # there, from the repository root (.whl/ copied along): GPU tests,
#                                              # gpu_check.py, and the Quick start's example on CUDA, reports in OUT
#
# The project installs into /tmp/site, not the checkout: `ambient_science.operators` is the top-level `operators/`
# folder mapped by pyproject.toml, so the checkout itself is not importable as the package, and the tests run from
# /tmp so that the checkout's `ambient_science/` folder does not shadow the installed one.
set -uo pipefail
case "${1:-}" in
wheels)
    rm -rf .whl && mkdir -p .whl
    python -m pip wheel -q --no-deps --no-build-isolation . -w .whl || exit 1
    python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl sigpy==0.1.27 PyWavelets==1.9.0 || exit 1
    ls -la .whl
    ;;
run)
    out=${2:?give the output folder}
    mkdir -p "$out"
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
    repo=$PWD
    t0=$(date +%s)
    nvidia-smi -L
    python3 -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())"
    (cd /tmp && timeout 90 python3 -m pytest -q -m gpu "$repo"/tests/test_mri_operator.py \
        "$repo"/tests/test_samplers.py -p no:cacheprovider) 2>&1 | tail -15 | tee "$out/pytest_gpu.txt"
    timeout 300 python3 benchmarks/gpu_check.py --device cuda --out "$out/gpu_check" --max-seconds 250 \
        > "$out/gpu_check.log" 2>&1
    echo "gpu_check rc=$? at $(( $(date +%s) - t0 )) s"
    timeout 170 python3 examples/mri_knee.py --device cuda --out /tmp/mri_knee_cuda --no-progress \
        > "$out/mri_knee_cuda.log" 2>&1
    echo "mri_knee rc=$? at $(( $(date +%s) - t0 )) s"
    cp /tmp/mri_knee_cuda/metrics.json "$out/mri_knee_cuda_metrics.json" 2>/dev/null
    tail -12 "$out/mri_knee_cuda.log"
    ;;
*)
    echo "usage: bash benchmarks/gpu_session.sh wheels | run OUT" >&2
    exit 2
    ;;
esac
