"""Goldens of the torchvision ResNet initialisation of DeepLab-v2 (crates/clip-es-train,
tests/train_golden.rs): a tiny ResNet built by torchvision's own code (`ResNet._make_layer` with
`torchvision.models.resnet.Bottleneck`, replace_stride_with_dilation=[False, True, True]) at
width 2 (planes 2/4/8/16, blocks 1/2/2/2), random BN statistics, saved as a torchvision-layout
state dict (`fc.*` included); a random ASPP with our key names; and on one random RGB image:

* `tv_stem`, `tv_features`, `tv_logits`: torchvision's own forward (input RGB/255 normalised by
  torchvision's mean/std; zero padding of the 7x7 stem conv): conv1+bn1+relu, layer4, ASPP sum;
* `pad_features`, `pad_logits`: the same network with the raw image padded by 3 pixels of the
  Caffe mean colour and stem padding 0, which is exactly what the folded stem computes (the
  Rust side feeds BGR minus the Caffe mean; its zero padding is the Caffe mean colour);
* `image_rgb`: the raw image (0..255, RGB, NCHW).

    python tools/golden_torchvision.py crates/clip-es-train/tests/data
"""

import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file
from torchvision.models.resnet import Bottleneck, ResNet

out = sys.argv[1] if len(sys.argv) > 1 else "crates/clip-es-train/tests/data"
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)
torch.set_num_threads(1)

WIDTH, BLOCKS, N_CLASSES, RATES = 2, (1, 2, 2, 2), 3, (6, 12, 18, 24)
TV_MEAN, TV_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (104.008, 116.669, 122.675)  # data.rs MEAN_BGR

# torchvision's ResNet.__init__ with the stem and stage widths made small: the stages come from
# torchvision's own _make_layer (strides, dilations, downsample placement as in resnet101 with
# replace_stride_with_dilation=[False, True, True]).
net = ResNet.__new__(ResNet)
nn.Module.__init__(net)
net._norm_layer = nn.BatchNorm2d
net.inplanes, net.dilation, net.groups, net.base_width = WIDTH, 1, 1, 64
net.conv1 = nn.Conv2d(3, WIDTH, kernel_size=7, stride=2, padding=3, bias=False)
net.bn1 = nn.BatchNorm2d(WIDTH)
net.relu = nn.ReLU(inplace=True)
net.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
net.layer1 = net._make_layer(Bottleneck, WIDTH, BLOCKS[0])
net.layer2 = net._make_layer(Bottleneck, WIDTH * 2, BLOCKS[1], stride=2, dilate=False)
net.layer3 = net._make_layer(Bottleneck, WIDTH * 4, BLOCKS[2], stride=2, dilate=True)
net.layer4 = net._make_layer(Bottleneck, WIDTH * 8, BLOCKS[3], stride=2, dilate=True)
net.avgpool = nn.AdaptiveAvgPool2d((1, 1))
net.fc = nn.Linear(WIDTH * 32, 10)
with torch.no_grad():
    for name, p in net.named_parameters():
        if name.endswith("weight") and p.dim() == 4:
            nn.init.kaiming_normal_(p, mode="fan_out", nonlinearity="relu")
        elif "bn" in name or "downsample.1" in name:
            if name.endswith("weight"):
                p.uniform_(0.5, 1.5)
            else:
                p.uniform_(-0.2, 0.2)
    for name, b in net.named_buffers():
        if name.endswith("running_mean"):
            b.uniform_(-0.2, 0.2)
        elif name.endswith("running_var"):
            b.uniform_(0.5, 2.0)
net.eval()
torch.save(net.state_dict(), os.path.join(out, "tiny_torchvision.pth"))

aspp = {}
for i, _ in enumerate(RATES):
    aspp[f"aspp.c{i}.weight"] = torch.randn(N_CLASSES, WIDTH * 32, 3, 3) * 0.05
    aspp[f"aspp.c{i}.bias"] = torch.rand(N_CLASSES) * 0.2 - 0.1


def backbone(x):
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    return net.layer4(net.layer3(net.layer2(net.layer1(x))))


def head(h):
    return sum(F.conv2d(h, aspp[f"aspp.c{i}.weight"], aspp[f"aspp.c{i}.bias"], padding=r, dilation=r)
               for i, r in enumerate(RATES))


def tv_norm(raw):
    m = torch.tensor(TV_MEAN).view(1, 3, 1, 1)
    s = torch.tensor(TV_STD).view(1, 3, 1, 1)
    return (raw / 255 - m) / s


H, W = 64, 56
raw = torch.randint(0, 256, (1, 3, H, W)).float()
with torch.no_grad():
    tv_stem = net.relu(net.bn1(net.conv1(tv_norm(raw))))
    tv_h = backbone(tv_norm(raw))
    tv_l = head(tv_h)
    # What the folded stem computes: zero padding of (BGR - Caffe mean) is the Caffe mean colour.
    caffe_rgb = torch.tensor(CAFFE_MEAN_BGR[::-1]).view(1, 3, 1, 1)
    padded = F.pad(raw - caffe_rgb, (3, 3, 3, 3)) + caffe_rgb
    net.conv1.padding = (0, 0)
    pad_h = backbone(tv_norm(padded))
    pad_l = head(pad_h)
    net.conv1.padding = (3, 3)

g = {"image_rgb": raw, "tv_stem": tv_stem, "tv_features": tv_h, "tv_logits": tv_l, "pad_features": pad_h, "pad_logits": pad_l}
g.update(aspp)
save_file({k: v.contiguous() for k, v in g.items()}, os.path.join(out, "golden_torchvision.safetensors"),
          metadata={"width": str(WIDTH), "blocks": ",".join(map(str, BLOCKS)), "n_classes": str(N_CLASSES)})
diff = (tv_l - pad_l).abs()[0].amax(0)
rows = [i for i in range(diff.shape[0]) if diff[i].max() > 1e-5]
cols = [j for j in range(diff.shape[1]) if diff[:, j].max() > 1e-5]
print("features", tuple(tv_h.shape), "logits", tuple(tv_l.shape))
print("border effect: max |tv - pad| logits", float(diff.max()), "features",
      float((tv_h - pad_h).abs().max()), "rows touched", rows, "cols touched", cols)
