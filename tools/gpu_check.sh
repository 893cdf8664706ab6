#!/usr/bin/env bash
# Device check of clip-es's GPU path (docs/gpu.md), for a Linux machine with a GPU (NVIDIA:
# its driver ships the Vulkan driver) and no internet. Run from a checkout of this repository:
#
#   tools/gpu_check.sh [--bin DIR] [--debs DIR] [--train-tests FILE] [--iters N]
#
#   --bin DIR          holds `clip-es` and `bench_train`, built with the `vulkan` feature:
#                        cargo build --release -p clip-es --features vulkan
#                        cargo build --release -p clip-es-train --example bench_train --features vulkan
#                      (default: target/release and target/release/examples)
#   --debs DIR         .deb files of the Vulkan loader (libvulkan1), installed with dpkg when
#                      the machine has no libvulkan.so.1 (needs root)
#   --train-tests FILE clip-es-train's Vulkan test binary (`cargo test --release -p clip-es-train
#                      --features vulkan --test vulkan --no-run` prints its path); it reads no
#                      file, so it runs on any machine
#   --iters N          timed training iterations per benchmark (default 5)
#
# It prints, each on a line starting with `figure:`:
#   adapter                         the Vulkan adapter `--device vulkan` runs on
#   check.train_loss                2 training iterations (tiny DeepLab-v2, examples): the largest
#                                   relative loss difference vulkan vs flex (pass: <= 1e-5)
#   check.predict_label_maps        label maps of one checkpoint on vulkan vs flex (pass: identical)
#   check.no_device_error           --device vulkan with no Vulkan driver: exit 2 and a clear error
#   check.train_tests               the Vulkan test binary (with --train-tests)
#   deeplab.s_per_iter              DeepLab-v2 ResNet-101, MSC, batch 5, crop 321, on vulkan
#   deeplab.peak_mib                its peak GPU memory (nvidia-smi memory.used above idle)
#   decoder.s_per_iter / .peak_mib  clip-decoder, batch 5, 20x20 grid of 768-d features
#   torch.*                         the same with PyTorch CUDA (tools/bench_train.py --device
#                                   cuda), where python3 has torch with CUDA
#   cams.*                          CAMs s/photo (ViT-B/16 random weights, example photos):
#                                   only where `clip-es cams` takes --device; PyTorch's side needs
#                                   tools/bench_cams.py --device cuda, which is still to be written
# Every step has a time limit; the whole check stays under 8 minutes. Exit 1 if a check fails.
set -uo pipefail
cd "$(dirname "$0")/.."

bin=target/release
debs=""
train_tests=""
iters=5
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin="$2"; shift 2 ;;
    --debs) debs="$2"; shift 2 ;;
    --train-tests) train_tests="$2"; shift 2 ;;
    --iters) iters="$2"; shift 2 ;;
    *) echo "error: unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
clip_es="$bin/clip-es"
bench="$bin/examples/bench_train"
[ -x "$bench" ] || bench="$bin/bench_train"
[ -x "$clip_es" ] || { echo "error: no clip-es binary in $bin (--bin)" >&2; exit 2; }

failed=0
figure() { echo "figure: $1 = $2"; }
fail() { echo "FAILED: $1" >&2; failed=1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -m 700 "$work/xdg"
export XDG_RUNTIME_DIR="$work/xdg"
start=$SECONDS

# The Vulkan loader; NVIDIA's driver brings the Vulkan driver (ICD) itself.
if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1'; then
  if [ -n "$debs" ] && [ "$(id -u)" -eq 0 ]; then
    dpkg -i "$debs"/*.deb >/dev/null || fail "dpkg -i $debs/*.deb"
  else
    echo "error: no Vulkan loader (libvulkan.so.1): install libvulkan1, or give --debs DIR with its .deb files and run as root" >&2
    exit 1
  fi
fi
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
fi

gpu_used() {
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 2>/dev/null | head -n 1
}

# Runs "$@" with a time limit, sampling GPU memory; sets PEAK_MIB (above idle, or n/a).
with_peak() {
  local limit="$1"; shift
  local idle peak used pid
  idle="$(gpu_used)"
  peak="${idle:-}"
  timeout "$limit" "$@" &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    used="$(gpu_used)"
    if [ -n "$used" ] && [ -n "$peak" ] && [ "$used" -gt "$peak" ]; then peak="$used"; fi
    sleep 0.2
  done
  wait "$pid"
  local rc=$?
  if [ -n "$idle" ] && [ -n "$peak" ]; then PEAK_MIB=$((peak - idle)); else PEAK_MIB=n/a; fi
  return $rc
}

# 1. The checks (the Vulkan tests' equivalents, on the example photos).
split="$work/split.txt"
printf '%s\n' astronaut camera chelsea horse >"$split"
train() { # DEVICE OUT
  timeout 300 "$clip_es" train --arch deeplab-v2 --images examples/images --masks examples/gt \
    --split "$split" --out "$2" --random-init --width 2 --blocks 1,1,1,1 --rates 2,4 --crop 65 \
    --batch 2 --iter-size 1 --iters 2 --lr 1e-3 --device "$1"
}
if train vulkan "$work/train-vulkan" 2>"$work/train-vulkan.err"; then
  figure adapter "$(head -n 1 "$work/train-vulkan.err" | sed 's/^device: //')"
  train flex "$work/train-flex" 2>"$work/train-flex.err" || fail "train --device flex"
  worst="$(paste -d ' ' <(grep -o '"loss":[^,}]*' "$work/train-flex/train.jsonl" | cut -d: -f2) \
    <(grep -o '"loss":[^,}]*' "$work/train-vulkan/train.jsonl" | cut -d: -f2) |
    awk '{d = ($2 - $1) / $1; if (d < 0) d = -d; if (d > w) w = d} END {printf "%.3g", w}')"
  figure check.train_loss "$worst"
  awk -v w="$worst" 'BEGIN {exit !(w <= 1e-5)}' || fail "training losses differ by $worst"
  ok=identical
  for device in flex vulkan; do
    timeout 300 "$clip_es" predict --checkpoint "$work/train-flex/final.safetensors" \
      --images examples/images --split "$split" --out "$work/pred-$device" --device "$device" \
      2>"$work/pred-$device.err" || { fail "predict --device $device"; ok=failed; }
  done
  for f in "$work"/pred-flex/*.png; do
    cmp -s "$f" "$work/pred-vulkan/$(basename "$f")" || ok="differ ($(basename "$f"))"
  done
  figure check.predict_label_maps "$ok"
  [ "$ok" = identical ] || fail "label maps: $ok"
else
  cat "$work/train-vulkan.err" >&2
  fail "train --device vulkan"
fi
VK_ICD_FILENAMES="$work/none.json" VK_DRIVER_FILES="$work/none.json" \
  "$clip_es" train --arch deeplab-v2 --images examples/images --masks examples/gt \
  --split "$split" --out "$work/nodevice" --random-init --device vulkan 2>"$work/nodevice.err"
rc=$?
if [ $rc -eq 2 ] && grep -q -- '--device vulkan' "$work/nodevice.err" && ! grep -q panicked "$work/nodevice.err"; then
  figure check.no_device_error "exit 2: $(head -c 120 "$work/nodevice.err")..."
else
  figure check.no_device_error "exit $rc"
  fail "no-device error"
fi
if [ -n "$train_tests" ]; then
  if timeout 300 "$train_tests" vulkan >"$work/tests.out" 2>&1; then
    figure check.train_tests "$(grep -E '^test result' "$work/tests.out" | head -n 1)"
  else
    tail -n 30 "$work/tests.out" >&2
    fail "the Vulkan test binary"
  fi
fi

# 2. Benchmarks: seconds per training iteration and peak GPU memory.
if [ -x "$bench" ]; then
  for case in "deeplab 5" "decoder 5"; do
    set -- $case
    if with_peak 150 "$bench" "$1" "$iters" "$2" vulkan >"$work/bench-$1.out"; then
      figure "$1.s_per_iter" "$(grep -o '[0-9.]* s/iter' "$work/bench-$1.out" | cut -d' ' -f1) (batch $2)"
      figure "$1.peak_mib" "$PEAK_MIB"
    else
      fail "bench_train $1 on vulkan (exit $?, limit 150 s)"
    fi
  done
else
  echo "no bench_train binary in $bin/examples (see --bin): training benchmarks skipped" >&2
fi
if python3 -c 'import torch, sys; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
  if timeout 150 python3 tools/bench_train.py --device cuda --deeplab-batch 5 --iters "$iters" \
    --bin "$bench" >"$work/torch.out"; then
    grep -E 's/iter' "$work/torch.out" | sed 's/^/figure: torch.side_by_side = /'
  else
    fail "tools/bench_train.py --device cuda"
  fi
else
  echo "python3 has no torch with CUDA: the PyTorch figures are skipped" >&2
fi

# 3. CAMs on the GPU: only where this build's `clip-es cams` takes --device.
if "$clip_es" cams --help 2>/dev/null | grep -q -- '--device'; then
  echo "clip-es cams takes --device: time it with a ViT-B/16 checkpoint, e.g." >&2
  echo "  clip-es cams --device vulkan --model VIT_B16 --images examples/images --labels examples/labels.txt --out OUT" >&2
  figure cams.s_per_photo "not run by this script yet"
else
  figure cams.s_per_photo "n/a (this clip-es computes CAMs on the CPU only)"
fi

figure total_seconds "$((SECONDS - start))"
exit $failed
