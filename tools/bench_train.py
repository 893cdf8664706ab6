"""Seconds per training iteration, clip-es-train (burn) next to PyTorch, in one run on the same
machine: DeepLab-v2 ResNet-101 with MSC at crop 321 (batch 1, or --deeplab-batch) and the
clip-decoder on a 20x20 grid of 768-d features (batch 5).

    cargo build --release -p clip-es-train --example bench_train
    python tools/bench_train.py --threads 1 --iters 3

With --device cuda, PyTorch runs on CUDA and clip-es-train on its Vulkan device (build the
example with --features vulkan); both also print their peak GPU memory (PyTorch's allocator
peak; for clip-es-train the peak of nvidia-smi's memory.used above the idle value).

    cargo build --release -p clip-es-train --example bench_train --features vulkan
    python tools/bench_train.py --device cuda --deeplab-batch 5 --iters 5
"""

import argparse
import os
import re
import subprocess
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from torch_deeplab import MSC, DeepLabV2, param_groups, resize_labels  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--iters", type=int, default=3)
ap.add_argument("--bin", default="target/release/examples/bench_train")
ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
ap.add_argument("--deeplab-batch", type=int, default=1)
a = ap.parse_args()
torch.set_num_threads(a.threads)
dev = torch.device(a.device)


def sync():
    if a.device == "cuda":
        torch.cuda.synchronize()


def gpu_used_mib():
    """memory.used of GPU 0 by nvidia-smi, in MiB (None without a GPU)."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
            capture_output=True, text=True, check=True).stdout
        return int(out.strip().splitlines()[0])
    except (OSError, subprocess.CalledProcessError, ValueError, IndexError):
        return None


def torch_deeplab(iters, batch=1):
    net = DeepLabV2(21).to(dev)
    model = MSC(net)
    model.eval()
    for n, p in net.named_parameters():
        p.requires_grad_(".bn." not in n)
    opt = torch.optim.SGD(param_groups(net, 1e-4, 5e-4), momentum=0.9)
    x = torch.randn(batch, 3, 321, 321, device=dev)
    lab = torch.randint(0, 21, (batch, 321, 321))
    crit = nn.CrossEntropyLoss(ignore_index=255)

    def step():
        opt.zero_grad()
        loss = sum(crit(o, resize_labels(lab, o.shape[2:]).to(dev)) for o in model(x))
        loss.backward()
        opt.step()

    return timed(step, iters)


def timed(step, iters):
    """Seconds per step after one warm-up step, and PyTorch's peak GPU memory in MiB."""
    step()
    sync()
    if a.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t = time.time()
    for _ in range(iters):
        step()
    sync()
    secs = (time.time() - t) / iters
    peak = torch.cuda.max_memory_allocated() / 2**20 if a.device == "cuda" else None
    return secs, peak


def torch_decoder(iters, batch=5):
    proj, fuse, cls = (m.to(dev) for m in (nn.Conv2d(768, 256, 1), nn.Conv2d(256, 256, 3, padding=1), nn.Conv2d(256, 21, 1)))
    params = list(proj.parameters()) + list(fuse.parameters()) + list(cls.parameters())
    opt = torch.optim.SGD(params, lr=1e-2, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(batch, 768, 20, 20, device=dev)
    lab = torch.randint(0, 21, (batch, 40, 40), device=dev)
    crit = nn.CrossEntropyLoss(ignore_index=255)

    def step():
        opt.zero_grad()
        h = F.relu(proj(x))
        h = F.interpolate(h, size=(40, 40), mode="bilinear", align_corners=False)
        loss = crit(cls(F.relu(fuse(h))), lab)
        loss.backward()
        opt.step()

    return timed(step, iters)


def rust(which, iters, batch):
    """clip-es-train's seconds per iteration, and (on a GPU) its peak memory.used above idle."""
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
    device = "vulkan" if a.device == "cuda" else "flex"
    idle = gpu_used_mib() if a.device == "cuda" else None
    proc = subprocess.Popen([a.bin, which, str(iters), str(batch), device], env=env,
                            stdout=subprocess.PIPE, text=True)
    peak = idle
    while proc.poll() is None:
        if idle is not None:
            used = gpu_used_mib()
            if used is not None:
                peak = max(peak, used)
        time.sleep(0.2)
    out = proc.stdout.read()
    if proc.returncode != 0:
        sys.exit(f"{a.bin} {which} failed (exit {proc.returncode})")
    print(out.strip().splitlines()[0])
    secs = float(re.search(r"([0-9.]+) s/iter", out).group(1))
    return secs, (peak - idle if idle is not None else None)


def mib(v):
    return "" if v is None else f", peak {v:.0f} MiB"


for which, batch, tf in [("deeplab", a.deeplab_batch, torch_deeplab), ("decoder", 5, torch_decoder)]:
    r, rm = rust(which, a.iters, batch)
    t, tm = tf(a.iters, batch)
    where = "burn vulkan / PyTorch cuda" if a.device == "cuda" else f"burn flex / PyTorch cpu, {a.threads} thread(s)"
    print(f"{which} (batch {batch}, {where}): burn {r:.3f} s/iter{mib(rm)}, "
          f"PyTorch {t:.3f} s/iter{mib(tm)}, ratio {r / t:.2f}")
