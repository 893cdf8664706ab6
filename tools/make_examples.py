"""Builds examples/: a mini dataset of public-domain / CC0 photos from scikit-image with
image-level labels (`id l1 l2 ...`, VOC class names) and approximate ground-truth masks.

usage: python tools/make_examples.py   (needs scikit-image, opencv, pillow)

The ground truth is coarse: the horse mask is the silhouette itself (exact); the others are
polygons drawn by eye below (with a 7-pixel ignore band, 255, along their outline), good enough
to show what `clip-es eval` reports, not to rank methods.
"""
import os

import cv2
import numpy as np
import skimage
import skimage.data as data
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "examples")
VOC = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
       "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor"]

# id, skimage function, labels, licence, outline polygon (x, y) of the labelled object or None
ITEMS = [
    ("chelsea", "chelsea", ["cat"], "CC0, photographer Stefan van der Walt (scikit-image data)",
     [(40, 0), (395, 0), (390, 50), (365, 110), (355, 170), (345, 240), (335, 300), (0, 300), (0, 140),
      (25, 100), (30, 40)]),
    ("astronaut", "astronaut", ["person"], "public domain, NASA (scikit-image data)",
     [(155, 25), (230, 15), (300, 40), (300, 100), (285, 150), (305, 200), (300, 250), (345, 280), (360, 330),
      (365, 380), (330, 370), (290, 400), (275, 512), (20, 512), (20, 400), (25, 300), (50, 250), (115, 215),
      (120, 165), (165, 140), (160, 100), (150, 60)]),
    ("camera", "camera", ["person"], "CC0, photographer Lav Varshney (scikit-image data)",
     [(165, 70), (240, 65), (265, 95), (255, 140), (250, 190), (270, 200), (330, 175), (330, 200), (300, 230),
      (290, 260), (280, 300), (250, 320), (160, 330), (150, 400), (150, 512), (0, 512), (0, 240), (60, 160),
      (130, 110), (160, 110)]),
    ("horse", "horse", ["horse"], "CC0, Andreas Preuss via openclipart (scikit-image data)", None),
]


def voc_palette():
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


def polygon_mask(shape, polygon):
    m = np.zeros(shape, np.uint8)
    cv2.fillPoly(m, [np.array(polygon, np.int32)], 1)
    return m.astype(bool)


def main():
    for d in ("images", "gt"):
        os.makedirs(os.path.join(OUT, d), exist_ok=True)
    pal = voc_palette()
    lines, notes = [], []
    for iid, fn, labels, licence, rect in ITEMS:
        arr = getattr(data, fn)()
        if fn == "horse":
            fg = ~arr  # silhouette is False on the horse
            img = Image.fromarray(np.where(fg, 30, 235).astype(np.uint8)).convert("RGB")
        else:
            img = Image.fromarray(arr)
            fg = polygon_mask(arr.shape[:2], rect)
        img.save(os.path.join(OUT, "images", iid + ".jpg"), quality=90)
        gt = np.zeros(fg.shape, np.uint8)
        gt[fg] = VOC.index(labels[0]) + 1
        # an ignore band (255) on the outline, as VOC annotates (wider: the polygons are coarse)
        edge = cv2.morphologyEx(fg.astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((7, 7), np.uint8)) > 0
        if fn != "horse":
            gt[edge] = 255
        m = Image.fromarray(gt, mode="P")
        m.putpalette(pal)
        m.save(os.path.join(OUT, "gt", iid + ".png"))
        lines.append(" ".join([iid] + labels))
        notes.append(f"| {iid}.jpg | {', '.join(labels)} | {licence} | {'exact (silhouette)' if fn == 'horse' else 'polygon by eye, coarse'} |")
    open(os.path.join(OUT, "labels.txt"), "w").write("\n".join(lines) + "\n")
    with open(os.path.join(OUT, "LICENSES.md"), "w") as f:
        f.write("# Example images\n\nFrom scikit-image " + skimage.__version__ + " (`skimage.data`), which records each "
                "licence in its docstring. Made by tools/make_examples.py.\n\n"
                "| file | labels | licence | ground truth |\n|---|---|---|---|\n" + "\n".join(notes) + "\n")
    print("examples written to", OUT)


if __name__ == "__main__":
    main()
