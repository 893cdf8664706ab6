#!/usr/bin/env bash
# Device check of clip-es's GPU path (docs/gpu.md), for a Linux machine with a GPU (NVIDIA:
# its driver ships the Vulkan driver) and no internet. Run from a checkout of this repository:
#
#   tools/gpu_check.sh [--bin DIR] [--debs DIR] [--train-tests FILE] [--iters N]
#                      [--vit FILE_OR_DIR] [--fixture DIR --official DIR] [--quick]
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
#   --vit FILE_OR_DIR  CLIP ViT-B/16 weights for the CAM figures (any layout `clip-es --model`
#                      reads). Default: random ViT-B/16 weights (seed 7, the parity fixture's)
#                      written by tools/parity/random_vit.py, which needs python3 with numpy only
#   --fixture DIR      the parity fixture (tools/parity/make_fixture.py) and
#   --official DIR     a copy of linyq2117/CLIP-ES: with both, and python3 with torch and CUDA,
#                      the reference's CAMs are timed too (tools/bench_cams.py --device cuda)
#   --quick            plumbing only (a software driver such as lavapipe): no training benchmarks
#                      (section 2), 2 of the 4 example photos for the CAMs (and 2 fixture images
#                      for torch.cams), no 8-minute budget; its seconds mean nothing
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
#   cams.first_photo_s              `clip-es cams --device vulkan`, ViT-B/16 (--vit, default random
#                                   weights) on examples/images with examples/labels.txt: the first
#                                   photo's seconds (model warm-up, shader compilation)
#   cams.s_per_photo                the median seconds per photo of the other photos
#   cams.peak_mib                   its peak GPU memory (nvidia-smi memory.used above idle)
#   check.cams_vs_cpu               the same CAMs with --device cpu: identical file names, npz
#                                   members and class keys, mean |diff| of attn_highres (pass:
#                                   < 1e-3; needs python3 with numpy, else skipped with a note)
#   torch.cams                      the reference on CUDA against clip-es on vulkan, same images and
#                                   weights (tools/bench_cams.py --device cuda: first image,
#                                   median s/image, ratio, peak GPU memory, diff); needs
#                                   --fixture, --official and python3 with torch and CUDA
# Every step has a time limit and the CAM steps stop at an 8-minute budget from the start
# (lifted by --quick), so the whole check stays under 8 minutes. Exit 1 if a check fails.
set -uo pipefail
cd "$(dirname "$0")/.."

bin=target/release
debs=""
train_tests=""
iters=5
vit=""
fixture=""
official=""
quick=0
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin="$2"; shift 2 ;;
    --debs) debs="$2"; shift 2 ;;
    --train-tests) train_tests="$2"; shift 2 ;;
    --iters) iters="$2"; shift 2 ;;
    --vit) vit="$2"; shift 2 ;;
    --fixture) fixture="$2"; shift 2 ;;
    --official) official="$2"; shift 2 ;;
    --quick) quick=1; shift ;;
    *) echo "error: unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
clip_es="$bin/clip-es"
bench="$bin/examples/bench_train"
[ -x "$bench" ] || bench="$bin/bench_train"
[ -x "$clip_es" ] || { echo "error: no clip-es binary in $bin (--bin)" >&2; exit 2; }
[ -z "$vit" ] || [ -e "$vit" ] || { echo "error: --vit $vit: no such file or directory" >&2; exit 2; }
if [ -n "$fixture$official" ]; then
  { [ -n "$fixture" ] && [ -n "$official" ]; } ||
    { echo "error: --fixture and --official go together (tools/bench_cams.py needs both)" >&2; exit 2; }
  [ -f "$fixture/ViT-B-16-random.pt" ] ||
    { echo "error: --fixture $fixture: no ViT-B-16-random.pt (tools/parity/make_fixture.py writes it)" >&2; exit 2; }
  [ -f "$official/generate_cams_voc12.py" ] ||
    { echo "error: --official $official: no generate_cams_voc12.py (a copy of linyq2117/CLIP-ES)" >&2; exit 2; }
  fixture="$(cd "$fixture" && pwd)"
  official="$(cd "$official" && pwd)"
fi

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
if [ $quick -eq 1 ]; then
  echo "--quick: training benchmarks skipped" >&2
elif [ -x "$bench" ]; then
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
torch_cuda=0
python3 -c 'import torch, sys; sys.exit(not torch.cuda.is_available())' 2>/dev/null && torch_cuda=1
if [ $quick -eq 1 ]; then
  :
elif [ $torch_cuda -eq 1 ]; then
  if timeout 150 python3 tools/bench_train.py --device cuda --deeplab-batch 5 --iters "$iters" \
    --bin "$bench" >"$work/torch.out"; then
    grep -E 's/iter' "$work/torch.out" | sed 's/^/figure: torch.side_by_side = /'
  else
    fail "tools/bench_train.py --device cuda"
  fi
else
  echo "python3 has no torch with CUDA: the PyTorch figures are skipped" >&2
fi

# 3. CAMs on the GPU: ViT-B/16 on the example photos, vulkan (timed) and cpu (compared).
# Each step's limit is cut to what is left of the 8-minute budget (none with --quick).
budget=480
left() { # LIMIT: the smaller of LIMIT and the seconds left of the budget (0: none left)
  local l=$((budget - (SECONDS - start)))
  if [ $quick -eq 1 ] || [ "$1" -lt "$l" ]; then echo "$1"; elif [ $l -gt 10 ]; then echo "$l"; else echo 0; fi
}
median() { sort -g | awk '{a[NR] = $1} END {if (NR == 0) print "n/a"; else printf "%.3f\n", (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
has_numpy=0
python3 -c 'import numpy' 2>/dev/null && has_numpy=1
labels="$work/cam-labels.txt"
if [ $quick -eq 1 ]; then head -n 2 examples/labels.txt >"$labels"; else cp examples/labels.txt "$labels"; fi
photos=$(grep -c . "$labels")
cams() { # DEVICE LIMIT: clip-es cams of the example photos into $work/cams-DEVICE
  with_peak "$2" "$clip_es" cams --device "$1" --model "$vit" --images examples/images --labels "$labels" \
    --out "$work/cams-$1" --report "$work/cams-$1.json" >"$work/cams-$1.out" 2>"$work/cams-$1.err"
}
if ! "$clip_es" cams --help 2>/dev/null | grep -q -- '--device'; then
  figure cams.s_per_photo "n/a (this clip-es computes CAMs on the CPU only)"
else
  if [ -z "$vit" ]; then
    lim=$(left 120)
    if [ $has_numpy -eq 1 ] && [ "$lim" -gt 0 ] &&
      timeout "$lim" python3 tools/parity/random_vit.py "$work/vit-b16-random.safetensors" 7; then
      vit="$work/vit-b16-random.safetensors"
    else
      echo "no ViT-B/16 weights: give --vit, or run where python3 has numpy (tools/parity/random_vit.py)" >&2
    fi
  fi
  lim=$(left 180)
  if [ -z "$vit" ]; then
    figure cams.s_per_photo "skipped (no --vit, and no python3 with numpy to write random ViT-B/16 weights)"
  elif [ "$lim" -eq 0 ]; then
    figure cams.s_per_photo "skipped (the 8-minute budget is spent)"
  elif cams vulkan "$lim"; then
    grep -o '"seconds": *[0-9.eE+-]*' "$work/cams-vulkan.json" | sed 's/.*: *//' >"$work/cams-vulkan.secs"
    figure cams.first_photo_s "$(head -n 1 "$work/cams-vulkan.secs" | median) ($(head -n 1 "$work/cams-vulkan.err" | grep '^device:' || echo vulkan))"
    figure cams.s_per_photo "$(tail -n +2 "$work/cams-vulkan.secs" | median) (median of the $((photos - 1)) photo(s) after the first)"
    figure cams.peak_mib "$PEAK_MIB"
    lim=$(left 180)
    if [ $has_numpy -eq 0 ]; then
      figure check.cams_vs_cpu "skipped (python3 has no numpy to read the CAM files)"
    elif [ "$lim" -eq 0 ]; then
      figure check.cams_vs_cpu "skipped (the 8-minute budget is spent)"
    elif cams cpu "$lim"; then
      if verdict="$(timeout 60 python3 - "$work/cams-vulkan" "$work/cams-cpu" <<'PY'
import os, sys
import numpy as np
def fail(why):
    print(why)
    sys.exit(1)
gpu, cpu = sys.argv[1], sys.argv[2]
names = lambda d: sorted(f for f in os.listdir(d) if f.endswith(".npz"))
if names(gpu) != names(cpu) or not names(gpu):
    fail(f"different files: vulkan {names(gpu)}, cpu {names(cpu)}")
diffs = []
for f in names(gpu):
    with np.load(os.path.join(gpu, f)) as a, np.load(os.path.join(cpu, f)) as b:
        if sorted(a.files) != sorted(b.files) or list(a["keys"]) != list(b["keys"]):
            fail(f"{f}: members {sorted(a.files)} / {sorted(b.files)}, keys {list(a['keys'])} / {list(b['keys'])}")
        if a["attn_highres"].shape != b["attn_highres"].shape:
            fail(f"{f}: attn_highres {a['attn_highres'].shape} / {b['attn_highres'].shape}")
        diffs.append(np.abs(a["attn_highres"].astype(np.float32) - b["attn_highres"].astype(np.float32)).ravel())
d = np.concatenate(diffs)
print(f"mean |diff| {d.mean():.3g}, max {d.max():.3g} ({len(diffs)} files)")
sys.exit(0 if d.mean() < 1e-3 else 1)
PY
)"; then
        figure check.cams_vs_cpu "$verdict"
      else
        figure check.cams_vs_cpu "failed: $verdict"
        fail "CAMs vulkan vs cpu: $verdict"
      fi
    else
      tail -n 5 "$work/cams-cpu.err" >&2
      fail "clip-es cams --device cpu"
    fi
  else
    tail -n 5 "$work/cams-vulkan.err" >&2
    fail "clip-es cams --device vulkan"
  fi
fi
# (test hook: CLIP_ES_BENCH_TORCH_DEVICE=cpu runs this step with the reference on the CPU,
# to test the plumbing on a machine without CUDA; see tools/bench_cams.py)
torch_cams=$torch_cuda
[ "${CLIP_ES_BENCH_TORCH_DEVICE:-}" = cpu ] && python3 -c 'import torch' 2>/dev/null && torch_cams=1
few=()
[ $quick -eq 1 ] && few=(--images 2)
lim=$(left 240)
if [ -z "$fixture" ]; then
  echo "no --fixture/--official: the reference's CAMs on CUDA (torch.cams) are skipped" >&2
elif [ $torch_cams -eq 0 ]; then
  echo "python3 has no torch with CUDA: torch.cams is skipped" >&2
elif [ "$lim" -eq 0 ]; then
  figure torch.cams "skipped (the 8-minute budget is spent)"
elif timeout "$lim" python3 tools/bench_cams.py --device cuda --fixture "$fixture" --official "$official" \
  --clip-es "$clip_es" ${few[@]+"${few[@]}"} >"$work/torch-cams.out" 2>"$work/torch-cams.err"; then
  sed 's/^/figure: torch.cams = /' "$work/torch-cams.out"
else
  tail -n 20 "$work/torch-cams.out" "$work/torch-cams.err" >&2
  fail "tools/bench_cams.py --device cuda"
fi

figure total_seconds "$((SECONDS - start))"
exit $failed
