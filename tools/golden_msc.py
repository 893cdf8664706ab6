"""Goldens of DeepLab-v2's multi-scale inputs (crates/clip-es-train/tests/train_golden.rs, the
`msc_` tests), made by deeplab-pytorch's own model code: its `MSC` wrapper, and its `_Stem`,
`_ResLayer` and `_ASPP` assembled as its `DeepLabV2` does, only narrower (width 2 instead of
64; its `DeepLabV2` fixes the width). The weights are tests/data/tiny_deeplab.pth (made by
golden_train.py).

The image sizes, 321x321, 451x300 and 741x500 (width x height), have 0.75 and 0.5 multiples
that are not integers, where `F.interpolate(x, scale_factor=p)` (the step 1/p) and a resize to
the size floor(p * n) (the step n / floor(p * n)) sample different positions. The pictures
and labels come from an integer formula that the Rust test computes the same way, so only the
results are stored:

- `resize_*`: `F.interpolate(scale_factor=p, mode="bilinear", align_corners=False)` of a small
  tensor at p = 0.75, 0.5, 0.6;
- `loss_WxH`: the loss of two training steps as deeplab-pytorch's `main.py` `train` computes
  it (model.train() with frozen BN; the sum of the cross-entropies ignoring 255 of the four
  outputs against the labels shrunk by PIL nearest; SGD momentum 0.9, weight decay 5e-4, the
  1x/10x/20x LR groups), and `grad_WxH.NAME` some gradients of the first step;
- `predict_WxH.png`: the label map of `main.py` `test`'s inference (the MSC max, upsampled
  bilinearly to the image, softmax, argmax) of the picture in BGR minus the Caffe mean.

    python tools/golden_msc.py crates/clip-es-train/tests/data /path/to/deeplab-pytorch
    (or DEEPLAB_PYTORCH=/path/to/deeplab-pytorch python tools/golden_msc.py OUT)
"""

import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

out = sys.argv[1] if len(sys.argv) > 1 else "crates/clip-es-train/tests/data"
upstream = sys.argv[2] if len(sys.argv) > 2 else os.environ.get("DEEPLAB_PYTORCH")
if not upstream or not os.path.isdir(os.path.join(upstream, "libs", "models")):
    sys.exit("give a checkout of github.com/kazuto1011/deeplab-pytorch as the second argument "
             "or in DEEPLAB_PYTORCH")
sys.path.insert(0, upstream)
from libs.models.deeplabv2 import DeepLabV2, _ASPP  # noqa: E402
from libs.models.msc import MSC  # noqa: E402
from libs.models.resnet import _ResLayer, _Stem  # noqa: E402

torch.set_num_threads(1)
N_CLASSES, WIDTH, BLOCKS, RATES = 5, 2, (1, 2, 1, 2), (6, 12, 18, 24)
MEAN_BGR = (104.008, 116.669, 122.675)
SIZES = [(321, 321), (451, 300), (741, 500)]  # width x height
LR, MOMENTUM, WEIGHT_DECAY = 1e-5, 0.9, 5e-4
GRADS = ["aspp.c0.bias", "aspp.c3.weight", "layer1.conv1.conv.weight"]


class NarrowDeepLabV2(DeepLabV2):
    """deeplab-pytorch's DeepLabV2 at another width: its __init__ with ch = width * 2**p."""

    def __init__(self, n_classes, width, n_blocks, atrous_rates):
        nn.Sequential.__init__(self)
        ch = [width * 2 ** p for p in range(6)]
        self.add_module("layer1", _Stem(ch[0]))
        self.add_module("layer2", _ResLayer(n_blocks[0], ch[0], ch[2], 1, 1))
        self.add_module("layer3", _ResLayer(n_blocks[1], ch[2], ch[3], 2, 1))
        self.add_module("layer4", _ResLayer(n_blocks[2], ch[3], ch[4], 1, 2))
        self.add_module("layer5", _ResLayer(n_blocks[3], ch[4], ch[5], 1, 4))
        self.add_module("aspp", _ASPP(ch[5], n_classes, atrous_rates))


def load_model():
    model = MSC(base=NarrowDeepLabV2(N_CLASSES, WIDTH, BLOCKS, RATES), scales=[0.5, 0.75])
    state = torch.load(os.path.join(out, "tiny_deeplab.pth"), map_location="cpu")
    model.load_state_dict(state)
    return model


def mix(x, y, c):
    """An integer hash of (x, y, c), uint32 arithmetic wrapping (the Rust test's `mix`)."""
    h = (x * np.uint32(73856093)) ^ (y * np.uint32(19349663)) ^ np.uint32(c * 83492791)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0x5BD1E995)
    h ^= h >> np.uint32(15)
    return h


def picture(w, h):
    """RGB uint8 [h, w, 3]: blocks of flat colour plus noise."""
    y, x = np.mgrid[0:h, 0:w].astype(np.uint32)
    planes = [((x // 37 + y // 29 + c) * 53) % 200 + mix(x, y, c) % 48 for c in range(3)]
    return np.stack(planes, axis=-1).astype(np.uint8)


def labels(w, h):
    """Class ids in bands, 255 on scattered pixels and on the last 20 columns."""
    y, x = np.mgrid[0:h, 0:w].astype(np.uint32)
    lab = ((x // 41 + 2 * (y // 53)) % N_CLASSES).astype(np.int64)
    lab[mix(x, y, 3) % 7 == 0] = 255
    lab[:, w - 20:] = 255
    return lab


def bgr_minus_mean(rgb):
    """libs/datasets/base.py: the float32 BGR image minus the float64 mean, in place."""
    image = rgb[:, :, ::-1].astype(np.float32)
    image -= np.array(MEAN_BGR)
    return torch.from_numpy(image.transpose(2, 0, 1).copy())[None]


def resize_labels(lab, size):
    """main.py's resize_labels (PIL nearest on the float map). main.py passes (H, W) where PIL
    takes (width, height); its crops are square, so this passes (W, H) for the same result on
    any shape."""
    h, w = size
    return torch.LongTensor(np.array(Image.fromarray(lab.astype(np.float32)).resize((w, h), Image.NEAREST)))[None]


def get_params(model, key):
    """main.py's get_params: backbone convs 1x, ASPP weights 10x, ASPP biases 20x."""
    for name, m in model.named_modules():
        if not isinstance(m, nn.Conv2d):
            continue
        if key == "1x" and "layer" in name:
            yield from m.parameters()
        if key == "10x" and "aspp" in name:
            yield m.weight
        if key == "20x" and "aspp" in name:
            yield m.bias


g = {}
# F.interpolate by a factor, at sizes whose multiples are not integers.
src = torch.from_numpy(((np.arange(2 * 13 * 21) * 37) % 101).astype(np.float32).reshape(1, 2, 13, 21) - 50)
g["resize_src"] = src
for p in (0.75, 0.5, 0.6):
    g[f"resize_{p}"] = F.interpolate(src, scale_factor=p, mode="bilinear", align_corners=False)

for w, h in SIZES:
    rgb = picture(w, h)
    x = bgr_minus_mean(rgb)
    lab = labels(w, h)

    # Two training steps (main.py train: train mode, frozen BN, loss on all four outputs).
    model = load_model()
    model.train()
    model.base.freeze_bn()
    opt = torch.optim.SGD(
        [{"params": get_params(model.base, "1x"), "lr": LR, "weight_decay": WEIGHT_DECAY},
         {"params": get_params(model.base, "10x"), "lr": 10 * LR, "weight_decay": WEIGHT_DECAY},
         {"params": get_params(model.base, "20x"), "lr": 20 * LR, "weight_decay": 0.0}],
        momentum=MOMENTUM)
    crit = nn.CrossEntropyLoss(ignore_index=255)
    losses = []
    for step in range(2):
        opt.zero_grad()
        loss = 0
        for logit in model(x):
            loss = loss + crit(logit, resize_labels(lab, logit.shape[2:]))
        loss.backward()
        if step == 0:
            params = dict(model.base.named_parameters())
            for name in GRADS:
                g[f"grad_{w}x{h}.{name}"] = params[name].grad.clone()
        losses.append(float(loss.detach()))
        opt.step()
    g[f"loss_{w}x{h}"] = torch.tensor(losses, dtype=torch.float32)

    # Inference (main.py test): the MSC max, upsampled to the image, softmax, argmax.
    model = load_model()
    model.eval()
    with torch.no_grad():
        logits = F.interpolate(model(x), size=(h, w), mode="bilinear", align_corners=False)
        pred = torch.argmax(F.softmax(logits, dim=1), dim=1)[0].numpy().astype(np.uint8)
    Image.fromarray(pred).save(os.path.join(out, f"msc_predict_{w}x{h}.png"), optimize=True)
    print(f"{w}x{h}: losses {losses}, classes {np.bincount(pred.ravel(), minlength=N_CLASSES)}")

save_file({k: v.contiguous() for k, v in g.items()}, os.path.join(out, "golden_msc.safetensors"),
          metadata={"sizes": ",".join(f"{w}x{h}" for w, h in SIZES), "lr": str(LR)})
print("wrote", out)
