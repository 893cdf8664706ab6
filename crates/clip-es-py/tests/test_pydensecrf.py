"""Parity of clip_es.pydensecrf with pydensecrf: the marginals of every golden case (made by
tools/golden_pydensecrf.py with pydensecrf) must be bit-identical, so must the step-by-step
inference's and its KL divergences, and every call pydensecrf refuses must be refused with the
same exception type."""

import json
import os
import threading

import numpy as np
import pytest

import clip_es.pydensecrf.densecrf as dcrf
import clip_es.pydensecrf.utils as utils

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")

with open(os.path.join(DATA, "pydensecrf_cases.json")) as f:
    CASES = json.load(f)
GOLDEN = np.load(os.path.join(DATA, "pydensecrf_cases.npz"))


def case_data(name):
    prefix = name + "/"
    return {k[len(prefix):]: GOLDEN[k] for k in GOLDEN.files if k.startswith(prefix)}


def unary_of(case, data):
    m = case["labels"]
    if case["unary"] == "softmax_noncontig":
        probs = data["probs_hwc"].transpose(2, 0, 1)
        assert not probs.flags["C_CONTIGUOUS"]
        return np.ascontiguousarray(utils.unary_from_softmax(probs))
    if case["unary"] == "labels":
        return utils.unary_from_labels(data["labels"], m, gt_prob=0.7, zero_unsure=True)
    return utils.unary_from_softmax(data["probs"])


def run_case(case, data):
    return build_case(case, data).inference(case["iterations"])


def build_case(case, data):
    """The CRF of a golden case, unary and pairwise terms set."""
    w, h, m = case["width"], case["height"], case["labels"]
    if case["unary"] == "softmax_dense":
        d = dcrf.DenseCRF(w * h, m)
    else:
        d = dcrf.DenseCRF2D(w, h, m)
    d.setUnaryEnergy(unary_of(case, data))
    for kind, p in case["terms"]:
        compat = data[p["compat"]] if isinstance(p["compat"], str) else p["compat"]
        extra = {}
        if "kernel" in p:
            extra["kernel"] = getattr(dcrf, p["kernel"])
        if "normalization" in p:
            extra["normalization"] = getattr(dcrf, p["normalization"])
        sxy = tuple(p["sxy"]) if isinstance(p.get("sxy"), list) else p.get("sxy")
        if kind == "gaussian":
            d.addPairwiseGaussian(sxy=sxy, compat=compat, **extra)
        elif kind == "bilateral":
            srgb = tuple(p["srgb"]) if isinstance(p["srgb"], list) else p["srgb"]
            d.addPairwiseBilateral(sxy=sxy, srgb=srgb, rgbim=data["image"], compat=compat, **extra)
        elif kind == "energy_gaussian":
            f = utils.create_pairwise_gaussian(sdims=tuple(p["sdims"]), shape=(h, w))
            d.addPairwiseEnergy(f, compat=compat, **extra)
        elif kind == "energy_bilateral":
            f = utils.create_pairwise_bilateral(
                sdims=tuple(p["sdims"]), schan=tuple(p["schan"]), img=data["image"], chdim=2)
            d.addPairwiseEnergy(f, compat=compat, **extra)
        elif kind == "energy_gray":
            f = utils.create_pairwise_bilateral(
                sdims=tuple(p["sdims"]), schan=p["schan"], img=data["image"][:, :, 1], chdim=-1)
            d.addPairwiseEnergy(f, compat=compat, **extra)
        elif kind == "energy_points":
            d.addPairwiseEnergy(data["points"], compat=compat, **extra)
        else:
            raise AssertionError(kind)
    return d


def test_the_goldens_cover_what_the_issue_asks():
    kinds = {kind for c in CASES for kind, _ in c["terms"]}
    assert {"gaussian", "bilateral", "energy_gaussian", "energy_bilateral"} <= kinds
    assert any(len(c["terms"]) == 1 and c["terms"][0][0] == "gaussian" for c in CASES)
    assert any(len(c["terms"]) == 1 and c["terms"][0][0] == "bilateral" for c in CASES)
    assert len({c["labels"] for c in CASES}) >= 5
    assert len({(c["width"], c["height"]) for c in CASES}) >= 5
    assert any(c["unary"] == "softmax_noncontig" for c in CASES)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_inference_equals_pydensecrf(case):
    data = case_data(case["name"])
    q = run_case(case, data)
    want = data["Q"]
    assert q.dtype == np.float32 and q.shape == want.shape
    diff = np.abs(q.astype(np.float64) - want).max()
    assert np.array_equal(q, want), f"max |difference| {diff}"
    # Used as the reference script uses it.
    assert np.array_equal(np.array(q).reshape(want.shape), want)


def error_calls():
    """The calls of tools/golden_pydensecrf.py's error_calls, with clip_es.pydensecrf."""
    f32 = np.float32

    def crf():
        return dcrf.DenseCRF2D(4, 3, 2)

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
        "labels_gt_prob_1": lambda: utils.unary_from_labels(np.zeros((3, 4), int), 2, 1.0),
        "softmax_scale_0": lambda: utils.unary_from_softmax(np.ones((2, 3, 4), f32), scale=0),
    }


with open(os.path.join(DATA, "pydensecrf_errors.json")) as f:
    PYDENSECRF_ERRORS = json.load(f)


def test_error_calls_match_the_goldens():
    assert set(error_calls()) == set(PYDENSECRF_ERRORS)


@pytest.mark.parametrize("name", sorted(PYDENSECRF_ERRORS))
def test_refuses_what_pydensecrf_refuses(name):
    want = PYDENSECRF_ERRORS[name]
    assert want is not None, "pydensecrf accepted this call"
    with pytest.raises(Exception) as info:
        error_calls()[name]()
    assert type(info.value).__name__ == want, str(info.value)
    assert str(info.value)


def test_error_messages_are_pydensecrf_s():
    d = dcrf.DenseCRF2D(4, 3, 2)
    with pytest.raises(ValueError, match=r"Buffer dtype mismatch, expected 'float' but got 'double'"):
        d.setUnaryEnergy(np.zeros((2, 12)))
    with pytest.raises(ValueError, match=r"Bad shape for unary energy \(Need \(2, 12\), got \(2, 11\)\)"):
        d.setUnaryEnergy(np.zeros((2, 11), np.float32))
    with pytest.raises(ValueError, match="ndarray is not C-contiguous"):
        d.setUnaryEnergy(np.zeros((12, 2), np.float32).T)
    with pytest.raises(ValueError, match=r"Bad shape for pairwise bilateral"):
        d.addPairwiseBilateral(3, 3, np.zeros((4, 3, 3), np.uint8), 3)
    with pytest.raises(ValueError, match=r"Bad shape for pairwise energy \(Need \(\?, 12\)"):
        d.addPairwiseEnergy(np.zeros((2, 11), np.float32), 3)


# Where clip_es.pydensecrf is stricter than pydensecrf: pydensecrf silently computes garbage
# (NaN marginals, reads past an array's end), clip-es refuses with ValueError.
@pytest.mark.parametrize(
    "call, message",
    [
        (lambda d: d.setUnaryEnergy(np.full((2, 12), np.nan, np.float32)), "non-finite"),
        (lambda d: d.setUnaryEnergy(np.array([[np.inf] * 12, [0] * 12], np.float32)), "non-finite"),
        (lambda d: d.addPairwiseGaussian(3, np.ones(3, np.float32)), "3 weights for 2 labels"),
        (lambda d: d.addPairwiseGaussian(3, np.ones((3, 3), np.float32)), r"shape \[3, 3\]"),
        (lambda d: d.addPairwiseGaussian(3, float("nan")), "non-finite"),
        (lambda d: d.addPairwiseGaussian(float("nan"), 3), "non-finite"),
        (lambda d: d.addPairwiseGaussian(3, 3, kernel=7), "KernelType"),
        (lambda d: d.addPairwiseGaussian(3, 3, normalization=-1), "NormalizationType"),
        (lambda d: d.addPairwiseEnergy(np.full((2, 12), np.nan, np.float32), 3), "non-finite"),
        (lambda d: d.addPairwiseEnergy(np.zeros((0, 12), np.float32), 3), "dimension 0"),
        (lambda d: d.addPairwiseEnergy(np.zeros((65, 12), np.float32), 3), "above 64"),
    ],
)
def test_bad_inputs_raise_value_error(call, message):
    d = dcrf.DenseCRF2D(4, 3, 2)
    with pytest.raises(ValueError, match=message):
        call(d)
    # The CRF stays usable after a refused call.
    d.setUnaryEnergy(np.zeros((2, 12), np.float32))
    assert d.inference(1).shape == (2, 12)


def test_empty_crf_is_refused():
    with pytest.raises(ValueError, match="at least one variable"):
        dcrf.DenseCRF2D(0, 3, 2)


def test_enums_are_pydensecrf_s():
    assert (dcrf.CONST_KERNEL, dcrf.DIAG_KERNEL, dcrf.FULL_KERNEL) == (0, 1, 2)
    assert (dcrf.NO_NORMALIZATION, dcrf.NORMALIZE_BEFORE, dcrf.NORMALIZE_AFTER,
            dcrf.NORMALIZE_SYMMETRIC) == (0, 1, 2, 3)
    assert dcrf.KernelType.DIAG_KERNEL is dcrf.DIAG_KERNEL
    assert dcrf.NormalizationType(3) is dcrf.NORMALIZE_SYMMETRIC


def test_inference_runs_without_the_gil():
    # Two CRFs in two threads: each inference must give the single-thread result.
    case = next(c for c in CASES if c["name"] == "both_24x17_l21")
    data = case_data(case["name"])
    out = [None, None]

    def work(i):
        out[i] = run_case(case, data)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(q, data["Q"]) for q in out)


with open(os.path.join(DATA, "pydensecrf_steps.json")) as f:
    STEPS = json.load(f)


@pytest.mark.parametrize("name", sorted(n for n in STEPS if n != "no_unary"))
def test_step_inference_equals_pydensecrf(name):
    # pydensecrf's README loop: startInference, then klDivergence and stepInference in turn.
    case = next(c for c in CASES if c["name"] == name)
    data = case_data(name)
    d = build_case(case, data)
    q, tmp1, tmp2 = d.startInference()
    assert q.dtype == np.float32 and q.shape == data["Q"].shape
    kl = [d.klDivergence(q)]
    for _ in range(case["iterations"]):
        d.stepInference(q, tmp1, tmp2)
        kl.append(d.klDivergence(q))
    assert np.array_equal(q, data["Q"]), np.abs(q - data["Q"]).max()
    assert kl == STEPS[name]["kl"], np.subtract(kl, STEPS[name]["kl"])
    # The divergence decreases along the iterations (mean field's guarantee, up to rounding).
    assert kl[-1] < kl[0]


def test_step_inference_without_unary_starts_from_zeros():
    d = dcrf.DenseCRF2D(5, 4, 3)
    d.addPairwiseGaussian(2, 3)
    q, tmp1, tmp2 = d.startInference()
    assert float(q.sum()) == STEPS["no_unary"]["start_sum"] == 0.0
    kl = [d.klDivergence(q)]
    d.stepInference(q, tmp1, tmp2)
    kl.append(d.klDivergence(q))
    assert kl == STEPS["no_unary"]["kl"]


def test_step_inference_refuses_bad_marginals():
    d = dcrf.DenseCRF2D(4, 3, 2)
    d.setUnaryEnergy(np.zeros((2, 12), np.float32))
    q, tmp1, tmp2 = d.startInference()
    with pytest.raises(ValueError, match=r"Bad shape for Q \(Need \(2, 12\), got \(2, 11\)\)"):
        d.stepInference(np.zeros((2, 11), np.float32), tmp1, tmp2)
    with pytest.raises(ValueError, match="Buffer dtype mismatch"):
        d.klDivergence(q.astype(np.float64))
    with pytest.raises(ValueError, match="not C-contiguous"):
        d.stepInference(np.asfortranarray(q), tmp1, tmp2)
    with pytest.raises(ValueError, match="read-only"):
        q.flags.writeable = False
        d.stepInference(q, tmp1, tmp2)
    with pytest.raises(TypeError):
        d.klDivergence(None)
