"""Side-by-side CAM speed: the CLIP-ES reference's generate_cams_voc12.py (run unmodified) and
`clip-es cams`, same images, same weights, same thread count. Prints, for each, the first image's
seconds (model warm-up: CUDA kernels, Vulkan shader compilation) apart from the median seconds per
image of the others, the ratio of the medians, wall times and peak memory, and how far the two
outputs (attn_highres) are apart.

usage:
  OFFICIAL_REPO=/path/to/CLIP-ES python tools/bench_cams.py --fixture FIXTURE_DIR \
      [--device cpu|cuda] [--clip-es-device cpu|flex|vulkan] [--threads N] [--rounds 1] [--images N]

--device cpu (default): the reference on the CPU through tools/parity/official_cpu.py (its cuda
devices mapped to the CPU), against `clip-es cams --device cpu`; --threads (default 2) for both.

--device cuda: the reference as written, on CUDA, through tools/parity/official_cuda.py (which
times each image after torch.cuda.synchronize() and reports PyTorch's allocator peak), against
`clip-es cams --device vulkan` on the same GPU; --threads (default: all cores) for both CPU sides.
Peak GPU memory of each run: the largest nvidia-smi memory.used above its value before the run.
Note that clip.load keeps CLIP in float16 on CUDA (the reference's own behaviour) while clip-es
computes in float32, so the maps differ more than on the CPU. Refused when torch has no CUDA.
(Test-only: CLIP_ES_BENCH_TORCH_DEVICE=cpu runs the --device cuda path with the reference on the
CPU, so that the script can be exercised on a machine without CUDA; its output says so.)

--clip-es-device picks clip-es's device (default: vulkan with --device cuda, else cpu).

The fixture is what tools/parity/make_fixture.py writes (VOC2012/ mini dataset and
ViT-B-16-random.pt). clip-es is taken from target/release/clip-es (or --clip-es), built with
`cargo build --release` (`--features vulkan` for vulkan).
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OVERRIDE = "CLIP_ES_BENCH_TORCH_DEVICE"


def gpu_used_mib():
    """memory.used of GPU 0 by nvidia-smi, in MiB (None without nvidia-smi or a GPU)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                             capture_output=True, text=True, check=True, timeout=10).stdout
        return int(out.strip().splitlines()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


class GpuPeak:
    """Samples nvidia-smi's memory.used every 0.2 s while running; .mib is the peak above the
    value before the start (None without nvidia-smi)."""

    def __init__(self):
        self.idle = gpu_used_mib()
        self.peak = self.idle
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True)

    def sample(self):
        while not self.stop.wait(0.2):
            used = gpu_used_mib()
            if used is not None and self.peak is not None:
                self.peak = max(self.peak, used)

    def __enter__(self):
        if self.idle is not None:
            self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()

    @property
    def mib(self):
        return None if self.idle is None else self.peak - self.idle


def run(cmd, env=None, cwd=None):
    """Runs cmd; returns (stdout+stderr text, wall seconds, peak RSS in MB, peak GPU MiB above
    idle or None)."""
    with GpuPeak() as gpu:
        t = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=cwd, text=True)
        out = "".join(p.stdout)
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t
    if p.returncode != 0:
        sys.exit(f"error: {os.path.basename(cmd[0])} {' '.join(cmd[1:3])} ... failed (exit {p.returncode}):\n{out[-3000:]}")
    return out, wall, usage.ru_maxrss / 1024, gpu.mib


def check_torch_cuda():
    """Exits with a message unless this python's torch sees a CUDA device (or the test override
    is set); returns the reference's device line."""
    if os.environ.get(OVERRIDE) == "cpu":
        return f"cpu (TEST OVERRIDE {OVERRIDE}=cpu: the --device cuda path with the reference on the CPU)"
    try:
        import torch
    except ImportError as e:
        sys.exit(f"error: --device cuda needs PyTorch with CUDA in {sys.executable}: {e}")
    if not torch.cuda.is_available():
        sys.exit(f"error: --device cuda: this torch ({torch.__version__}, {sys.executable}) sees no CUDA device "
                 f"(built for CUDA {torch.version.cuda or 'none'}); run on a machine with an NVIDIA GPU and a "
                 "CUDA build of torch, or use --device cpu")
    return f"cuda ({torch.cuda.get_device_name(0)})"


def split_times(times_by_round):
    """(first images' seconds, the other images' seconds) over the rounds."""
    first = [t[0] for t in times_by_round]
    rest = [x for t in times_by_round for x in t[1:]]
    return first, rest


def fmt_mib(values):
    """The largest of the rounds' peaks, or n/a where nvidia-smi gave none."""
    known = [v for v in values if v is not None]
    return f"{max(known):.0f} MiB above idle" if known else "n/a (no nvidia-smi)"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixture", required=True)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the reference runs (default cpu)")
    ap.add_argument("--clip-es-device", choices=["cpu", "flex", "vulkan"],
                    help="clip-es cams --device (default: vulkan with --device cuda, else cpu)")
    ap.add_argument("--official", default=os.environ.get("OFFICIAL_REPO"),
                    help="a checkout of linyq2117/CLIP-ES (default: $OFFICIAL_REPO)")
    ap.add_argument("--parity-kit", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "parity"),
                    help="directory holding official_cpu.py and official_cuda.py (default: tools/parity)")
    ap.add_argument("--threads", type=int, help="CPU threads of both (default: 2 with --device cpu, all cores with cuda)")
    ap.add_argument("--rounds", type=int, default=1, help="alternate the two programs this many times")
    ap.add_argument("--images", type=int, help="only the first N images of the fixture's split")
    ap.add_argument("--clip-es", default=os.path.join(REPO, "target/release/clip-es"))
    args = ap.parse_args()
    ours_device = args.clip_es_device or ("vulkan" if args.device == "cuda" else "cpu")
    threads = args.threads or (2 if args.device == "cpu" else os.cpu_count())
    if not args.official:
        sys.exit("error: set OFFICIAL_REPO (or --official) to a checkout of linyq2117/CLIP-ES")
    if args.rounds < 1 or (args.images is not None and args.images < 1):
        sys.exit("error: --rounds and --images must be at least 1")
    if not os.access(args.clip_es, os.X_OK):
        sys.exit(f"error: no clip-es binary at {args.clip_es} (--clip-es)")
    voc = os.path.join(args.fixture, "VOC2012")
    model = os.path.join(args.fixture, "ViT-B-16-random.pt")
    if not (os.path.isdir(voc) and os.path.isfile(model)):
        sys.exit(f"error: {args.fixture} is not a parity fixture (VOC2012/, ViT-B-16-random.pt): see tools/parity/README.md")
    if args.device == "cuda":
        ref_device = check_torch_cuda()
        runner = "official_cuda.py"
    else:
        ref_device = f"cpu ({threads} threads)"
        runner = "official_cpu.py"

    ref_times, our_times, ref_wall, our_wall = [], [], [], []
    ref_rss, our_rss, ref_gpu, our_gpu, ref_alloc = [], [], [], [], []
    our_device_line = "?"
    with tempfile.TemporaryDirectory() as tmp:
        split = os.path.join(voc, "ImageSets/Segmentation/train.txt")
        if args.images:
            ids = open(split).read().split()[:args.images]
            split = os.path.join(tmp, "split.txt")
            open(split, "w").write("\n".join(ids) + "\n")
        our_env = dict(os.environ)
        if not our_env.get("XDG_RUNTIME_DIR"):  # wgpu wants it
            our_env["XDG_RUNTIME_DIR"] = os.path.join(tmp, "xdg")
            os.mkdir(our_env["XDG_RUNTIME_DIR"], 0o700)
        for r in range(args.rounds):
            ours_dir = os.path.join(tmp, f"ours{r}")
            report = os.path.join(tmp, f"report{r}.json")
            out, wall, rss, gpu = run([args.clip_es, "cams", "--device", ours_device, "--dataset", "voc",
                                       "--images", os.path.join(voc, "JPEGImages"),
                                       "--annotations", os.path.join(voc, "Annotations"), "--split", split,
                                       "--model", model, "--out", ours_dir, "--threads", str(threads),
                                       "--report", report], env=our_env)
            m = re.search(r"^device: (.*)$", out, re.M)
            our_device_line = m.group(1) if m else f"{ours_device} (no device: line)"
            our_times.append([im["seconds"] for im in json.load(open(report))["images"]])
            our_wall.append(wall)
            our_rss.append(rss)
            our_gpu.append(gpu)

            # the eval scripts of the reference look for 'voc' in the output path
            ref_dir = os.path.join(tmp, f"voc_ref{r}")
            env = dict(os.environ, THREADS=str(threads), OFFICIAL_REPO=args.official, OMP_NUM_THREADS=str(threads))
            out, wall, rss, gpu = run([sys.executable, os.path.join(args.parity_kit, runner), "generate_cams_voc12.py",
                                       "--img_root", os.path.join(voc, "JPEGImages"), "--split_file", split,
                                       "--model", model, "--num_workers", "1", "--cam_out_dir", ref_dir],
                                      env=env, cwd=args.official)
            m = re.search(r"REFERENCE_TIMING .*per_image_s=\[([^\]]*)\]", out)
            if not m:
                sys.exit(f"error: no REFERENCE_TIMING line from {runner}:\n{out[-3000:]}")
            ref_times.append([float(v) for v in m.group(1).split(",")])
            a = re.search(r"peak_alloc_mib=([0-9.]+)", out)
            ref_alloc.append(float(a.group(1)) if a else None)
            ref_wall.append(wall)
            ref_rss.append(rss)
            ref_gpu.append(gpu)

        diffs = []
        ref_files = sorted(os.listdir(ref_dir))
        our_files = sorted(f for f in os.listdir(ours_dir) if f.endswith(".npz"))
        if [f[:-4] for f in ref_files] != [f[:-4] for f in our_files]:
            sys.exit(f"error: different files: reference {ref_files}, clip-es {our_files}")
        for f in ref_files:
            ref = np.load(os.path.join(ref_dir, f), allow_pickle=True).item()
            with np.load(os.path.join(ours_dir, f[:-4] + ".npz")) as z:
                if list(z["keys"]) != list(ref["keys"]):
                    sys.exit(f"error: {f}: keys {list(z['keys'])} (clip-es) vs {list(ref['keys'])} (reference)")
                diffs.append(np.abs(z["attn_highres"].astype(np.float32) - ref["attn_highres"].astype(np.float32)).ravel())
        d = np.concatenate(diffs)

    n = len(ref_times[0])
    print(f"images: {n} x {args.rounds} round(s), threads: {threads}")
    print(f"reference device: {ref_device}")
    print(f"clip-es device:   --device {ours_device}: {our_device_line}")

    def line(name, times, walls, rss, gpu, extra=""):
        first, rest = split_times(times)
        med = statistics.median(rest) if rest else None
        mem = f", peak GPU {fmt_mib(gpu)}" if args.device == "cuda" else ""
        med_s = f"median {med:.3f} s/image of the other {len(rest)}" if med is not None else "no other image"
        print(f"{name} first image {statistics.mean(first):.3f} s (with any warm-up), {med_s}, "
              f"wall {min(walls):.1f} s, peak RSS {max(rss):.0f} MB{mem}{extra}")
        return med if med is not None else statistics.mean(first)

    alloc = [v for v in ref_alloc if v is not None]
    med_ref = line("reference:", ref_times, ref_wall, ref_rss, ref_gpu,
                   f" (PyTorch allocator peak {max(alloc):.0f} MiB)" if alloc else "")
    med_ours = line("clip-es:  ", our_times, our_wall, our_rss, our_gpu)
    which = "medians after the first image" if n > 1 else "first image only (one image)"
    print(f"ratio (reference / clip-es, s/image, {which}): {med_ref / med_ours:.2f}x")
    note = " (the reference keeps CLIP in float16 on CUDA)" if args.device == "cuda" and "OVERRIDE" not in ref_device else ""
    print(f"attn_highres vs reference{note}: mean abs diff {d.mean():.6f}, p99 {np.percentile(d, 99):.6f}, max {d.max():.6f}")


if __name__ == "__main__":
    main()
