"""`clip_es.segment`, `clip_es.prompts` and `clip_es.run` write the same files, byte for byte,
as the `clip-es` commands with the same options, on the tiny random model of
crates/clip-es-model/tests/fixtures and the example photos; bad options raise ValueError before
any work.

The `clip-es` binary is $CLIP_ES_BIN, else target/release/clip-es of this checkout (built by
`cargo test --release --workspace`, which .ci/run runs first)."""

import json
import os
import subprocess

import pytest

import clip_es

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
MODEL = os.path.join(ROOT, "crates", "clip-es-model", "tests", "fixtures", "tiny-deep-hf")
EXAMPLES = os.path.join(ROOT, "examples")
IMAGES = os.path.join(EXAMPLES, "images")
SHARPNESS = os.path.join(ROOT, "crates", "clip-es", "tests", "data", "sharpness.json")


def binary():
    path = os.environ.get("CLIP_ES_BIN") or os.path.join(ROOT, "target", "release", "clip-es")
    assert os.path.isfile(path), (
        f"no clip-es binary at {path}: build it (cargo build --release) or set CLIP_ES_BIN")
    return path


def cli(*args):
    out = subprocess.run([binary(), *map(str, args)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out


def files(directory, other):
    """Every file under `directory` (relative name -> bytes), the folder's own path written as
    `other` (same length: checkpoints and manifests record it), the training log's seconds
    dropped."""
    directory, other = str(directory), str(other)
    assert len(directory) == len(other)
    out = {}
    for base, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(base, name)
            rel = os.path.relpath(path, directory)
            with open(path, "rb") as f:
                data = f.read().replace(directory.encode(), other.encode())
            if name == "train.jsonl":
                lines = [json.loads(line) for line in data.decode().splitlines()]
                for line in lines:
                    line.pop("seconds", None)
                data = json.dumps(lines).encode()
            out[rel] = data
    return out


def assert_same_files(cli_dir, py_dir):
    want, got = files(cli_dir, py_dir), files(py_dir, py_dir)
    assert want, f"no files in {cli_dir}"
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name] == want[name], f"{name} differs"


PHOTOS = [os.path.join(IMAGES, "chelsea.jpg"), os.path.join(IMAGES, "horse.jpg")]


@pytest.mark.parametrize("case", ["typed", "free", "tags"])
def test_segment_equals_the_cli(tmp_path, case):
    options, kwargs = {
        "typed": (["--classes", "cat,horse"], {"classes": "cat,horse"}),
        "free": (["--max-tags", "2", "--no-crf"], {"max_tags": 2, "no_crf": True}),
        "tags": (["--tags-only"], {"tags_only": True}),
    }[case]
    cli("segment", "--model", MODEL, "--threads", "1", *options, "--out", tmp_path / "cli",
        *PHOTOS)
    report = clip_es.segment(PHOTOS, out=tmp_path / "pyt", model=MODEL, threads=1, **kwargs)
    assert report["failures"] == []
    assert len(report["results"]) == 2
    assert_same_files(tmp_path / "cli", tmp_path / "pyt")


def test_prompts_equals_the_cli(tmp_path):
    with open(SHARPNESS) as f:
        split = json.load(f)["split"]
    (tmp_path / "split.txt").write_text("\n".join(split) + "\n")
    templates = ["a photo of a {}.", "a clean origami {}.", "art of the {}."]
    (tmp_path / "templates.txt").write_text("\n".join(templates) + "\n")
    for d in ("cli", "pyt"):
        (tmp_path / d).mkdir()
    cli("prompts", "--dataset", "voc", "--threads", "1", "--model", MODEL, "--images", IMAGES,
        "--split", tmp_path / "split.txt", "--templates", tmp_path / "templates.txt",
        "--json", tmp_path / "cli" / "ranking.json")
    # A template file, as the command reads it, and a list of templates give the same ranking.
    from_file = clip_es.prompts(IMAGES, tmp_path / "templates.txt", split=tmp_path / "split.txt",
                                model=MODEL, threads=1, json=tmp_path / "pyt" / "ranking.json")
    assert_same_files(tmp_path / "cli", tmp_path / "pyt")
    from_list = clip_es.prompts(IMAGES, templates, split=tmp_path / "split.txt", model=MODEL,
                                threads=1)
    assert from_list["templates"] == from_file["templates"]
    assert from_file["images_used"] == 3 and from_file["failures"] == []


def test_run_equals_the_cli(tmp_path):
    common = ["--model", MODEL, "--images", IMAGES,
              "--labels", os.path.join(EXAMPLES, "labels.txt"),
              "--gt", os.path.join(EXAMPLES, "gt"), "--threads", "2", "--overlays",
              "--train", "clip-decoder", "--train-iters", "4", "--train-batch", "2",
              "--train-save-every", "2"]
    cli("run", *common, "--out", tmp_path / "cli")
    report = clip_es.run(IMAGES, tmp_path / "pyt", model=MODEL,
                         labels=os.path.join(EXAMPLES, "labels.txt"),
                         gt=os.path.join(EXAMPLES, "gt"), threads=2, overlays=True,
                         train="clip-decoder", train_iters=4, train_batch=2, train_save_every=2)
    assert not report["any_failed"]
    assert [e["what"] for e in report["evaluations"]] == [
        "evaluation of the CAMs", "evaluation of the masks", "evaluation of the predictions"]
    assert report["train"]["iters"] == 4
    assert_same_files(tmp_path / "cli", tmp_path / "pyt")


def test_bad_options_raise_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="threads"):
        clip_es.segment(PHOTOS, out=tmp_path / "a", model=MODEL, threads=0)
    with pytest.raises(ValueError, match="template"):
        clip_es.segment(PHOTOS, out=tmp_path / "b", model=MODEL, templates=["no braces"])
    with pytest.raises(ValueError, match="--scales"):
        clip_es.run(IMAGES, tmp_path / "c", model=MODEL,
                    labels=os.path.join(EXAMPLES, "labels.txt"), scales=[0.0])
    with pytest.raises(ValueError, match="train must be"):
        clip_es.run(IMAGES, tmp_path / "d", model=MODEL, train="resnet")
    with pytest.raises(ValueError, match="listed twice"):
        clip_es.prompts(IMAGES, ["a {}.", "a {}."], split=tmp_path / "split.txt", model=MODEL)
    # Nothing was written.
    assert not any((tmp_path / d).exists() for d in "abcd")
