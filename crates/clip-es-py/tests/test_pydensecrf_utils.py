"""clip_es.pydensecrf.utils against pydensecrf.utils' outputs (tools/golden_pydensecrf.py):
same values, same dtypes, same shapes."""

import os

import numpy as np
import pytest

import clip_es.pydensecrf.utils as utils

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
G = np.load(os.path.join(DATA, "pydensecrf_utils.npz"))

SOFTMAX_KW = {"plain": {}, "scale": {"scale": 0.7}, "noclip": {"clip": None}, "clip": {"clip": 1e-3}}
SOFTMAX = sorted({k.split("/")[1] for k in G.files if k.startswith("unary_from_softmax/")})


def same(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert np.array_equal(a, b, equal_nan=True)


@pytest.mark.parametrize("case", SOFTMAX)
def test_unary_from_softmax(case):
    tag = case.split("_", 1)[1]
    sm = G[f"unary_from_softmax/{case}/sm"]
    same(utils.unary_from_softmax(sm, **SOFTMAX_KW[tag]), G[f"unary_from_softmax/{case}/out"])
    # A non-contiguous view of the same values gives the same energies.
    view = np.asfortranarray(sm)
    same(utils.unary_from_softmax(view, **SOFTMAX_KW[tag]), G[f"unary_from_softmax/{case}/out"])


def test_softmax_cases_cover_float16():
    assert {"float16_plain", "float32_plain", "float64_scale"} <= set(SOFTMAX)


@pytest.mark.parametrize("zero_unsure, n", [(True, 4), (False, 5)])
def test_unary_from_labels(zero_unsure, n):
    lab = G[f"unary_from_labels/zero_unsure_{zero_unsure}/labels"]
    same(utils.unary_from_labels(lab, n, 0.6, zero_unsure),
         G[f"unary_from_labels/zero_unsure_{zero_unsure}/out"])


def test_create_pairwise():
    same(utils.create_pairwise_gaussian((3, 2.5), (6, 8)), G["create_pairwise_gaussian/hw/out"])
    same(utils.create_pairwise_gaussian((3, 2.5, 7), (3, 4, 5)), G["create_pairwise_gaussian/3d/out"])
    img = G["create_pairwise_bilateral/rgb/img"]
    same(utils.create_pairwise_bilateral((3, 2), (3, 4, 5), img, 2),
         G["create_pairwise_bilateral/rgb/out"])
    same(utils.create_pairwise_bilateral((3, 2), 7, img, 2), G["create_pairwise_bilateral/one_schan/out"])
    same(utils.create_pairwise_bilateral((3, 2), 5, img[:, :, 0], -1),
         G["create_pairwise_bilateral/gray/out"])
