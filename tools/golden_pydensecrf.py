"""Goldens of pydensecrf's inference for the Python package's parity tests
(crates/clip-es-py/tests/test_pydensecrf.py).

Usage: python tools/golden_pydensecrf.py OUT_DIR   (normally crates/clip-es-py/tests/data)

Needs numpy and pydensecrf (pip package pydensecrf2). Writes OUT_DIR/pydensecrf_cases.json (the
cases: sizes, label counts, pairwise terms, input layouts), OUT_DIR/pydensecrf_cases.npz (their
inputs and pydensecrf's marginals) and OUT_DIR/pydensecrf_utils.npz (pydensecrf.utils on small arrays),
OUT_DIR/pydensecrf_errors.json (the exception type
pydensecrf raises for each refused call of ERROR_CALLS; the test makes the same calls) and
OUT_DIR/pydensecrf_steps.json (klDivergence along startInference / stepInference for
STEP_CASES).
"""

import json
import os
import sys

import numpy as np
import pydensecrf.densecrf as dcrf
import pydensecrf.utils as utils

# name, width, height, labels, iterations, unary source, terms. A term is
# (kind, parameters); "compat" is a number or "diag"/"matrix" (an array stored in the npz).
CASES = [
    ("gauss_7x5_l2", 7, 5, 2, 5, "softmax", [("gaussian", {"sxy": 1, "compat": 3})]),
    ("gauss_40x31_l3", 40, 31, 3, 10, "softmax", [("gaussian", {"sxy": 3, "compat": 3})]),
    ("gauss_tuple_33x20_l4", 33, 20, 4, 5, "softmax",
     [("gaussian", {"sxy": (2.5, 4), "compat": 2})]),
    ("bilat_24x17_l5", 24, 17, 5, 10, "softmax",
     [("bilateral", {"sxy": 20, "srgb": 5, "compat": 4})]),
    ("bilat_40x31_l2", 40, 31, 2, 10, "softmax",
     [("bilateral", {"sxy": 67, "srgb": 3, "compat": 4})]),
    ("both_24x17_l21", 24, 17, 21, 10, "softmax",
     [("gaussian", {"sxy": 1, "compat": 3}),
      ("bilateral", {"sxy": 67, "srgb": 3, "compat": 4})]),
    ("both_29x21_l8", 29, 21, 8, 10, "softmax",
     [("gaussian", {"sxy": 3, "compat": 3}),
      ("bilateral", {"sxy": (10, 15), "srgb": (3, 6, 9), "compat": 5})]),
    ("both_13x11_l3_f16", 13, 11, 3, 10, "softmax_f16",
     [("gaussian", {"sxy": 1, "compat": 3}),
      ("bilateral", {"sxy": 67, "srgb": 3, "compat": 4})]),
    ("both_32x24_l6_noncontig_probs", 32, 24, 6, 10, "softmax_noncontig",
     [("gaussian", {"sxy": 1, "compat": 3}),
      ("bilateral", {"sxy": 30, "srgb": 13, "compat": 10})]),
    ("both_20x16_l4_labels", 20, 16, 4, 5, "labels",
     [("gaussian", {"sxy": 3, "compat": 3}),
      ("bilateral", {"sxy": 20, "srgb": 10, "compat": 5})]),
    ("energy_gauss_bilat_30x22_l5", 30, 22, 5, 8, "softmax",
     [("energy_gaussian", {"sdims": (3, 3), "compat": 3}),
      ("energy_bilateral", {"sdims": (40, 40), "schan": (8, 8, 8), "compat": 6})]),
    ("energy_gray_30x22_l3", 30, 22, 3, 8, "softmax",
     [("energy_gray", {"sdims": (20, 20), "schan": 10, "compat": 6})]),
    ("norms_25x18_l4", 25, 18, 4, 6, "softmax",
     [("gaussian", {"sxy": 2, "compat": 3, "normalization": "NO_NORMALIZATION"}),
      ("bilateral", {"sxy": 20, "srgb": 8, "compat": 2, "normalization": "NORMALIZE_AFTER",
                     "kernel": "CONST_KERNEL"}),
      ("gaussian", {"sxy": 5, "compat": 1, "normalization": "NORMALIZE_BEFORE",
                    "kernel": "FULL_KERNEL"})]),
    ("diag_compat_25x18_l4", 25, 18, 4, 6, "softmax",
     [("gaussian", {"sxy": 2, "compat": "diag"}),
      ("bilateral", {"sxy": 20, "srgb": 8, "compat": 4})]),
    ("matrix_compat_25x18_l5", 25, 18, 5, 6, "softmax",
     [("gaussian", {"sxy": 2, "compat": 3}),
      ("bilateral", {"sxy": 20, "srgb": 8, "compat": "matrix"})]),
    ("matrix_compat_19x13_l10", 19, 13, 10, 5, "softmax",
     [("bilateral", {"sxy": 20, "srgb": 8, "compat": "matrix"}),
      ("gaussian", {"sxy": 2, "compat": "diag"})]),
    ("zero_iterations_9x7_l3", 9, 7, 3, 0, "softmax",
     [("gaussian", {"sxy": 1, "compat": 3})]),
    ("dense_generic_60_l3", 60, 1, 3, 5, "softmax_dense",
     [("energy_points", {"dim": 3, "compat": 2})]),
]


def inputs(name, w, h, m, unary, rng):
    """Deterministic inputs of one case: class probabilities (or a label map), an image, and
    compatibility arrays."""
    data = {}
    # Smooth random logits so that the CRF has structure to smooth.
    coarse = rng.normal(size=(m, h // 4 + 2, w // 4 + 2)).astype(np.float32) * 3
    yi = (np.arange(h) / 4).astype(int)
    xi = (np.arange(w) / 4).astype(int)
    logits = coarse[:, yi][:, :, xi] + rng.normal(size=(m, h, w)).astype(np.float32)
    e = np.exp(logits - logits.max(0, keepdims=True))
    probs = (e / e.sum(0, keepdims=True)).astype(np.float32)
    if unary == "softmax_f16":
        data["probs"] = probs.astype(np.float16)
    elif unary == "softmax_noncontig":
        data["probs_hwc"] = np.ascontiguousarray(probs.transpose(1, 2, 0))
    elif unary == "labels":
        data["labels"] = probs.argmax(0).astype(np.int64) * (rng.random((h, w)) > 0.3)
    elif unary == "softmax_dense":
        data["probs"] = probs.reshape(m, -1)
        data["points"] = rng.normal(size=(3, w * h)).astype(np.float32) * 2
    else:
        data["probs"] = probs
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2] = (200, 40, 90)
    img[h // 2 :, w // 3 :] = (20, 180, 60)
    img = np.clip(img.astype(int) + rng.integers(-25, 26, size=img.shape), 0, 255)
    data["image"] = img.astype(np.uint8)
    data["diag"] = rng.uniform(-4, 1, size=m).astype(np.float32)
    data["matrix"] = rng.uniform(0, 3, size=(m, m)).astype(np.float32)
    return data


def unary_of(unary, data, m, u):
    if unary == "softmax_noncontig":
        probs = data["probs_hwc"].transpose(2, 0, 1)  # a non-contiguous view
        assert not probs.flags["C_CONTIGUOUS"]
        return np.ascontiguousarray(u.unary_from_softmax(probs))
    if unary == "labels":
        return u.unary_from_labels(data["labels"], m, gt_prob=0.7, zero_unsure=True)
    return u.unary_from_softmax(data["probs"])


def run_case(case, data, d_mod, u_mod):
    """Runs one case with the given modules (pydensecrf's or clip_es.pydensecrf's)."""
    return np.array(build_case(case, data, d_mod, u_mod).inference(case[4]))


def build_case(case, data, d_mod, u_mod):
    """The CRF of one case, unary and pairwise terms set."""
    name, w, h, m, iters, unary, terms = case
    if unary == "softmax_dense":
        d = d_mod.DenseCRF(w * h, m)
    else:
        d = d_mod.DenseCRF2D(w, h, m)
    d.setUnaryEnergy(unary_of(unary, data, m, u_mod))
    for kind, p in terms:
        compat = p["compat"]
        if isinstance(compat, str):
            compat = data[compat]
        extra = {}
        if "kernel" in p:
            extra["kernel"] = getattr(d_mod, p["kernel"])
        if "normalization" in p:
            extra["normalization"] = getattr(d_mod, p["normalization"])
        sxy = tuple(p["sxy"]) if isinstance(p.get("sxy"), (list, tuple)) else p.get("sxy")
        if kind == "gaussian":
            d.addPairwiseGaussian(sxy=sxy, compat=compat, **extra)
        elif kind == "bilateral":
            srgb = tuple(p["srgb"]) if isinstance(p["srgb"], (list, tuple)) else p["srgb"]
            d.addPairwiseBilateral(sxy=sxy, srgb=srgb, rgbim=data["image"], compat=compat, **extra)
        elif kind == "energy_gaussian":
            f = u_mod.create_pairwise_gaussian(sdims=tuple(p["sdims"]), shape=(h, w))
            d.addPairwiseEnergy(f, compat=compat, **extra)
        elif kind == "energy_bilateral":
            f = u_mod.create_pairwise_bilateral(
                sdims=tuple(p["sdims"]), schan=tuple(p["schan"]), img=data["image"], chdim=2)
            d.addPairwiseEnergy(f, compat=compat, **extra)
        elif kind == "energy_gray":
            gray = data["image"][:, :, 1]
            f = u_mod.create_pairwise_bilateral(
                sdims=tuple(p["sdims"]), schan=p["schan"], img=gray, chdim=-1)
            d.addPairwiseEnergy(f, compat=compat, **extra)
        elif kind == "energy_points":
            d.addPairwiseEnergy(data["points"], compat=compat, **extra)
        else:
            raise ValueError(kind)
    return d


# Cases whose step-by-step inference is recorded: klDivergence of the starting marginals and
# after each stepInference, for `iterations` steps.
STEP_CASES = ["gauss_7x5_l2", "both_24x17_l21", "both_29x21_l8", "matrix_compat_19x13_l10",
              "norms_25x18_l4", "dense_generic_60_l3"]


def step_goldens(d_mod, u_mod, data_of):
    """{case: {"kl": [klDivergence after 0..iterations steps]}} for STEP_CASES, plus a CRF
    without a unary energy ("no_unary": its startInference marginals are all zero)."""
    out = {}
    for case in CASES:
        if case[0] not in STEP_CASES:
            continue
        d = build_case(case, data_of(case), d_mod, u_mod)
        q, tmp1, tmp2 = d.startInference()
        kl = [float(d.klDivergence(q))]
        for _ in range(case[4]):
            d.stepInference(q, tmp1, tmp2)
            kl.append(float(d.klDivergence(q)))
        out[case[0]] = {"kl": kl}
    d = d_mod.DenseCRF2D(5, 4, 3)
    d.addPairwiseGaussian(2, 3)
    q, tmp1, tmp2 = d.startInference()
    kl = [float(d.klDivergence(q))]
    start_sum = float(np.array(q).sum())
    d.stepInference(q, tmp1, tmp2)
    kl.append(float(d.klDivergence(q)))
    out["no_unary"] = {"kl": kl, "start_sum": start_sum}
    return out


def error_calls(d_mod, u_mod):
    """Calls pydensecrf refuses; the test makes the same ones with clip_es.pydensecrf."""
    f32 = np.float32
    def crf():
        return d_mod.DenseCRF2D(4, 3, 2)
    return {
        "unary_float64": lambda: crf().setUnaryEnergy(np.zeros((2, 12))),
        "unary_float16": lambda: crf().setUnaryEnergy(np.zeros((2, 12), np.float16)),
        "unary_bad_shape": lambda: crf().setUnaryEnergy(np.zeros((2, 11), f32)),
        "unary_transposed_shape": lambda: crf().setUnaryEnergy(np.zeros((12, 2), f32)),
        "unary_noncontig": lambda: crf().setUnaryEnergy(np.zeros((12, 2), f32).T),
        "unary_noncontig_slice": lambda: crf().setUnaryEnergy(np.zeros((2, 24), f32)[:, ::2]),
        "unary_3d": lambda: crf().setUnaryEnergy(np.zeros((2, 12, 1), f32)),
        "unary_1d": lambda: crf().setUnaryEnergy(np.zeros(24, f32)),
        "unary_none": lambda: crf().setUnaryEnergy(None),
        "unary_list": lambda: crf().setUnaryEnergy([[0.0] * 12] * 2),
        "bilateral_float_image": lambda: crf().addPairwiseBilateral(
            3, 3, np.zeros((3, 4, 3), f32), 3),
        "bilateral_transposed_image": lambda: crf().addPairwiseBilateral(
            3, 3, np.zeros((4, 3, 3), np.uint8), 3),
        "bilateral_rgba_image": lambda: crf().addPairwiseBilateral(
            3, 3, np.zeros((3, 4, 4), np.uint8), 3),
        "bilateral_gray_image": lambda: crf().addPairwiseBilateral(
            3, 3, np.zeros((3, 4), np.uint8), 3),
        "bilateral_noncontig_image": lambda: crf().addPairwiseBilateral(
            3, 3, np.zeros((3, 4, 3), np.uint8)[:, ::-1], 3),
        "bilateral_bgr_view_image": lambda: crf().addPairwiseBilateral(
            3, 3, np.zeros((3, 4, 3), np.uint8)[:, :, ::-1], 3),
        "energy_bad_points": lambda: crf().addPairwiseEnergy(np.zeros((2, 11), f32), 3),
        "energy_float64": lambda: crf().addPairwiseEnergy(np.zeros((2, 12)), 3),
        "energy_noncontig": lambda: crf().addPairwiseEnergy(np.zeros((12, 2), f32).T, 3),
        "compat_3d": lambda: crf().addPairwiseGaussian(3, np.ones((2, 2, 2), f32)),
        "compat_float64_vector": lambda: crf().addPairwiseGaussian(3, np.ones(2)),
        "compat_string": lambda: crf().addPairwiseGaussian(3, "x"),
        "labels_gt_prob_1": lambda: u_mod.unary_from_labels(np.zeros((3, 4), int), 2, 1.0),
        "softmax_scale_0": lambda: u_mod.unary_from_softmax(np.ones((2, 3, 4), f32), scale=0),
    }


def utils_goldens(u, rng):
    """Inputs and outputs of pydensecrf.utils on small arrays (the test recomputes the
    outputs from the inputs). Keys: `<function>/<case>/in...` and `<function>/<case>/out`."""
    g = {}
    for dt in ["float32", "float16", "float64"]:
        sm = rng.random((4, 9, 7)).astype(dt)
        sm[0, 0, :3] = [0, 1, 1e-7]
        for tag, kw in [("plain", {}), ("scale", {"scale": 0.7}), ("noclip", {"clip": None}),
                        ("clip", {"clip": 1e-3})]:
            g[f"unary_from_softmax/{dt}_{tag}/sm"] = sm
            g[f"unary_from_softmax/{dt}_{tag}/out"] = u.unary_from_softmax(sm, **kw)
    lab = rng.integers(0, 5, (6, 8))
    for z, n in [(True, 4), (False, 5)]:
        g[f"unary_from_labels/zero_unsure_{z}/labels"] = lab
        g[f"unary_from_labels/zero_unsure_{z}/out"] = u.unary_from_labels(lab, n, 0.6, z)
    g["create_pairwise_gaussian/hw/out"] = u.create_pairwise_gaussian((3, 2.5), (6, 8))
    g["create_pairwise_gaussian/3d/out"] = u.create_pairwise_gaussian((3, 2.5, 7), (3, 4, 5))
    img = rng.integers(0, 256, (6, 8, 3)).astype(np.uint8)
    g["create_pairwise_bilateral/rgb/img"] = img
    g["create_pairwise_bilateral/rgb/out"] = u.create_pairwise_bilateral((3, 2), (3, 4, 5), img, 2)
    g["create_pairwise_bilateral/one_schan/out"] = u.create_pairwise_bilateral((3, 2), 7, img, 2)
    g["create_pairwise_bilateral/gray/out"] = u.create_pairwise_bilateral(
        (3, 2), 5, img[:, :, 0], -1)
    return g


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(20231128)
    arrays, specs, datas = {}, [], {}
    for case in CASES:
        name, w, h, m, iters, unary, terms = case
        data = inputs(name, w, h, m, unary, rng)
        datas[name] = data
        q = run_case(case, data, dcrf, utils)
        assert q.shape == (m, w * h) and q.dtype == np.float32, (q.shape, q.dtype)
        for k, v in data.items():
            arrays[f"{name}/{k}"] = v
        arrays[f"{name}/Q"] = q
        specs.append({"name": name, "width": w, "height": h, "labels": m,
                      "iterations": iters, "unary": unary,
                      "terms": [[kind, p] for kind, p in terms]})
    np.savez_compressed(os.path.join(out, "pydensecrf_cases.npz"), **arrays)
    with open(os.path.join(out, "pydensecrf_cases.json"), "w") as f:
        json.dump(specs, f, indent=1)
    np.savez_compressed(os.path.join(out, "pydensecrf_utils.npz"), **utils_goldens(utils, rng))
    errors = {}
    for name, call in error_calls(dcrf, utils).items():
        try:
            call()
            errors[name] = None
        except Exception as e:  # noqa: BLE001 - recording what pydensecrf raises
            errors[name] = type(e).__name__
    with open(os.path.join(out, "pydensecrf_errors.json"), "w") as f:
        json.dump(errors, f, indent=1, sort_keys=True)
    steps = step_goldens(dcrf, utils, lambda case: datas[case[0]])
    with open(os.path.join(out, "pydensecrf_steps.json"), "w") as f:
        json.dump(steps, f, indent=1, sort_keys=True)
    print(f"{len(specs)} cases, {len(errors)} error calls, {len(steps)} step cases -> {out}")


if __name__ == "__main__":
    main()
