#!/usr/bin/env bash
# Times a training step on a lent GPU: burn's wgpu convolutions against ape's CubeCL kernels
# (src/model/ops/cube.rs), each layer alone, and PyTorch CUDA beside them. Issue 17 keeps ape's
# kernels off by default on wgpu until this has run.
#
# Here (the build machine, x86-64), once per build:
#   cargo bench --profile dev -p ape-training --bench train_step --no-run
#   mkdir -p .device && grep -qx '/.device/' .git/info/exclude || echo /.device/ >> .git/info/exclude
#   objcopy --strip-all "$(ls -t "$CARGO_TARGET_DIR"/debug/deps/train_step-* | grep -v '\.d$' | head -1)" /tmp/train_step
#   gzip -c /tmp/train_step > .device/train_step.gz     # ~17 MB of the 64 MiB a call may carry
# Then one device call (carry [".device", ".gl"], the .gl loaders as the device README says):
#   for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig; bash training/tools/device_conv_bench.sh
# Its output lands in $OUT/conv-bench.txt. The bench trains on the demo phantom there (no
# ../shared travels); what is timed is the step, not the data.
set -uo pipefail
out="${OUT:-/tmp}"
gunzip -c .device/train_step.gz > /tmp/train_step && chmod +x /tmp/train_step || exit 1
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"; } \
  | tee "$out/conv-bench.txt"
run() {
  timeout -s INT "$1" env APE_BENCH_DEVICE=wgpu "${@:2}" /tmp/train_step --bench 2>&1 \
    | grep -v XDG_RUNTIME | tee -a "$out/conv-bench.txt"
}
# Smaller workloads for a dry run on lavapipe: DEVICE_BENCH_PAIRS=1 DEVICE_BENCH_STEPS=1
# DEVICE_BENCH_LAYERS=0.
pairs="${DEVICE_BENCH_PAIRS:-4,8}"
steps="${DEVICE_BENCH_STEPS:-15}"
# Steps at 4 and 8 pairs, the two paths alternated twice, then PyTorch on CUDA (the bench runs it).
run 300 APE_BENCH_PAIRS="$pairs" APE_BENCH_STEPS="$steps" APE_BENCH_PATHS=burn,ape,burn,ape
# Each kind of layer alone, burn's against ape's.
if [ "${DEVICE_BENCH_LAYERS:-1}" != 0 ]; then
  run 150 APE_BENCH_PAIRS= APE_BENCH_STEPS=10 APE_BENCH_LAYERS=1
fi
