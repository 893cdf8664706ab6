"""Parity of crates/clip-es-image with Pillow / torchvision / OpenCV on full-size photos.

Not part of `cargo test` (needs Python). From the repository root:

    cargo build --release -p clip-es-image --example parity_dump
    python tools/parity_image.py [--bin target/release/examples/parity_dump] [IMAGE...]

Encodes scikit-image's photos at full size with several JPEG settings (plus any IMAGE given,
e.g. the VOC JPEGs of the parity fixture), runs the example, and compares decoded pixels, the
CLIP input tensor (patch 16) and cv2.imread; then cv2.resize on random CAM-like maps of
VOC-like sizes. Prints the largest differences; exits non-zero on any mismatch.
"""

import argparse
import math
import os
import subprocess
import sys
import tempfile

import cv2
import numpy as np
import skimage.data
from PIL import Image
from torchvision.transforms import Compose, InterpolationMode, Normalize, Resize, ToTensor

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


def reference_tensor(path):
    im = Image.open(path)
    w, h = im.size
    t = Compose([
        Resize((math.ceil(h / 16) * 16, math.ceil(w / 16) * 16), interpolation=InterpolationMode.BICUBIC),
        lambda x: x.convert("RGB"), ToTensor(), Normalize(MEAN, STD),
    ])(im)
    return t.numpy()


def make_photos(d):
    out = []
    for name in ["chelsea", "coffee", "astronaut", "rocket", "camera", "page"]:
        im = Image.fromarray(getattr(skimage.data, name)())
        for tag, kw in [("q75_420", dict(quality=75)), ("q95_444", dict(quality=95, subsampling=0)),
                        ("q90_422_prog", dict(quality=90, subsampling=1, progressive=True))]:
            p = os.path.join(d, f"{name}_{tag}.jpg")
            im.save(p, **kw)
            out.append(p)
        p = os.path.join(d, f"{name}.png")
        im.save(p)
        out.append(p)
    cmyk = os.path.join(d, "coffee_cmyk.jpg")
    Image.fromarray(skimage.data.coffee()).convert("CMYK").save(cmyk, quality=90)
    out.append(cmyk)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/examples/parity_dump")
    ap.add_argument("images", nargs="*")
    a = ap.parse_args()
    bad = 0
    with tempfile.TemporaryDirectory() as d:
        files = make_photos(d) + a.images
        subprocess.run([a.bin, "images", d] + files, check=True)
        worst_t = 0.0
        for i, f in enumerate(files):
            mode, w, h, th, tw, ch, cw = open(os.path.join(d, f"{i}.txt")).read().split()
            im = Image.open(f)
            ref = np.array(im)
            dt = np.uint16 if mode == "I;16" else np.uint8
            got = np.fromfile(os.path.join(d, f"{i}.decoded.bin"), dt)
            if mode == "1":
                ref = ref.astype(np.uint8) * 255
            ok_dec = mode == im.mode and got.size == ref.size and (got == ref.reshape(-1)).all()
            tref = reference_tensor(f)
            tgot = np.fromfile(os.path.join(d, f"{i}.tensor.bin"), np.float32).reshape(tref.shape)
            tdiff = float(np.abs(tgot - tref).max())
            worst_t = max(worst_t, tdiff)
            cref = cv2.imread(f, cv2.IMREAD_COLOR)[..., ::-1]
            cgot = np.fromfile(os.path.join(d, f"{i}.imread.bin"), np.uint8).reshape(cref.shape)
            ok_cv = (cgot == cref).all()
            print(f"{os.path.basename(f)} {mode} {w}x{h}: decoded {'ok' if ok_dec else 'DIFFERS'}, "
                  f"tensor {th}x{tw} max|diff| {tdiff:.3g}, imread {'ok' if ok_cv else 'DIFFERS'}")
            bad += (not ok_dec) + (tdiff != 0.0) + (not ok_cv)
        print(f"worst tensor difference: {worst_t:.3g}")

        rng = np.random.default_rng(7)
        cases = []
        for k in range(200):
            H, W = int(rng.integers(100, 501)), int(rng.integers(100, 501))
            h, w = math.ceil(H / 16), math.ceil(W / 16)
            if k % 10 == 0:  # also arbitrary small / odd shapes
                h, w, H, W = (int(v) for v in rng.integers(1, 40, 4))
            src = rng.random((h, w), dtype=np.float32)
            name = f"c{k}"
            src.tofile(os.path.join(d, name + ".src.f32"))
            cases.append((name, h, w, H, W, src))
        with open(os.path.join(d, "cases.txt"), "w") as fh:
            fh.write("".join(f"{n} {h} {w} {H} {W}\n" for n, h, w, H, W, _ in cases))
        subprocess.run([a.bin, "resize", d], check=True)
        worst, unequal = 0.0, 0
        for n, h, w, H, W, src in cases:
            ref = cv2.resize(src, (W, H), interpolation=cv2.INTER_LINEAR)
            got = np.fromfile(os.path.join(d, n + ".out.f32"), np.float32).reshape(H, W)
            worst = max(worst, float(np.abs(got - ref).max()))
            unequal += int((got != ref).sum())
        print(f"cv2.resize on {len(cases)} maps: max|diff| {worst:.3g}, unequal values {unequal}")
        bad += unequal > 0
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
