"""`device=` of the Python entry points, as `--device` of the commands: `load_model(...,
device=)` runs `Model.cams` on the named device (`flex`: burn's CPU backend, the code the GPU
runs) with the CPU kernels' maps within float32 rounding, and names it; a device the wheel or
the machine lacks raises ValueError before any work, with what to build or install."""

import os

import numpy as np
import pytest

import clip_es
from test_pipeline import IMAGES, MODEL

PHOTO = os.path.join(IMAGES, "chelsea.jpg")


def test_load_model_names_its_device():
    assert clip_es.load_model(MODEL).device == "cpu (clip-es kernels)"
    assert clip_es.load_model(MODEL, device="flex").device == "flex (CPU)"


def test_cams_on_flex_equal_the_cpu_kernels():
    cpu = clip_es.load_model(MODEL).cams(PHOTO, ["cat", "sofa"], save_unrefined=True)
    flex = clip_es.load_model(MODEL, device="flex").cams(PHOTO, ["cat", "sofa"], save_unrefined=True)
    assert list(cpu["keys"]) == list(flex["keys"]) == [7, 17]
    for key in ["attn_highres", "highres"]:
        a, b = cpu[key].astype(np.float32), flex[key].astype(np.float32)
        assert a.shape == b.shape
        d = np.abs(a - b)
        # float16 maps in [0, 1]: one step is at most 4.9e-4
        assert d.mean() < 5e-4 and d.max() < 2e-3, (key, d.mean(), d.max())


def test_bad_devices_raise_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="--device tpu"):
        clip_es.load_model(MODEL, device="tpu")
    with pytest.raises(ValueError, match="--device tpu"):
        clip_es.segment([PHOTO], out=tmp_path / "a", model=MODEL, classes="cat", device="tpu")
    with pytest.raises(ValueError, match="--device tpu"):
        clip_es.run(IMAGES, tmp_path / "b", model=MODEL,
                    labels=os.path.join(os.path.dirname(IMAGES), "labels.txt"), device="tpu")
    split = tmp_path / "split.txt"
    split.write_text("chelsea\n")
    with pytest.raises(ValueError, match="tpu"):
        clip_es.train("clip-decoder", IMAGES, IMAGES, str(split), str(tmp_path / "c"), device="tpu")
    with pytest.raises(ValueError, match="tpu"):
        clip_es.predict(str(tmp_path / "none.safetensors"), IMAGES, str(split), str(tmp_path / "d"),
                        device="tpu")
    assert not any((tmp_path / d).exists() for d in "abcd")


def test_vulkan_is_refused_or_named():
    """A wheel without the `vulkan` feature (the default build), or a machine without a Vulkan
    driver, refuses it with what to do; a wheel and machine that have it name the adapter and
    give the CPU kernels' CAMs within float32 rounding."""
    try:
        model = clip_es.load_model(MODEL, device="vulkan")
    except ValueError as e:
        assert "--device vulkan" in str(e)
        assert "--features vulkan" in str(e) or "mesa-vulkan-drivers" in str(e), str(e)
    else:
        assert model.device.startswith("vulkan (") and model.device.endswith(")"), model.device
        got = model.cams(PHOTO, ["cat"], save_unrefined=True)
        want = clip_es.load_model(MODEL).cams(PHOTO, ["cat"], save_unrefined=True)
        for key in ["attn_highres", "highres"]:
            d = np.abs(got[key].astype(np.float32) - want[key].astype(np.float32))
            assert d.mean() < 5e-4 and d.max() < 2e-3, (key, d.mean(), d.max())
