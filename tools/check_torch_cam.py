"""Checks tools/torch_cam.py (the golden generator of the CAM stage) against the CLIP-ES
reference on the parity fixture: same weights, same inputs, compare attn_highres.

usage: OFFICIAL_REPO=DIR python tools/check_torch_cam.py FIXTURE_DIR REFERENCE_CAMS_DIR
(FIXTURE_DIR: a parity fixture, random ViT-B/16 weights and a mini VOC dataset as tools/parity/make_fixture.py
makes them; REFERENCE_CAMS_DIR the reference's
generate_cams_voc12.py output for it). Prints per-image mean / max differences.
"""
import os
import sys
import xml.etree.ElementTree as ET

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import Compose, InterpolationMode, Normalize, Resize, ToTensor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_cam  # noqa: E402
import torch_clip  # noqa: E402

sys.path.insert(0, os.environ["OFFICIAL_REPO"])
import clip  # noqa: E402  (the reference's tokenizer, to build the same text features)
from clip_text import BACKGROUND_CATEGORY, class_names, new_class_names  # noqa: E402

fx, ref_dir = sys.argv[1], sys.argv[2]
torch.set_num_threads(2)
sd = torch.load(os.path.join(fx, "ViT-B-16-random.pt"), map_location="cpu")
model = torch_clip.build_model(sd, round_pos_fp16=True)


def features(names):
    with torch.no_grad():
        ids = clip.tokenize([f"a clean origami {n}." for n in names])
        f = model.encode_text(ids)
    return f / f.norm(dim=-1, keepdim=True)


fg, bg = features(new_class_names), features(BACKGROUND_CATEGORY)
root = os.path.join(fx, "VOC2012")
for im in open(os.path.join(root, "ImageSets/Segmentation/train.txt")).read().split():
    img = Image.open(os.path.join(root, "JPEGImages", im + ".jpg"))
    W, H = img.size
    h, w = int(np.ceil(H / 16) * 16), int(np.ceil(W / 16) * 16)
    x = Compose([Resize((h, w), interpolation=InterpolationMode.BICUBIC), lambda i: i.convert("RGB"), ToTensor(),
                 Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))])(img)[None]
    labels = []
    for o in ET.parse(os.path.join(root, "Annotations", im + ".xml")).getroot().iter("object"):
        c = class_names.index(o.find("name").text)
        if c not in labels:
            labels.append(c)
    out = torch_cam.clip_es_cams(model, x, torch.cat([fg[labels], bg]), len(labels), (H, W))
    ref = np.load(os.path.join(ref_dir, im + ".npy"), allow_pickle=True).item()
    ours = out["attn_highres"].astype(np.float16).astype(np.float32)
    d = np.abs(ours - ref["attn_highres"].astype(np.float32))
    print(f"{im}: keys {list(ref['keys'])} vs {labels}: mean {d.mean():.6f} max {d.max():.6f}")
