"""Seconds per training iteration, clip-es-train (burn, flex CPU backend) next to PyTorch, in one
run on the same machine and thread count: DeepLab-v2 ResNet-101 with MSC at crop 321 (batch 1)
and the clip-decoder on a 20x20 grid of 768-d features (batch 5).

    cargo build --release -p clip-es-train --example bench_train
    python tools/bench_train.py --threads 1 --iters 3
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
a = ap.parse_args()
torch.set_num_threads(a.threads)


def torch_deeplab(iters, batch=1):
    net = DeepLabV2(21)
    model = MSC(net)
    model.eval()
    for n, p in net.named_parameters():
        p.requires_grad_(".bn." not in n)
    opt = torch.optim.SGD(param_groups(net, 1e-4, 5e-4), momentum=0.9)
    x = torch.randn(batch, 3, 321, 321)
    lab = torch.randint(0, 21, (batch, 321, 321))
    crit = nn.CrossEntropyLoss(ignore_index=255)

    def step():
        opt.zero_grad()
        loss = sum(crit(o, resize_labels(lab, o.shape[2:])) for o in model(x))
        loss.backward()
        opt.step()

    step()
    t = time.time()
    for _ in range(iters):
        step()
    return (time.time() - t) / iters


def torch_decoder(iters, batch=5):
    proj, fuse, cls = nn.Conv2d(768, 256, 1), nn.Conv2d(256, 256, 3, padding=1), nn.Conv2d(256, 21, 1)
    params = list(proj.parameters()) + list(fuse.parameters()) + list(cls.parameters())
    opt = torch.optim.SGD(params, lr=1e-2, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(batch, 768, 20, 20)
    lab = torch.randint(0, 21, (batch, 40, 40))
    crit = nn.CrossEntropyLoss(ignore_index=255)

    def step():
        opt.zero_grad()
        h = F.relu(proj(x))
        h = F.interpolate(h, size=(40, 40), mode="bilinear", align_corners=False)
        loss = crit(cls(F.relu(fuse(h))), lab)
        loss.backward()
        opt.step()

    step()
    t = time.time()
    for _ in range(iters):
        step()
    return (time.time() - t) / iters


def rust(which, iters, batch):
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
    out = subprocess.run([a.bin, which, str(iters), str(batch)], env=env, capture_output=True, text=True, check=True).stdout
    return float(re.search(r"([0-9.]+) s/iter", out).group(1))


for which, batch, tf in [("deeplab", 1, torch_deeplab), ("decoder", 5, torch_decoder)]:
    r = rust(which, a.iters, batch)
    t = tf(a.iters, batch)
    print(f"{which} (batch {batch}, {a.threads} thread(s)): burn flex {r:.3f} s/iter, PyTorch {t:.3f} s/iter, ratio {r / t:.2f}")
