"""The CLIP-ES stages from Python equal the command line's outputs: `Model.cams` the npz of
`clip-es cams`, `pseudo_mask` the PNG of `clip-es masks`, `evaluate` the JSON of
`clip-es eval`, on the tiny random model of crates/clip-es-model/tests/fixtures and the
example photos.

The `clip-es` binary is $CLIP_ES_BIN, else target/release/clip-es of this checkout (built by
`cargo test --release --workspace`, which .ci/run runs first)."""

import json
import os
import struct
import subprocess
import zlib

import numpy as np
import pytest

import clip_es

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
MODEL = os.path.join(ROOT, "crates", "clip-es-model", "tests", "fixtures", "tiny-deep-hf")
IMAGES = os.path.join(ROOT, "examples", "images")
GT = os.path.join(ROOT, "examples", "gt")
# id -> labels, as examples/labels.txt
LABELS = {"chelsea": ["cat"], "horse": ["horse"], "astronaut": ["person"]}


def binary():
    path = os.environ.get("CLIP_ES_BIN") or os.path.join(ROOT, "target", "release", "clip-es")
    assert os.path.isfile(path), (
        f"no clip-es binary at {path}: build it (cargo build --release) or set CLIP_ES_BIN")
    return path


def cli(*args):
    out = subprocess.run([binary(), *args], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out


def read_png(path):
    """An 8-bit grayscale or palette PNG's sample values (H, W), non-interlaced."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            w, h, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and color in (0, 3) and interlace == 0, (depth, color, interlace)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    out = np.zeros((h, w), np.uint8)
    prev = np.zeros(w, np.int32)
    for y in range(h):
        ftype = raw[y * (w + 1)]
        line = np.frombuffer(raw, np.uint8, w, y * (w + 1) + 1).astype(np.int32)
        cur = np.zeros(w, np.int32)
        for x in range(w):
            a = cur[x - 1] if x else 0
            b = prev[x]
            c = prev[x - 1] if x else 0
            if ftype == 0:
                p = 0
            elif ftype == 1:
                p = a
            elif ftype == 2:
                p = b
            elif ftype == 3:
                p = (a + b) // 2
            else:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                p = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            cur[x] = (line[x] + p) & 255
        out[y] = cur
        prev = cur
    return out


@pytest.fixture(scope="module")
def model():
    return clip_es.load_model(MODEL)


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """CAMs, masks and the evaluation of the example photos by the CLI."""
    d = tmp_path_factory.mktemp("cli")
    labels = d / "labels.txt"
    labels.write_text("".join(f"{i} {' '.join(l)}\n" for i, l in LABELS.items()))
    cli("cams", "--model", MODEL, "--images", IMAGES, "--labels", str(labels),
        "--out", str(d / "cams"), "--threads", "1")
    cli("masks", "--cams", str(d / "cams"), "--images", IMAGES, "--split", str(labels),
        "--out", str(d / "masks"), "--jobs", "1")
    cli("eval", "--cams", str(d / "cams"), "--gt", GT, "--split", str(labels),
        "--json", str(d / "eval_cams.json"), "--jobs", "1")
    cli("eval", "--masks", str(d / "masks"), "--gt", GT, "--split", str(labels),
        "--json", str(d / "eval_masks.json"), "--jobs", "1")
    return d


@pytest.mark.parametrize("image_id", sorted(LABELS))
def test_cams_equal_the_cli(model, cli_run, image_id):
    got = model.cams(os.path.join(IMAGES, image_id + ".jpg"), LABELS[image_id], dataset="voc")
    want = np.load(cli_run / "cams" / f"{image_id}.npz")
    assert sorted(got) == ["attn_highres", "keys"]
    assert got["keys"].dtype == np.int64 and got["attn_highres"].dtype == np.float16
    assert np.array_equal(got["keys"], want["keys"])
    assert got["attn_highres"].shape == want["attn_highres"].shape
    assert np.array_equal(got["attn_highres"], want["attn_highres"])


def write_png_rgb(path, rgb):
    """An 8-bit RGB PNG of `rgb` (H, W, 3) uint8."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))

    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_cams_of_an_array_equal_those_of_the_file(model, tmp_path):
    rng = np.random.default_rng(3)
    rgb = np.kron(rng.integers(0, 256, (6, 5, 3)), np.ones((9, 11, 1))).astype(np.uint8)
    path = tmp_path / "img.png"
    write_png_rgb(path, rgb)
    from_file = model.cams(str(path), ["cat", "dog"])
    from_array = model.cams(rgb, ["cat", "dog"])
    assert np.array_equal(from_array["keys"], [7, 11])
    assert np.array_equal(from_array["attn_highres"], from_file["attn_highres"])
    # os.PathLike, and an array with other strides.
    assert np.array_equal(model.cams(path, [7, 11])["attn_highres"], from_file["attn_highres"])
    view = np.ascontiguousarray(rgb[:, ::-1])[:, ::-1]
    assert not view.flags["C_CONTIGUOUS"]
    assert np.array_equal(model.cams(view, ["cat", "dog"])["attn_highres"],
                          from_file["attn_highres"])
    # The unrefined maps on request; another class set.
    both = model.cams(rgb, ["dog"], classes=["dog", "cat"], save_unrefined=True)
    assert sorted(both) == ["attn_highres", "highres", "keys"] and list(both["keys"]) == [0]
    # Masks from an array equal those from the file.
    cam = model.cams(rgb, ["cat"])
    a = clip_es.pseudo_mask(cam, rgb)
    b = clip_es.pseudo_mask(cam, str(path))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_pseudo_masks_equal_the_cli(cli_run):
    for image_id in sorted(LABELS):
        cam = dict(np.load(cli_run / "cams" / f"{image_id}.npz"))
        labels, confidence = clip_es.pseudo_mask(cam, os.path.join(IMAGES, image_id + ".jpg"))
        want = read_png(cli_run / "masks" / f"{image_id}.png")
        assert labels.dtype == np.uint8 and confidence.dtype == np.float32
        assert labels.shape == want.shape == confidence.shape
        assert np.array_equal(labels, want), image_id
        assert ((labels == 255) == (confidence < 0.95)).all()


def test_evaluate_equals_the_cli(cli_run):
    split = str(cli_run / "labels.txt")
    for kind in ["cams", "masks"]:
        got = clip_es.evaluate(GT, split, **{kind: str(cli_run / kind)}, threads=1)
        with open(cli_run / f"eval_{kind}.json") as f:
            want = json.load(f)
        assert got == want


def test_bad_arguments_raise(model, tmp_path):
    image = os.path.join(IMAGES, "chelsea.jpg")
    with pytest.raises(ValueError, match="unknown class"):
        model.cams(image, ["unicorn"])
    with pytest.raises(ValueError, match="label 20 is not one of the 20 classes"):
        model.cams(image, [20])
    with pytest.raises(ValueError, match="no labels"):
        model.cams(image, [])
    with pytest.raises(TypeError):
        model.cams(image, "cat")
    with pytest.raises(ValueError, match="box threshold"):
        model.cams(image, ["cat"], box_threshold=1.5)
    # The model is still usable after a refused classifier.
    assert model.cams(image, ["cat"])["attn_highres"].shape[0] == 1
    with pytest.raises(ValueError, match="missing.jpg"):
        model.cams(os.path.join(IMAGES, "missing.jpg"), ["cat"])
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        model.cams(np.zeros((32, 32), np.uint8), ["cat"])
    with pytest.raises(ValueError, match="smaller than"):
        model.cams(np.zeros((8, 8, 3), np.uint8), ["cat"])
    cam = model.cams(image, ["cat"])
    bad = dict(cam, attn_highres=cam["attn_highres"].astype(np.float32))
    with pytest.raises(ValueError, match="float16"):
        clip_es.pseudo_mask(bad, image)
    nan = dict(cam, attn_highres=np.full_like(cam["attn_highres"], np.nan))
    with pytest.raises(ValueError):
        clip_es.pseudo_mask(nan, image)
    with pytest.raises(ValueError, match="but the image is"):
        clip_es.pseudo_mask(cam, os.path.join(IMAGES, "horse.jpg"))
    with pytest.raises(ValueError, match="exactly one of"):
        clip_es.evaluate(GT, str(tmp_path / "split.txt"))
    with pytest.raises(ValueError):
        clip_es.load_model(str(tmp_path / "no-such-model"))
