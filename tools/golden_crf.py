#!/usr/bin/env python3
"""Golden files for the dense CRF (crates/clip-es-crf) and the CLIP-ES mask/eval stage
(crates/clip-es), made with pydensecrf (pip package pydensecrf or pydensecrf2) and numpy.

Re-run from the repository root:

    python tools/golden_crf.py

It rewrites
  crates/clip-es-crf/tests/data/  manifest.txt, <case>_{features,image,unary,q}.npy,
                                  f16_unary.npy (numpy's float16 -log(clip(p, 1e-5, 1)) of all
                                  65536 float16 bit patterns)
  crates/clip-es/tests/data/crf/  a miniature CLIP-ES dataset (CAMs as .npz, JPEG images, palette
                                  ground truth, split) and the outputs of the reference's
                                  eval_cam.py / eval_cam_with_crf.py steps on it, computed with the
                                  same numpy / pydensecrf calls (expected.json, masks/*.png).

Each CRF case lists its parameters in manifest.txt, one line per case:
  name n_labels iterations kind [kind parameters...]
where kind is `crf2d W H gauss_sxy gauss_compat bilat_sxy bilat_srgb bilat_compat` or
`features D normalization compat` (normalization: symmetric|none|before|after).
Everything is deterministic (fixed seeds); the files stay well under 1 MB.
"""
import io
import json
import os
import sys
import zipfile

import numpy as np
import pydensecrf.densecrf as dcrf
import pydensecrf.utils as utils

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CRF_DATA = os.path.join(ROOT, "crates", "clip-es-crf", "tests", "data")
APP_DATA = os.path.join(ROOT, "crates", "clip-es", "tests", "data", "crf")

NORMS = {
    "symmetric": dcrf.NORMALIZE_SYMMETRIC,
    "none": dcrf.NO_NORMALIZATION,
    "before": dcrf.NORMALIZE_BEFORE,
    "after": dcrf.NORMALIZE_AFTER,
}


def smooth_image(rng, w, h):
    """An image with smooth gradients, a few flat rectangles (edges) and some noise."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([
        128 + 100 * np.sin(x / 7.0 + c) * np.cos(y / 5.0 - c) for c in range(3)
    ], axis=2)
    for _ in range(3):
        x0, y0 = rng.integers(0, w // 2), rng.integers(0, h // 2)
        img[y0:y0 + h // 3, x0:x0 + w // 3] = rng.integers(0, 256, size=3)
    img += rng.normal(0, 6, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def random_probs(rng, m, w, h):
    """Smooth random class scores in [0, 1] (not normalised, like CAMs)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    p = np.stack([
        0.5 + 0.5 * np.sin(x / rng.uniform(3, 9) + rng.uniform(0, 6)) * np.cos(y / rng.uniform(3, 9))
        for _ in range(m)
    ])
    p += rng.uniform(0, 0.1, size=p.shape)
    return np.clip(p, 0, 1).astype(np.float32)


def crf2d_case(name, rng, w, h, m, iters, g, b, lines):
    img = smooth_image(rng, w, h)
    probs = random_probs(rng, m, w, h)
    U = np.ascontiguousarray(utils.unary_from_softmax(probs))
    d = dcrf.DenseCRF2D(w, h, m)
    d.setUnaryEnergy(U)
    d.addPairwiseGaussian(sxy=g[0], compat=g[1])
    d.addPairwiseBilateral(sxy=b[0], srgb=b[1], rgbim=np.ascontiguousarray(img), compat=b[2])
    Q = np.ascontiguousarray(np.array(d.inference(iters), dtype=np.float32).reshape(m, h * w))
    np.save(os.path.join(CRF_DATA, name + "_image.npy"), img)
    np.save(os.path.join(CRF_DATA, name + "_unary.npy"), U)
    np.save(os.path.join(CRF_DATA, name + "_q.npy"), Q)
    lines.append(f"{name} {m} {iters} crf2d {w} {h} {g[0]} {g[1]} {b[0]} {b[1]} {b[2]}")


def features_case(name, rng, n, dim, m, iters, norm, compat, lines):
    f = rng.normal(0, 2.0, size=(dim, n)).astype(np.float32)
    probs = rng.uniform(0, 1, size=(m, n)).astype(np.float32)
    U = np.ascontiguousarray(utils.unary_from_softmax(probs))
    d = dcrf.DenseCRF(n, m)
    d.setUnaryEnergy(U)
    d.addPairwiseEnergy(np.ascontiguousarray(f), compat=compat, kernel=dcrf.DIAG_KERNEL,
                        normalization=NORMS[norm])
    Q = np.ascontiguousarray(np.array(d.inference(iters), dtype=np.float32).reshape(m, n))
    np.save(os.path.join(CRF_DATA, name + "_features.npy"), f)
    np.save(os.path.join(CRF_DATA, name + "_unary.npy"), U)
    np.save(os.path.join(CRF_DATA, name + "_q.npy"), Q)
    lines.append(f"{name} {m} {iters} features {dim} {norm} {compat}")


def crf_goldens():
    os.makedirs(CRF_DATA, exist_ok=True)
    rng = np.random.default_rng(2011)
    lines = []
    # The CLIP-ES settings on small images, for every code path of the label count:
    # 2 labels (densecrf's sequential slicing, scalar expf), 3 (SSE slicing), 4 (one Eigen
    # packet exp), 6 (packet + scalar), 9 (two packets + scalar sums).
    for m in (2, 3, 4, 6, 9):
        crf2d_case(f"clipes_m{m}", rng, 23, 17, m, 10, (1, 3), (67, 3, 4), lines)
    # Bilateral range that matters at this size, image size a multiple of 4.
    crf2d_case("small_sxy", rng, 32, 24, 3, 10, (1, 3), (5, 3, 4), lines)
    crf2d_case("zero_iters", rng, 13, 11, 3, 0, (1, 3), (67, 3, 4), lines)
    crf2d_case("one_iter", rng, 13, 11, 5, 1, (3, 2), (10, 13, 5), lines)
    # A larger one with colour edges.
    crf2d_case("medium", rng, 61, 45, 4, 10, (1, 3), (67, 3, 4), lines)
    # Arbitrary feature dimensions and the other normalisations.
    features_case("feat_d1", rng, 50, 1, 3, 5, "symmetric", 2.0, lines)
    features_case("feat_d3", rng, 101, 3, 2, 5, "symmetric", 3.0, lines)
    features_case("feat_d7", rng, 77, 7, 3, 3, "symmetric", 1.5, lines)
    features_case("feat_none", rng, 64, 2, 3, 3, "none", 0.5, lines)
    features_case("feat_before", rng, 63, 3, 4, 3, "before", 1.0, lines)
    features_case("feat_after", rng, 62, 4, 5, 3, "after", 1.0, lines)
    with open(os.path.join(CRF_DATA, "manifest.txt"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    # numpy's float16 unary for every float16 bit pattern (NaNs included; they stay NaN).
    allh = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16)
    with np.errstate(invalid="ignore"):
        u16 = -np.log(np.clip(allh, 1e-5, 1.0))
    assert u16.dtype == np.float16
    np.save(os.path.join(CRF_DATA, "f16_unary.npy"), u16)


def official_repo():
    """The reference checkout (linyq2117/CLIP-ES) named by $OFFICIAL_REPO."""
    repo = os.environ.get("OFFICIAL_REPO")
    if not repo:
        sys.exit("set OFFICIAL_REPO to a checkout of linyq2117/CLIP-ES")
    return repo





def draw_scene(rng, w, h):
    """An image with a few coloured ellipses and rectangles on a textured background, and its
    ground truth: object pixels get their class, a 2-pixel boundary band gets 255."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([90 + 40 * np.sin(x / 9.0 + c) + 30 * np.cos(y / 7.0 - c) for c in range(3)], axis=2)
    gt = np.zeros((h, w), np.uint8)
    objects = []
    classes = rng.choice(np.arange(1, 21), size=rng.integers(1, 4), replace=False)
    for cls in classes:
        cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
        rx, ry = rng.uniform(0.12, 0.3) * w, rng.uniform(0.12, 0.3) * h
        inside = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1
        colour = rng.integers(0, 256, size=3)
        img[inside] = colour + rng.normal(0, 8, size=(inside.sum(), 3))
        ring = (((x - cx) / (rx + 2)) ** 2 + ((y - cy) / (ry + 2)) ** 2 <= 1) & ~inside
        gt[ring] = 255
        gt[inside] = cls
        objects.append((int(cls), cx, cy, rx, ry))
    img += rng.normal(0, 4, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), gt, objects


def scene_cams(rng, w, h, objects):
    """Float16 CAMs in [0, 1] that roughly cover each object (blurry, shifted, noisy)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    cams = []
    for cls, cx, cy, rx, ry in objects:
        cx += rng.normal(0, 0.1 * rx)
        cy += rng.normal(0, 0.1 * ry)
        d = ((x - cx) / (1.3 * rx)) ** 2 + ((y - cy) / (1.3 * ry)) ** 2
        cam = np.exp(-d) + rng.uniform(0, 0.15, size=d.shape)
        cams.append(cam / cam.max())
    return np.stack(cams).astype(np.float16)


def app_goldens():
    """A miniature VOC-style dataset and the reference's own outputs on it: runs the official
    eval_cam.py and eval_cam_with_crf.py (OFFICIAL_REPO, a checkout of the reference) as the parity
    run does. The reference reads <id>.jpg with cv2; the tests get the very pixels cv2 decoded
    as lossless PNGs, so they check the CRF stage independently of JPEG decoding."""
    import re
    import shutil
    import subprocess
    import cv2
    from PIL import Image

    rng = np.random.default_rng(2023)
    if os.path.isdir(APP_DATA):
        shutil.rmtree(APP_DATA)
    work = os.path.join(APP_DATA, "_work")
    dirs = {k: os.path.join(APP_DATA, k) for k in ("images", "cams", "gt", "expected_masks")}
    for d in list(dirs.values()) + [os.path.join(work, "voc", "cams"), os.path.join(work, "jpg")]:
        os.makedirs(d, exist_ok=True)
    sizes = [(64, 48), (57, 41), (80, 52), (48, 48), (70, 39)]
    ids = [f"mini_{i:03d}" for i in range(len(sizes))]
    palette = np.zeros((256, 3), np.uint8)
    for i in range(256):
        c = i
        for j in range(8):
            palette[i] |= np.array([(c >> 0) & 1, (c >> 1) & 1, (c >> 2) & 1], np.uint8) << (7 - j)
            c >>= 3
    for image_id, (w, h) in zip(ids, sizes):
        img, gt, objects = draw_scene(rng, w, h)
        jpg = os.path.join(work, "jpg", image_id + ".jpg")
        cv2.imwrite(jpg, img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
        decoded = cv2.imread(jpg, cv2.IMREAD_COLOR)
        Image.fromarray(decoded[:, :, ::-1]).save(os.path.join(dirs["images"], image_id + ".png"))
        g = Image.fromarray(gt, mode="P")
        g.putpalette(palette.flatten().tolist())
        g.save(os.path.join(dirs["gt"], image_id + ".png"))
        keys = np.array([o[0] - 1 for o in objects], dtype=np.int64)
        cams = scene_cams(rng, w, h, objects)
        np.save(os.path.join(dirs["cams"], image_id + ".npy"), {"keys": keys, "attn_highres": cams})
        shutil.copy(os.path.join(dirs["cams"], image_id + ".npy"), os.path.join(work, "voc", "cams"))
    split = os.path.join(APP_DATA, "split.txt")
    with open(split, "w") as fh:
        fh.write("\n".join(ids) + "\n")

    py = sys.executable
    cam_dir = os.path.join(work, "voc", "cams")  # 'voc' in the path selects VOC mode
    out = subprocess.run([py, "eval_cam.py", "--cam_out_dir", cam_dir, "--split_file", split,
                          "--gt_root", dirs["gt"]], cwd=official_repo(), check=True, capture_output=True,
                         text=True).stdout
    sweep = {int(m.group(1)): float(m.group(2)) for m in re.finditer(r"^(\d+) ([0-9.e-]+)$", out, re.M)}
    final = eval(out.strip().splitlines()[-1], {"np": np, "nan": float("nan")})
    best = max(sweep, key=lambda t: (sweep[t], -t))
    expected = {"cams": {"sweep": {str(k): v for k, v in sweep.items()}, "best_bg_power": best,
                         "mean_iou": float(final["Mean IoU"]),
                         "pixel_accuracy": float(final["Pixel Accuracy"])}}
    common = ["--cam_out_dir", cam_dir, "--split_file", split, "--gt_root", dirs["gt"],
              "--image_root", os.path.join(work, "jpg")]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # eval_cam_with_crf.py uses every CPU through joblib; both runs are deterministic.
    subprocess.run([py, "eval_cam_with_crf.py", "--pseudo_mask_save_path", dirs["expected_masks"]] + common,
                   cwd=official_repo(), check=True, capture_output=True, text=True, env=env)
    out = subprocess.run([py, "eval_cam_with_crf.py", "--eval_only", "--pseudo_mask_save_path",
                          dirs["expected_masks"]] + common, cwd=official_repo(), check=True,
                         capture_output=True, text=True, env=env).stdout
    final = eval(out.strip().splitlines()[-1], {"np": np, "nan": float("nan")})
    expected["crf"] = {"mean_iou": float(final["Mean IoU"]), "pixel_accuracy": float(final["Pixel Accuracy"])}
    with open(os.path.join(APP_DATA, "expected.json"), "w") as fh:
        json.dump(expected, fh, indent=1)
    shutil.rmtree(work)
    print(json.dumps(expected, indent=1))


if __name__ == "__main__":
    crf_goldens()
    if "--crf-only" not in sys.argv:
        app_goldens()
