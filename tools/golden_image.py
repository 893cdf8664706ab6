"""Golden files for crates/clip-es-image (image decoding, PIL resize, CLIP input, cv2 parity).

Re-run from the repository root with

    python tools/golden_image.py

It rewrites crates/clip-es-image/tests/data/ (images, expected arrays as .npy, manifest.json).
Needs Pillow, torchvision, OpenCV (cv2), numpy and scikit-image; the Rust tests only read the
files. Sources are crops of scikit-image's public-domain photos (chelsea, coffee, astronaut,
rocket), shrunk to small odd sizes so the files stay small.

What is recorded, per image:
  decoded        np.array(Image.open(p)) - PIL's pixels in the file's own mode (+ palette for P)
  resized_<t>    np.array(Image.open(p).resize((w, h), BICUBIC).convert("RGB")) for each target t
  native_<t>     the resized image still in its own mode (before convert), for debugging
  tensor_<t>     the reference transform of CLIP-ES (generate_cams_voc12._transform_resize):
                 Resize((h, w), BICUBIC) -> convert("RGB") -> ToTensor -> Normalize, float32 CHW
  imread         cv2.imread(p, cv2.IMREAD_COLOR)[..., ::-1] (RGB)
and cv2.resize(map, (W, H), interpolation=cv2.INTER_LINEAR) for random float32 maps, both with
OpenCV's default (IPP on, which is how the pip wheels run on x86-64) and with IPP switched off.
"""

import json
import math
import os
import shutil
import struct
import sys
import zlib

import cv2
import numpy as np
import skimage.data
import torch
import torchvision
from PIL import Image, features
from torchvision.transforms import Compose, Normalize, Resize, ToTensor
from torchvision.transforms import InterpolationMode

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "crates", "clip-es-image", "tests", "data")
IMG = os.path.join(OUT, "images")
EXP = os.path.join(OUT, "expected")

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


def reference_transform(h, w):
    # generate_cams_voc12.py:_transform_resize, verbatim in behaviour
    return Compose([
        Resize((h, w), interpolation=InterpolationMode.BICUBIC),
        lambda im: im.convert("RGB"),
        ToTensor(),
        Normalize(MEAN, STD),
    ])


def photo(name, box, size):
    """A crop of a scikit-image photo, shrunk with LANCZOS to `size` (w, h), as a PIL RGB image."""
    arr = getattr(skimage.data, name)()
    im = Image.fromarray(arr).crop(box)
    return im.resize(size, Image.LANCZOS)


def alpha_ramp(w, h, seed):
    """An alpha channel with 0, 255 and everything between."""
    rng = np.random.default_rng(seed)
    a = np.linspace(0, 255, w * h).reshape(h, w)
    a = np.clip(a + rng.normal(0, 40, (h, w)), 0, 255).astype(np.uint8)
    a[0, :3] = 0
    a[-1, -3:] = 255
    a[h // 2, w // 2] = 1
    return a


def exif_orientation(value):
    ex = Image.Exif()
    ex[0x0112] = value
    return ex.tobytes()


def write_png_adam7(path, rgb):
    """An 8-bit RGB PNG with Adam7 interlacing (Pillow and OpenCV cannot write one)."""
    h, w, _ = rgb.shape
    raw = b""
    for x0, y0, dx, dy in [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4),
                           (1, 0, 2, 2), (0, 1, 1, 2)]:
        sub = rgb[y0::dy, x0::dx]
        for row in sub if sub.size else []:
            raw += b"\x00" + row.tobytes()  # filter type 0 per row of each pass

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 1)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
                + chunk(b"IEND", b""))


def make_images():
    """Writes the test images; returns [(file, note)]."""
    made = []

    def save_pil(im, fname, note, **kw):
        im.save(os.path.join(IMG, fname), **kw)
        made.append((fname, note))

    def save_cv(bgr, fname, note, params=()):
        ok = cv2.imwrite(os.path.join(IMG, fname), bgr, list(params))
        assert ok, fname
        made.append((fname, note))

    cat = photo("chelsea", (120, 40, 420, 260), (45, 37))
    coffee = photo("coffee", (50, 30, 550, 360), (43, 29))
    astro = photo("astronaut", (100, 20, 420, 300), (35, 29))
    rocket = photo("rocket", (180, 40, 500, 300), (37, 23))
    cat_small = photo("chelsea", (60, 10, 400, 280), (29, 41))

    save_pil(cat, "rgb_q92_420.jpg", "JPEG 4:2:0 q92", quality=92, subsampling=2)
    save_pil(coffee, "rgb_q95_444.jpg", "JPEG 4:4:4 q95", quality=95, subsampling=0)
    save_pil(rocket, "rgb_q90_422.jpg", "JPEG 4:2:2 q90", quality=90, subsampling=1)
    save_pil(astro, "rgb_progressive.jpg", "progressive JPEG 4:2:0", quality=90, progressive=True)
    save_pil(cat_small.convert("L"), "gray.jpg", "grayscale JPEG", quality=90)
    save_pil(rocket.convert("CMYK"), "cmyk.jpg", "CMYK JPEG (Adobe, inverted)", quality=92)
    save_pil(cat_small, "exif_orient6.jpg", "JPEG with EXIF orientation 6", quality=90,
             exif=exif_orientation(6))
    bgr = np.ascontiguousarray(np.array(coffee)[..., ::-1])
    save_cv(bgr, "rgb_440.jpg", "JPEG 4:4:0 (h1v2 upsampling)",
            (cv2.IMWRITE_JPEG_QUALITY, 90, cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
             cv2.IMWRITE_JPEG_SAMPLING_FACTOR_440))
    bgr = np.ascontiguousarray(np.array(cat)[..., ::-1])
    save_cv(bgr, "rgb_411_rst.jpg", "JPEG 4:1:1 with restart markers",
            (cv2.IMWRITE_JPEG_QUALITY, 85, cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
             cv2.IMWRITE_JPEG_SAMPLING_FACTOR_411, cv2.IMWRITE_JPEG_RST_INTERVAL, 2))

    save_pil(rocket, "rgb.png", "PNG RGB 8-bit")
    rgba = coffee.copy()
    rgba.putalpha(Image.fromarray(alpha_ramp(*coffee.size, 1)))
    save_pil(rgba, "rgba.png", "PNG RGBA 8-bit")
    save_pil(cat_small.convert("L"), "gray.png", "PNG gray 8-bit")
    la = cat_small.convert("L")
    la = Image.merge("LA", (la, Image.fromarray(alpha_ramp(*la.size, 2))))
    save_pil(la, "gray_alpha.png", "PNG gray+alpha 8-bit")
    pal = astro.convert("P", palette=Image.ADAPTIVE, colors=50)
    save_pil(pal, "palette.png", "PNG palette (50 colours)")
    pal_t = rocket.convert("P", palette=Image.ADAPTIVE, colors=16)
    trns = bytes([0, 128] + [255] * 14)
    save_pil(pal_t, "palette_trns.png", "PNG palette 4-bit with tRNS", transparency=trns, bits=4)
    g16 = (np.array(cat_small.convert("L")).astype(np.uint16) * 257)
    g16[:4, :] = np.arange(g16.shape[1])[None, :]  # a few values below 256 too
    save_cv(g16, "gray16.png", "PNG gray 16-bit")
    rgb16 = (np.array(rocket).astype(np.uint16) * 257 + 100).astype(np.uint16)
    save_cv(np.ascontiguousarray(rgb16[..., ::-1]), "rgb16.png", "PNG RGB 16-bit")
    rgba16 = np.dstack([rgb16, (alpha_ramp(37, 23, 3).astype(np.uint16) * 257)])
    save_cv(np.ascontiguousarray(rgba16[..., [2, 1, 0, 3]]), "rgba16.png", "PNG RGBA 16-bit")
    bilevel = cat_small.convert("L").point(lambda v: 255 if v > 110 else 0).convert("1")
    save_pil(bilevel, "bilevel.png", "PNG 1-bit gray (PIL mode 1)")
    write_png_adam7(os.path.join(IMG, "rgb_interlaced.png"), np.array(cat_small))
    made.append(("rgb_interlaced.png", "PNG RGB 8-bit, Adam7 interlaced"))
    assert (np.array(Image.open(os.path.join(IMG, "rgb_interlaced.png"))) == np.array(cat_small)).all()
    # taller than 100x its width: Pillow shrinks such images vertically first
    tall = np.array(cat_small.convert("L").resize((3, 401), Image.BILINEAR))
    save_pil(Image.fromarray(tall), "tall.png", "PNG gray 3x401 (Pillow's tall-image path)")
    return made


def targets_for(w, h):
    """(tag, out_h, out_w): the CLIP-ES size (ceil to 16), a down-scale, a mixed one, and a
    strong shrink (where Pillow widens the filter support by up to 7x)."""
    return [
        ("p16", math.ceil(h / 16) * 16, math.ceil(w / 16) * 16),
        ("down", max(1, h * 2 // 3), max(1, w * 3 // 5)),
        ("mixed", h + 7, max(1, w // 2 - 1)),
        ("tiny", h // 5 + 1, w // 7 + 1),
    ]


def save(name, arr):
    np.save(os.path.join(EXP, name + ".npy"), np.ascontiguousarray(arr))


def image_goldens(made):
    entries = []
    for fname, note in made:
        path = os.path.join(IMG, fname)
        stem = fname.replace(".", "_")  # gray.jpg and gray.png both exist
        im = Image.open(path)
        mode = im.mode
        w, h = im.size
        decoded = np.array(im)
        save(stem + ".decoded", decoded)
        entry = {"file": fname, "note": note, "mode": mode, "width": w, "height": h,
                 "targets": []}
        if mode == "P":
            pal = np.array(im.getpalette("RGB"), dtype=np.uint8).reshape(-1, 3)
            save(stem + ".palette", pal)
        for tag, oh, ow in targets_for(w, h):
            native = Image.open(path).resize((ow, oh), Image.BICUBIC)
            if native.mode != "RGB":  # for RGB it equals resized_<t>
                save(f"{stem}.native_{tag}", np.array(native))
            save(f"{stem}.resized_{tag}", np.array(native.convert("RGB")))
            with_tensor = (tag == "p16" and fname != "tall.png") or fname in ("rgb_q92_420.jpg", "rgba.png")
            if with_tensor:
                t = reference_transform(oh, ow)(Image.open(path))
                assert t.dtype == torch.float32 and tuple(t.shape) == (3, oh, ow)
                save(f"{stem}.tensor_{tag}", t.numpy())
            entry["targets"].append({"tag": tag, "height": oh, "width": ow,
                                     "native_mode": native.mode, "tensor": with_tensor})
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        assert bgr is not None and bgr.dtype == np.uint8 and bgr.ndim == 3, fname
        save(stem + ".imread", bgr[..., ::-1])
        entries.append(entry)
    return entries


def normalize_lut():
    """ToTensor + Normalize of every byte value, per channel (3 x 256 float32)."""
    v = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 256).repeat(3, 1, 1)
    # ToTensor on a PIL image: to float, div(255); then Normalize (sub_ mean, div_ std)
    t = v.to(torch.float32).div(255)
    t = Normalize(MEAN, STD)(t)
    save("normalize_lut", t.reshape(3, 256).numpy())


def cv_resize_goldens():
    rng = np.random.default_rng(2023)
    cases = [
        # (src_h, src_w, dst_h, dst_w, kind)
        (8, 11, 89, 121, "unit"),      # CAM-like up-scale (about 11x)
        (5, 7, 11, 13, "unit"),
        (13, 17, 7, 9, "unit"),       # down
        (31, 19, 100, 7, "wide"),     # mixed
        (20, 30, 10, 15, "wide"),     # exact 2x down (OpenCV would use INTER_AREA without IPP)
        (16, 16, 32, 32, "unit"),     # exact 2x up
        (10, 10, 30, 30, "unit"),     # exact 3x up
        (9, 12, 3, 4, "wide"),        # exact 3x down
        (3, 2, 17, 17, "wide"),       # coordinate exactly on a source pixel
        (3, 47, 3, 3, "wide"),
        (1, 5, 4, 9, "unit"),         # one source row: OpenCV's own code path
        (6, 1, 3, 7, "wide"),         # one source column
        (1, 1, 5, 5, "unit"),
        (2, 2, 1, 1, "unit"),
        (7, 7, 7, 7, "unit"),         # same size: a copy
    ]
    entries = []
    for i, (sh, sw, dh, dw, kind) in enumerate(cases):
        src = rng.random((sh, sw), dtype=np.float32)
        if kind == "wide":  # magnitudes 1e-4 .. 1e2, where summation order shows
            src = (src * (10.0 ** rng.integers(-4, 3, (sh, sw)))).astype(np.float32)
        cv2.ipp.setUseIPP(True)
        ipp = cv2.resize(src, (dw, dh), interpolation=cv2.INTER_LINEAR)
        cv2.ipp.setUseIPP(False)
        plain = cv2.resize(src, (dw, dh), interpolation=cv2.INTER_LINEAR)
        cv2.ipp.setUseIPP(True)
        name = f"cvresize_{i:02d}_{sh}x{sw}_to_{dh}x{dw}"
        save(name + ".src", src)
        save(name + ".ipp", ipp)
        if dh * dw < 4000:  # the large case only with IPP, to keep the files small
            save(name + ".noipp", plain)
        entries.append({"name": name, "src_h": sh, "src_w": sw, "dst_h": dh, "dst_w": dw,
                        "noipp": dh * dw < 4000})
    return entries


def main():
    for d in (IMG, EXP):
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
    made = make_images()
    images = image_goldens(made)
    normalize_lut()
    resizes = cv_resize_goldens()
    manifest = {
        "versions": {
            "pillow": Image.__version__ if hasattr(Image, "__version__") else None,
            "libjpeg_turbo": features.version("libjpeg_turbo"),
            "opencv": cv2.__version__,
            "ipp": cv2.ipp.getIppVersion(),
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "numpy": np.__version__,
        },
        "images": images,
        "cv_resize": resizes,
    }
    import PIL
    manifest["versions"]["pillow"] = PIL.__version__
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    total = sum(os.path.getsize(os.path.join(dp, fn)) for dp, _, fns in os.walk(OUT) for fn in fns)
    print(f"wrote {len(images)} images, {len(resizes)} resize cases; {total / 1024:.0f} KiB",
          file=sys.stderr)


if __name__ == "__main__":
    main()
