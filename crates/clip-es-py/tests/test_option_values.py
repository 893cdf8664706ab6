"""Option values from Python are checked by the same rules as the command line's (the stage's own
validation): out-of-range values raise ValueError before any work, never PanicException or an
abort, and nothing is written. Tiny random CLIP, the example photos and their ground truth."""

import math
import os

import numpy as np
import pytest

import clip_es
from test_pipeline import GT, IMAGES, MODEL, ROOT

# A torchvision-style ResNet state dict for width 2, blocks 1-2-2-2.
TRAIN_INIT = os.path.join(ROOT, "crates", "clip-es-train", "tests", "data", "tiny_torchvision.pth")


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    d = tmp_path_factory.mktemp("options")
    p = d / "split.txt"
    p.write_text("astronaut\nhorse\n")
    return str(p)


DEEPLAB = dict(width=2, blocks=[1, 2, 2, 2], crop=33, batch=1, iter_size=1, iters=1, threads=1)
DECODER = dict(model=MODEL, hidden=8, grid_crop=4, batch=1, iter_size=1, iters=1, threads=1)


@pytest.mark.parametrize("arch,bad,message", [
    ("deeplab-v2", dict(crop=0), "--crop must be in"),
    ("deeplab-v2", dict(crop=10**7), "--crop must be in"),
    ("deeplab-v2", dict(batch=0), "--batch must be in"),
    ("deeplab-v2", dict(iters=0), "--iters must be at least 1"),
    ("deeplab-v2", dict(lr=-0.1), "learning rate"),
    ("deeplab-v2", dict(lr=math.nan), "learning rate"),
    ("deeplab-v2", dict(lr=math.inf), "learning rate"),
    ("deeplab-v2", dict(num_classes=0), "--num-classes"),
    ("deeplab-v2", dict(num_classes=300), "--num-classes"),
    ("deeplab-v2", dict(width=0), "--width"),
    ("deeplab-v2", dict(blocks=[1, 0, 1, 1]), "--blocks"),
    ("deeplab-v2", dict(save_every=0), "--save-every must be at least 1"),
    ("deeplab-v2", dict(threads=0), "--threads"),
    ("clip-decoder", dict(upsamplings=9), "--upsamplings must be in 0..=4"),
    ("clip-decoder", dict(hidden=0), "--hidden"),
    ("clip-decoder", dict(grid_crop=0, batch=2), "--grid-crop 0"),
    ("clip-decoder", dict(iters=0), "--iters must be at least 1"),
])
def test_train_option_values_raise_value_error(split, tmp_path, arch, bad, message):
    base = dict(DEEPLAB, init=TRAIN_INIT) if arch == "deeplab-v2" else DECODER
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=message):
        clip_es.train(arch, IMAGES, GT, split, str(out), **dict(base, **bad))
    assert not out.exists()


def test_deeplab_v2_needs_init_or_random_init(split, tmp_path):
    with pytest.raises(ValueError, match="needs initial weights"):
        clip_es.train("deeplab-v2", IMAGES, GT, split, str(tmp_path / "a"), **DEEPLAB)
    got = clip_es.train("deeplab-v2", IMAGES, GT, split, str(tmp_path / "b"), random_init=True,
                        **DEEPLAB)
    for key in ["checkpoint", "final_checkpoint", "log", "curve"]:
        assert os.path.isfile(got[key]), key


def test_pseudo_mask_option_values_raise_value_error():
    model = clip_es.load_model(MODEL)
    image = os.path.join(IMAGES, "chelsea.jpg")
    cam = model.cams(image, ["cat"])
    for confidence in [math.nan, 2.0, -1.0]:
        with pytest.raises(ValueError, match="confidence must be in"):
            clip_es.pseudo_mask(cam, image, confidence=confidence)
    for bad in [dict(iterations=0), dict(gaussian_sxy=0.0), dict(bilateral_srgb=math.nan),
                dict(bilateral_weight=-1.0)]:
        with pytest.raises(ValueError, match="CRF"):
            clip_es.pseudo_mask(cam, image, **bad)
    labels, _ = clip_es.pseudo_mask(cam, image, confidence=0.0)
    assert (labels != 255).all()
    with pytest.raises(ValueError, match="empty class name"):
        model.cams(image, ["cat"], classes=["cat", ""])


def test_predict_scales_raise_value_error(split, tmp_path):
    got = clip_es.train("deeplab-v2", IMAGES, GT, split, str(tmp_path / "t"), init=TRAIN_INIT,
                        **DEEPLAB)
    # The scales' range is [0.1, 4] (the command line's --scales), checked before any work.
    for scales in [[0.0], [-1.0], [math.nan], [], [1.0, 0.001], [100.0]]:
        with pytest.raises(ValueError, match=r"--scales: (\S+ is not in \[0\.1, 4\]|give at least one)"):
            clip_es.predict(got["final_checkpoint"], IMAGES, split, str(tmp_path / "p"),
                            scales=scales)
    assert not (tmp_path / "p").exists()
    # The smallest accepted scale runs on every image.
    r = clip_es.predict(got["final_checkpoint"], IMAGES, split, str(tmp_path / "q"),
                        scales=[1.0, 0.1], threads=1)
    assert r["images"] == 2
    assert len(r["failures"]) == 0, r["failures"]
