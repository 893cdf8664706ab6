"""DeepLab-v2 (Caffe-style ResNet + ASPP + multi-scale inputs) in PyTorch, written from the
description in docs/training.md with deeplab-pytorch's parameter names, at any width and depth.
Used by golden_train.py and bench_train.py; the Rust crate clip-es-train mirrors it."""

import torch
import torch.nn as nn
import torch.nn.functional as F


class ConvBN(nn.Module):
    def __init__(self, cin, cout, k, stride, pad, dil, relu):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, pad, dil, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-5)
        self.relu = relu

    def forward(self, x):
        y = self.bn(self.conv(x))
        return F.relu(y) if self.relu else y


class Bottleneck(nn.Module):
    def __init__(self, cin, cout, stride, dil, shortcut):
        super().__init__()
        mid = cout // 4
        self.reduce = ConvBN(cin, mid, 1, stride, 0, 1, True)
        self.conv3x3 = ConvBN(mid, mid, 3, 1, dil, dil, True)
        self.increase = ConvBN(mid, cout, 1, 1, 0, 1, False)
        self.shortcut = ConvBN(cin, cout, 1, stride, 0, 1, False) if shortcut else None

    def forward(self, x):
        s = self.shortcut(x) if self.shortcut is not None else x
        return F.relu(self.increase(self.conv3x3(self.reduce(x))) + s)


class Stage(nn.Sequential):
    def __init__(self, n, cin, cout, stride, dil):
        super().__init__()
        for i in range(n):
            self.add_module(f"block{i + 1}", Bottleneck(cin if i == 0 else cout, cout, stride if i == 0 else 1, dil, i == 0))


class Stem(nn.Module):
    def __init__(self, cout):
        super().__init__()
        self.conv1 = ConvBN(3, cout, 7, 2, 3, 1, True)

    def forward(self, x):
        return F.max_pool2d(self.conv1(x), 3, 2, 1, ceil_mode=True)


class ASPP(nn.Module):
    def __init__(self, cin, n_classes, rates):
        super().__init__()
        for i, r in enumerate(rates):
            self.add_module(f"c{i}", nn.Conv2d(cin, n_classes, 3, 1, r, r, bias=True))

    def forward(self, x):
        return sum(m(x) for m in self.children())


class DeepLabV2(nn.Sequential):
    def __init__(self, n_classes, width=64, blocks=(3, 4, 23, 3), rates=(6, 12, 18, 24)):
        super().__init__()
        ch = [width * 2 ** p for p in range(6)]
        self.add_module("layer1", Stem(ch[0]))
        self.add_module("layer2", Stage(blocks[0], ch[0], ch[2], 1, 1))
        self.add_module("layer3", Stage(blocks[1], ch[2], ch[3], 2, 1))
        self.add_module("layer4", Stage(blocks[2], ch[3], ch[4], 1, 2))
        self.add_module("layer5", Stage(blocks[3], ch[4], ch[5], 1, 4))
        self.add_module("aspp", ASPP(ch[5], n_classes, rates))


class MSC(nn.Module):
    def __init__(self, base, scales=(0.5, 0.75)):
        super().__init__()
        self.base = base
        self.scales = scales

    def forward(self, x):
        full = self.base(x)
        size = full.shape[2:]
        outs = [full]
        for s in self.scales:
            outs.append(self.base(F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)))
        up = [full] + [F.interpolate(o, size=size, mode="bilinear", align_corners=False) for o in outs[1:]]
        return outs + [torch.max(torch.stack(up), dim=0)[0]]


def param_groups(model, lr, wd):
    """deeplab-pytorch's three groups: backbone convs 1x, ASPP weights 10x, ASPP biases 20x (no wd)."""
    g1, g10, g20 = [], [], []
    for name, p in model.named_parameters():
        if ".bn." in name:
            continue  # frozen BN: not optimised
        if "aspp" in name:
            (g20 if name.endswith("bias") else g10).append(p)
        else:
            g1.append(p)
    return [
        {"params": g1, "lr": lr, "weight_decay": wd},
        {"params": g10, "lr": 10 * lr, "weight_decay": wd},
        {"params": g20, "lr": 20 * lr, "weight_decay": 0.0},
    ]


def resize_labels(labels, size):
    """Labels to logit size by PIL nearest (float image), as deeplab-pytorch's main.py."""
    import numpy as np
    from PIL import Image

    out = []
    for l in labels:
        im = Image.fromarray(l.float().numpy()).resize((size[1], size[0]), resample=Image.NEAREST)
        out.append(np.asarray(im))
    return torch.LongTensor(np.stack(out))
