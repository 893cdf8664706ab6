"""Goldens of `clip-es predict --crf` (crates/clip-es/tests/predict_crf.rs): deeplab-pytorch's
CRF post-processing (kazuto1011/deeplab-pytorch at 4219467f, `main.py` `crf` lines 371-447 and
`libs/utils/crf.py`) written out step by step from that description, on the miniature images of
tests/data/crf and random logits: logits at 1/8 of the image upsampled bilinearly
(align_corners=False) to the image, `F.softmax` over classes, pydensecrf's `unary_from_softmax`,
a Potts Gaussian kernel (sxy 1, compat 3) and a Potts bilateral kernel (sxy 67, srgb 3, compat 4)
on the image as deeplab-pytorch's dataset gives it (BGR float32 minus the Caffe mean, cast to
uint8), 10 iterations, argmax of the marginals. Also the argmax without the CRF.

    python tools/golden_predict_crf.py crates/clip-es/tests/data/predict_crf

Needs numpy, torch, Pillow, pydensecrf (pip package pydensecrf2). Writes per image
`<id>_scores.npy` (float16, classes x H x W: the upsampled logits the Rust side starts from),
`<id>_crf.npy` and `<id>_argmax.npy` (uint8 label maps).
"""

import os
import sys

import numpy as np
import pydensecrf.densecrf as dcrf
import pydensecrf.utils as utils
import torch
import torch.nn.functional as F
from PIL import Image

out = sys.argv[1] if len(sys.argv) > 1 else "crates/clip-es/tests/data/predict_crf"
images = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "clip-es", "tests", "data", "crf", "images")
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)
MEAN_BGR = np.array([104.008, 116.669, 122.675])  # configs/voc12.yaml, float64 as OmegaConf gives

for i, classes in enumerate([3, 5, 2, 21, 4]):
    iid = f"mini_{i:03d}"
    rgb = np.asarray(Image.open(os.path.join(images, iid + ".png")).convert("RGB"))
    h, w = rgb.shape[:2]
    # the dataset's image: cv2 BGR as float32, minus the mean in place (float32 result)
    image = rgb[:, :, ::-1].astype(np.float32)
    image -= MEAN_BGR
    logit = torch.randn(1, classes, (h + 7) // 8, (w + 7) // 8) * 3
    logit = F.interpolate(logit, size=(h, w), mode="bilinear", align_corners=False)
    # rounded to float16 to keep the files small; everything below starts from these values
    logit = logit.half().float()
    scores = logit[0].numpy().astype(np.float16)
    prob = F.softmax(logit, dim=1)[0].numpy()
    # libs/utils/crf.py DenseCRF.__call__
    U = np.ascontiguousarray(utils.unary_from_softmax(prob))
    im = np.ascontiguousarray(image.astype(np.uint8))
    d = dcrf.DenseCRF2D(w, h, classes)
    d.setUnaryEnergy(U)
    d.addPairwiseGaussian(sxy=1, compat=3)
    d.addPairwiseBilateral(sxy=67, srgb=3, rgbim=im, compat=4)
    Q = np.array(d.inference(10)).reshape((classes, h, w))
    np.save(os.path.join(out, iid + "_scores.npy"), scores)
    np.save(os.path.join(out, iid + "_crf.npy"), np.argmax(Q, axis=0).astype(np.uint8))
    np.save(os.path.join(out, iid + "_argmax.npy"), np.argmax(logit[0].numpy(), axis=0).astype(np.uint8))
    changed = (np.argmax(Q, axis=0) != np.argmax(logit[0].numpy(), axis=0)).mean()
    print(iid, classes, "classes,", f"{changed:.1%} of pixels changed by the CRF")
