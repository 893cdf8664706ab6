"""Goldens of crates/clip-es-train (tests/train_golden.rs): a tiny random DeepLab-v2 with
deeplab-pytorch key names (saved as a .pth the Rust side loads), its multi-scale forward on one
image, two SGD steps of the full training loss with deeplab-pytorch's LR groups, the
cross-entropy that ignores 255 (plain and class-balanced) with its gradient, the poly LR
schedule, SGD alone on given gradients, and PIL nearest label resizing.

    python tools/golden_train.py crates/clip-es-train/tests/data
"""

import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from torch.optim.lr_scheduler import _LRScheduler

sys.path.insert(0, os.path.dirname(__file__))
from torch_deeplab import MSC, DeepLabV2, param_groups, resize_labels  # noqa: E402

out = sys.argv[1] if len(sys.argv) > 1 else "crates/clip-es-train/tests/data"
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)
np.random.seed(0)
torch.set_num_threads(1)

N_CLASSES, WIDTH, BLOCKS, RATES = 5, 2, (1, 2, 1, 2), (6, 12, 18, 24)
net = DeepLabV2(N_CLASSES, WIDTH, BLOCKS, RATES)
with torch.no_grad():
    for name, p in net.named_parameters():
        if name.endswith("conv.weight"):
            nn.init.kaiming_normal_(p, mode="fan_out", nonlinearity="relu")
        elif ".bn.weight" in name:
            p.uniform_(0.5, 1.5)
        elif ".bn.bias" in name:
            p.uniform_(-0.2, 0.2)
        elif name.startswith("aspp") and name.endswith("weight"):
            p.normal_(0, 0.05)
        elif name.startswith("aspp"):
            p.uniform_(-0.1, 0.1)
    for name, b in net.named_buffers():
        if name.endswith("running_mean"):
            b.uniform_(-0.2, 0.2)
        elif name.endswith("running_var"):
            b.uniform_(0.5, 2.0)
model = MSC(net, scales=(0.5, 0.75))
model.eval()  # frozen BN (deeplab-pytorch freeze_bn)
for p in net.parameters():
    p.requires_grad_(True)
for name, p in net.named_parameters():
    if ".bn." in name:
        p.requires_grad_(False)
# deeplab-pytorch's layout: the MSC wrapper's state dict ("base." prefix), BN counters included.
torch.save(model.state_dict(), os.path.join(out, "tiny_deeplab.pth"))

x = (torch.randn(1, 3, 64, 64) * 40).float()
with torch.no_grad():
    outs = model(x)
g = {"input": x, "logits": outs[0], "logits_05": outs[1], "logits_075": outs[2], "logits_max": outs[3]}

# Two SGD steps of the training loss (sum over the 4 outputs of CE ignoring 255).
labels = torch.randint(0, N_CLASSES, (1, 64, 64))
labels[:, 10:30, 5:40] = 255
labels[:, :, 60:] = 255
crit = nn.CrossEntropyLoss(ignore_index=255)
opt = torch.optim.SGD(param_groups(net, 1e-3, 5e-4), momentum=0.9)
losses = []
for step in range(2):
    opt.zero_grad()
    loss = 0
    for o in model(x):
        loss = loss + crit(o, resize_labels(labels, o.shape[2:]))
    loss.backward()
    if step == 0:
        for name, p in net.named_parameters():
            if p.grad is not None and (name.startswith("aspp") or name.startswith("layer1") or "layer5.block2" in name):
                g["grad0." + name] = p.grad.clone()
    losses.append(float(loss.detach()))
    opt.step()
for name, p in net.named_parameters():
    g["step2." + name] = p.detach().clone()
g["train_labels"] = labels.to(torch.float32)
g["train_losses"] = torch.tensor(losses, dtype=torch.float32)

# CE ignoring 255, plain and class-balanced (weights 1/count of each class present).
logits = torch.randn(2, 5, 6, 7, requires_grad=True)
lab = torch.randint(0, 5, (2, 6, 7))
lab[0, :2] = 255
lab[1, :, 3] = 255
lab[lab == 4] = 3  # class 4 absent
loss = F.cross_entropy(logits, lab, ignore_index=255)
(grad,) = torch.autograd.grad(loss, logits)
counts = torch.tensor([(lab == c).sum().item() for c in range(5)], dtype=torch.float32)
w = torch.where(counts > 0, 1.0 / counts.clamp(min=1), torch.zeros(5))
bloss = F.cross_entropy(logits, lab, weight=w, ignore_index=255)
(bgrad,) = torch.autograd.grad(bloss, logits)
g.update({"ce_logits": logits.detach(), "ce_labels": lab.float(), "ce_loss": loss.detach().reshape(1),
          "ce_grad": grad, "ce_balanced_loss": bloss.detach().reshape(1), "ce_balanced_grad": bgrad})


# Poly LR (deeplab-pytorch's rule on torch's scheduler machinery): base 2.5e-4, max 45, step 10.
class Poly(_LRScheduler):
    def __init__(self, optimizer, step_size, iter_max, power):
        self.step_size, self.iter_max, self.power = step_size, iter_max, power
        super().__init__(optimizer, -1)

    def get_lr(self):
        e = self.last_epoch
        if e == 0 or e % self.step_size != 0 or e > self.iter_max:
            return [group["lr"] for group in self.optimizer.param_groups]
        return [b * (1 - e / self.iter_max) ** self.power for b in self.base_lrs]


popt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=2.5e-4, momentum=0.9)
sched = Poly(popt, 10, 45, 0.9)
lrs = []
for it in range(1, 61):
    lrs.append(popt.param_groups[0]["lr"])
    popt.step()
    sched.step()  # last_epoch = it, as main.py's scheduler.step(epoch=iteration)
g["poly_lrs"] = torch.tensor(lrs, dtype=torch.float32)

# SGD alone: three parameters in the three groups, three steps with given gradients and LRs.
ps = {"layer2.block1.reduce.conv.weight": torch.randn(4, 3, 1, 1), "aspp.c0.weight": torch.randn(2, 4, 3, 3),
      "aspp.c0.bias": torch.randn(2)}
grads = [{k: torch.randn_like(v) for k, v in ps.items()} for _ in range(3)]
params = {k: v.clone().requires_grad_(True) for k, v in ps.items()}
sopt = torch.optim.SGD([
    {"params": [params["layer2.block1.reduce.conv.weight"]], "lr": 0.01, "weight_decay": 5e-4},
    {"params": [params["aspp.c0.weight"]], "lr": 0.1, "weight_decay": 5e-4},
    {"params": [params["aspp.c0.bias"]], "lr": 0.2, "weight_decay": 0.0}], momentum=0.9)
for s in range(3):
    for k, p in params.items():
        p.grad = grads[s][k].clone()
    if s == 2:
        for grp, m in zip(sopt.param_groups, (1, 10, 20)):
            grp["lr"] = 0.005 * m
    sopt.step()
for k in ps:
    g["sgd_init." + k] = ps[k]
    for s in range(3):
        g[f"sgd_grad{s}." + k] = grads[s][k]
    g["sgd_final." + k] = params[k].detach()

# PIL nearest resizing of label maps.
big = np.random.randint(0, 21, (37, 53)).astype(np.float32)
big[5:9] = 255
g["nearest_src"] = torch.from_numpy(big)
for (h, w) in [(9, 13), (20, 30), (41, 41), (7, 9)]:
    g[f"nearest_{h}x{w}"] = torch.from_numpy(np.asarray(Image.fromarray(big).resize((w, h), Image.NEAREST)).copy())

save_file({k: v.contiguous() for k, v in g.items()}, os.path.join(out, "golden_train.safetensors"),
          metadata={"n_classes": str(N_CLASSES), "width": str(WIDTH), "blocks": ",".join(map(str, BLOCKS))})
print("wrote", out, {k: tuple(v.shape) for k, v in list(g.items())[:5]})
