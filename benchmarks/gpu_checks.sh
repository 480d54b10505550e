#!/usr/bin/env bash
# Issue 15's GPU checks in one prepared command, for a session that is lent a device machine (an H200 here).
# Every result is a file of benchmarks/results/ that also lands in $OUT (docs/performance.md, "On a GPU").
#
#   1. the device: nvidia-smi, torch, the card;
#   2. the model step at hidden 64/128/256 in bf16-mixed (bench_train.py --device cuda --bf16);
#   3. torch.profiler of one production step, 4,000 stocks (profile_step.py --device cuda --bf16);
#   4. with --epoch: the production-size run, synth -> build -> one full epoch -> evaluate
#      (bench_production.py; about 5-8 minutes on 16 cores, so run it as a second call if 1-3 took long).
#
# The device image has torch, lightning, torch-geometric, pandas and pyarrow, but not polars or omegaconf:
# fetch their wheels here first, into .whl/ (ignored by git), then carry it:
#
#   bash benchmarks/gpu_checks.sh --wheels                      # here, once
#   run(command="bash benchmarks/gpu_checks.sh", carry=[".whl"], timeout_s=420)
#   run(command="bash benchmarks/gpu_checks.sh --epoch", carry=[".whl"], timeout_s=590)
set -uo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--wheels" ]]; then
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    for wheel in polars==2.1.0 polars-runtime-32==2.1.0 omegaconf==2.4.0; do
        python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
            --platform any -d .whl "$wheel" || exit 1
    done
    ls -la .whl
    exit 0
fi

OUT="${OUT:-/tmp/gpu_checks}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    export PYTHONPATH="/tmp/site:$PWD/src"
else
    export PYTHONPATH="$PWD/src"
fi

{
    nvidia-smi
    python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0), torch.cuda.is_bf16_supported())"
} 2>&1 | tee "$OUT/device.txt"

if [[ "${1:-}" == "--epoch" ]]; then
    python3 benchmarks/bench_production.py --work /tmp/prod 2>&1 | tee "$OUT/production.log"
    cp benchmarks/results/production_gpu.json "$OUT/" 2>/dev/null
    exit 0
fi

(cd benchmarks && timeout 240 python3 bench_train.py --device cuda --bf16 --steps 50 --stocks 4000 --days 1) \
    2>&1 | tee "$OUT/train.log"
cp benchmarks/results/train_cuda_bf16.json "$OUT/" 2>/dev/null
(cd benchmarks && timeout 120 python3 profile_step.py --device cuda --bf16 --stocks 4000 --steps 10) \
    2>&1 | tee "$OUT/profile.log"
cp benchmarks/results/profile_cuda_bf16.json "$OUT/" 2>/dev/null
