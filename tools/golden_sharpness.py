"""Golden values for `clip-es prompts` (sharpness-based prompt selection, CLIP-ES section 3.2),
computed directly with PyTorch on the tiny random model tiny-deep-hf, for the Rust test
crates/clip-es/tests/cli/prompts_cli.rs.

The criterion, written from the paper's description: for each image with at least two labels,
softmax over the dataset's classes of logit_scale * cos(image embedding, text embedding of the
template filled with the class's prompt text), the image embedding being the CAM stage's
(mean of ln_post over the patch tokens, projected; positional embedding resized and rounded to
float16); s = the scores of the image's labels; sharpness of the image = var(s) / mean(s)
(population variance); sharpness of the template = mean over those images.

usage: python tools/golden_sharpness.py
writes crates/clip-es/tests/data/sharpness.json
Needs torch, torchvision, transformers (for the fixture's tokenizer), pillow, numpy.
"""
import json
import os
import sys

import numpy as np
import torch
from PIL import Image
from torchvision import transforms
from transformers import CLIPTokenizer

TOOLS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TOOLS)
sys.path.insert(0, TOOLS)
import golden_clip  # noqa: E402

FIXTURE = os.path.join(REPO, "crates/clip-es-model/tests/fixtures/tiny-deep-hf")
IMAGES = os.path.join(REPO, "examples/images")
OUT = os.path.join(REPO, "crates/clip-es/tests/data/sharpness.json")

# The VOC prompt texts (class names with the reference's synonyms), as crates/clip-es/src/prompts.rs.
VOC_PROMPTS = ["aeroplane", "bicycle", "bird avian", "boat", "bottle", "bus", "car", "cat",
               "chair seat", "cow", "diningtable", "dog", "horse", "motorbike",
               "person with clothes,people,human", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor screen"]
# id, labels (VOC indices); horse has one label and is not used.
SPLIT = [("chelsea", [7, 17]), ("astronaut", [14, 0, 19]), ("camera", [14, 4]), ("horse", [12])]
TEMPLATES = ["a clean origami {}.", "a photo of a {}.", "{}", "a bright photo of the {} in the scene."]
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def text_features(model, tok, texts):
    rows = np.zeros((len(texts), 77), np.int64)
    for r, t in enumerate(texts):
        ids = tok(t)["input_ids"]
        rows[r, :len(ids)] = ids
    with torch.no_grad():
        f = model.encode_text(torch.from_numpy(rows))
    f = f / f.norm(dim=-1, keepdim=True)
    # one template: the mean of one normalised row, normalised again
    return f / f.norm(dim=-1, keepdim=True)


def image_embedding(model, path):
    img = Image.open(path)
    w, h = img.size
    ph, pw = -(-h // 16) * 16, -(-w // 16) * 16
    tf = transforms.Compose([
        transforms.Resize((ph, pw), interpolation=transforms.InterpolationMode.BICUBIC),
        lambda im: im.convert("RGB"),
        transforms.ToTensor(),
        transforms.Normalize(CLIP_MEAN, CLIP_STD),
    ])
    x = tf(img).unsqueeze(0)
    with torch.no_grad():
        _, _, _, mean_emb = model.encode_image(x)
    return mean_emb[0]


def main():
    torch.set_num_threads(2)
    model = golden_clip.tiny_deep()
    model.round_pos_fp16 = True
    tok = CLIPTokenizer(os.path.join(FIXTURE, "vocab.json"), os.path.join(FIXTURE, "merges.txt"))
    scale = model.logit_scale.exp().item()
    embeddings = {i: image_embedding(model, os.path.join(IMAGES, i + ".jpg")) for i, _ in SPLIT}
    results = []
    for t in TEMPLATES:
        feats = text_features(model, tok, [t.replace("{}", n) for n in VOC_PROMPTS])
        per_image = []
        for image_id, labels in SPLIT:
            if len(labels) < 2:
                continue
            z = embeddings[image_id]
            z = z / z.norm()
            p = torch.softmax(scale * (feats @ z), dim=0).numpy().astype(np.float64)
            s = p[labels]
            per_image.append(float(s.var() / s.mean()))
        results.append({"template": t, "sharpness": float(np.mean(per_image)),
                        "per_image": per_image})
    doc = {
        "model": "crates/clip-es-model/tests/fixtures/tiny-deep-hf",
        "split": [f"{i} " + " ".join(map(str, l)) for i, l in SPLIT],
        "results": results,
    }
    with open(OUT, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    for r in results:
        print(f"{r['sharpness']:.8f}  {r['template']}")


if __name__ == "__main__":
    main()
