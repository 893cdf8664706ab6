"""Stage three from Python equals the command line: `clip_es.train` writes the checkpoint
`clip-es train` writes with the same settings (byte for byte), resumes, and `clip_es.predict`
writes the label maps of `clip-es predict`. Tiny random CLIP, the example photos, pseudo masks
made by `clip-es run`."""

import os
import signal
import subprocess
import sys
import time

import pytest

import clip_es
from test_pipeline import IMAGES, MODEL, cli

IDS = ["astronaut", "camera", "chelsea", "horse"]
SETTINGS = dict(iters=6, batch=2, iter_size=1, hidden=16, grid_crop=4, save_every=3, threads=1)


def cli_settings():
    return ["--iters", "6", "--batch", "2", "--iter-size", "1", "--hidden", "16",
            "--grid-crop", "4", "--save-every", "3", "--threads", "1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("stage3")
    labels = os.path.join(os.path.dirname(IMAGES), "labels.txt")
    cli("run", "--model", MODEL, "--images", IMAGES, "--labels", labels,
        "--out", str(d / "run"), "--threads", "1")
    split = d / "split.txt"
    split.write_text("\n".join(IDS) + "\n")
    return d, str(d / "run" / "masks"), str(split)


def test_train_and_predict_equal_the_cli(data):
    d, masks, split = data
    got = clip_es.train("clip-decoder", IMAGES, masks, split, str(d / "py"), model=MODEL, **SETTINGS)
    assert got["start"] == 0 and got["iters"] == 6
    assert os.path.basename(got["checkpoint"]) == "checkpoint-000006.safetensors"
    cli("train", "--arch", "clip-decoder", "--images", IMAGES, "--masks", masks, "--split", split,
        "--out", str(d / "cli"), "--model", MODEL, *cli_settings())
    with open(got["final_checkpoint"], "rb") as a, open(d / "cli" / "final.safetensors", "rb") as b:
        assert a.read() == b.read()
    assert os.path.isfile(got["curve"]) and os.path.isfile(got["log"])

    # Resume (True: the latest checkpoint in out) to more iterations.
    more = clip_es.train("clip-decoder", IMAGES, masks, split, str(d / "py"), model=MODEL,
                         resume=True, **dict(SETTINGS, iters=9))
    assert (more["start"], more["iters"]) == (6, 9)

    for crf in [False, True]:
        tag = "crf" if crf else "plain"
        r = clip_es.predict(got["final_checkpoint"], IMAGES, split, str(d / f"pred-py-{tag}"),
                            crf=crf, threads=1)
        assert r == {"images": 4, "written": 4, "skipped": 0, "failures": []}
        cli("predict", "--checkpoint", got["final_checkpoint"], "--images", IMAGES, "--split",
            split, "--out", str(d / f"pred-cli-{tag}"), "--threads", "1", *(["--crf"] if crf else []))
        for i in IDS:
            with open(d / f"pred-py-{tag}" / f"{i}.png", "rb") as a, \
                    open(d / f"pred-cli-{tag}" / f"{i}.png", "rb") as b:
                assert a.read() == b.read(), (tag, i)
    again = clip_es.predict(got["final_checkpoint"], IMAGES, split, str(d / "pred-py-plain"))
    assert again["skipped"] == 4


def test_bad_arguments_raise(data, tmp_path):
    d, masks, split = data
    with pytest.raises(ValueError, match="arch must be"):
        clip_es.train("unet", IMAGES, masks, split, str(tmp_path))
    with pytest.raises(ValueError, match="loss must be"):
        clip_es.train("clip-decoder", IMAGES, masks, split, str(tmp_path), loss="focal")
    with pytest.raises(ValueError, match="no checkpoint"):
        clip_es.train("clip-decoder", IMAGES, masks, split, str(tmp_path / "empty"), resume=True)
    with pytest.raises(ValueError, match="not-there.safetensors"):
        clip_es.predict(str(tmp_path / "not-there.safetensors"), IMAGES, split, str(tmp_path / "p"))


def test_no_panic_reaches_python(data, tmp_path):
    # An option value the training library did not check (a decoder of 0 hidden channels):
    # whatever it makes of it, Python sees an ordinary exception (ValueError, or RuntimeError for an internal
    # error), never pyo3's PanicException. In a child interpreter, so that an abort fails the
    # test instead of pytest.
    d, masks, split = data
    code = (
        "import clip_es\n"
        "try:\n"
        f"    clip_es.train('clip-decoder', {IMAGES!r}, {masks!r}, {split!r}, "
        f"{str(tmp_path / 'hidden0')!r}, model={MODEL!r}, hidden=0, iters=1, batch=1, "
        "iter_size=1, grid_crop=4, threads=1)\n"
        "except Exception as e:\n"
        "    print('raised', type(e).__name__, e)\n"
        "else:\n"
        "    print('returned')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, (out.returncode, out.stdout, out.stderr[-2000:])
    assert out.stdout.split()[:2] in (["raised", "ValueError"], ["raised", "RuntimeError"]), \
        out.stdout


def test_ctrl_c_stops_training_and_keeps_its_checkpoints(data, tmp_path):
    # A long run (save_every=1) interrupted by SIGINT once two checkpoints exist ends with
    # KeyboardInterrupt within seconds; the checkpoints written stay loadable and the run
    # resumes from the latest.
    d, masks, split = data
    out = tmp_path / "run"
    settings = dict(SETTINGS, iters=100000, save_every=1, batch=1)
    code = (
        "import clip_es, sys\n"
        "try:\n"
        f"    clip_es.train('clip-decoder', {IMAGES!r}, {masks!r}, {split!r}, {str(out)!r}, "
        f"model={MODEL!r}, **{settings!r})\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted', flush=True)\n"
        "    sys.exit(0)\n"
        "print('finished')\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not (out / "checkpoint-000002.safetensors").exists():
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "no checkpoint written"
            time.sleep(0.05)
        child.send_signal(signal.SIGINT)
        stdout, stderr = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert child.returncode == 0 and stdout.strip() == "interrupted", (stdout, stderr[-2000:])
    saved = sorted(p.name for p in out.glob("checkpoint-*.safetensors"))
    assert len(saved) >= 2 and not list(out.glob("*.part")), saved
    last = int(saved[-1][len("checkpoint-"):-len(".safetensors")])
    more = clip_es.train("clip-decoder", IMAGES, masks, split, str(out), model=MODEL, resume=True,
                         **dict(SETTINGS, iters=last + 1))
    assert (more["start"], more["iters"]) == (last, last + 1)

def test_train_into_a_used_out_needs_resume_or_overwrite(data, tmp_path):
    d, masks, split = data
    out = str(tmp_path / "run")
    first = clip_es.train("clip-decoder", IMAGES, masks, split, out, model=MODEL, **SETTINGS)
    with open(first["final_checkpoint"], "rb") as f:
        before = f.read()
    with pytest.raises(ValueError, match="already holds a training run"):
        clip_es.train("clip-decoder", IMAGES, masks, split, out, model=MODEL, **SETTINGS)
    with open(first["final_checkpoint"], "rb") as f:
        assert f.read() == before
    again = clip_es.train("clip-decoder", IMAGES, masks, split, out, model=MODEL, overwrite=True,
                          **dict(SETTINGS, iters=3))
    assert (again["start"], again["iters"]) == (0, 3)
    assert not os.path.exists(os.path.join(out, "checkpoint-000006.safetensors"))
