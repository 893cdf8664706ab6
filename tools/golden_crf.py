#!/usr/bin/env python3
"""Golden files for the dense CRF (crates/clip-es-crf) and the CLIP-ES mask/eval stage
(crates/clip-es), made with pydensecrf (pip package pydensecrf or pydensecrf2) and numpy.

Re-run from the repository root:

    /work/pyenv/bin/python tools/golden_crf.py

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


def app_goldens():
    pass


if __name__ == "__main__":
    crf_goldens()
    if "--crf-only" not in sys.argv:
        app_goldens()
