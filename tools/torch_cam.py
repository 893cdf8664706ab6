"""Our own PyTorch/NumPy/OpenCV implementation of the CLIP-ES CAM stage, written from the
project's account of it (docs/algorithm.md, "Softmax-GradCAM" and "Class-aware attention
affinity"), to make golden files
for the Rust port (crates/clip-es/src/gradcam.rs, affinity.rs) and to check it against the
reference on the parity fixture (tools/check_torch_cam.py).

It deliberately follows the reference's way of computing: autograd GradCAM with one backward
pass per label through a re-run of the last block, numpy float32 normalisation, OpenCV
contours for the boxes and cv2.resize for the final maps.

    out = clip_es_cams(model, x, text_features, n_labels, (H, W), box_threshold=0.4)
    out["cams"]      (K, h, w) normalised GradCAM maps on the patch grid
    out["refined"]   (K, h, w) CAA-refined maps on the patch grid
    out["attn_highres"], out["highres"]  (K, H, W) float32, resized to the original size

`model` is a tools/torch_clip.CLIP; `x` the normalised image (1, 3, H', W'); `text_features`
the rows [labels..., background words...] (normalised or not).
"""
import cv2
import numpy as np
import torch

import torch_clip


def scale_cam(img):
    """(x - min) / (max(x - min) + 1e-7) in float32, as the reference's scale_cam_image."""
    img = img - np.min(img)
    return (img / (1e-7 + np.max(img))).astype(np.float32)


def embed_tokens(model, x):
    v = model.visual
    b = x.shape[0]
    h, w = x.shape[2] // v.patch_size, x.shape[3] // v.patch_size
    tokens = v.conv1(x).flatten(2).transpose(1, 2)
    cls = v.class_embedding.reshape(1, 1, -1).expand(b, 1, -1)
    tokens = torch.cat([cls, tokens], dim=1)
    tokens = tokens + torch_clip.resize_positional_embedding(v.positional_embedding, h, w, model.round_pos_fp16)
    return v.ln_pre(tokens), h, w


def softmax_gradcam(model, x, text_features, n_labels, n_attn=8):
    """GradCAM maps (K, h, w) of the softmax probabilities of the first n_labels rows, and the
    mean head-averaged attention of the last n_attn blocks without the class token (n x n)."""
    v = model.visual
    blocks = v.transformer.resblocks
    with torch.no_grad():
        tokens, h, w = embed_tokens(model, x)
        attns = []
        for block in blocks[:-1]:
            tokens, probs, _ = block(tokens)
            attns.append(probs)
    text = text_features / text_features.norm(dim=-1, keepdim=True)
    cams, last_probs = [], None
    for k in range(n_labels):
        x_in = tokens.detach()
        last = blocks[-1]
        normed = last.ln_1(x_in)
        normed.retain_grad()
        attn_out, probs = last.attn(normed)
        x1 = x_in + attn_out
        x2 = x1 + last.mlp(last.ln_2(x1))
        y = v.ln_post(x2)
        emb = y[:, 1:].mean(dim=1) @ v.proj
        emb = emb / emb.norm(dim=-1, keepdim=True)
        p = (model.logit_scale.exp() * emb @ text.t()).softmax(dim=-1)
        p[0, k].backward()
        if last_probs is None:
            last_probs = probs.detach()
        act = normed[0, 1:].detach().numpy()          # (n, D)
        grad = normed.grad[0, 1:].detach().numpy()    # (n, D)
        weights = grad.mean(axis=0)
        cam = np.maximum((act * weights).sum(axis=1), 0).astype(np.float32).reshape(h, w)
        cams.append(scale_cam(scale_cam(cam)))
    attn = torch.stack([a[0, 1:, 1:] for a in (attns + [last_probs])[-n_attn:]]).mean(dim=0)
    return np.stack(cams), attn.float()


def box_mask(cam, threshold):
    """Union of the reference's boxes: OpenCV contours (RETR_TREE) of the thresholded uint8
    map, bounding rectangles with the end clipped to (w - 1, h - 1), end-exclusive."""
    h, w = cam.shape
    u = (cam * 255).astype(np.uint8)
    _, binary = cv2.threshold(u, int(threshold * np.max(u)), 255, cv2.THRESH_BINARY)
    contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
    mask = torch.zeros((h, w))
    for c in contours:
        x0, y0, bw, bh = cv2.boundingRect(c)
        x1, y1 = min(x0 + bw, w - 1), min(y0 + bh, h - 1)
        mask[y0:y1, x0:x1] = 1
    return mask


def affinity(attn):
    """Three Sinkhorn rounds (columns then rows), symmetrised, squared."""
    t = attn
    for _ in range(3):
        t = t / t.sum(dim=0, keepdim=True)
        t = t / t.sum(dim=1, keepdim=True)
    t = (t + t.t()) / 2
    return t @ t


def clip_es_cams(model, x, text_features, n_labels, orig_hw, box_threshold=0.4, n_attn=8):
    cams, attn = softmax_gradcam(model, x, text_features, n_labels, n_attn)
    aff = affinity(attn)
    H, W = orig_hw
    refined, highres, attn_highres = [], [], []
    for cam in cams:
        h, w = cam.shape
        mask = box_mask(cam, box_threshold).reshape(1, h * w)
        r = ((aff * mask) @ torch.from_numpy(cam).reshape(-1, 1)).reshape(h, w).numpy().astype(np.float32)
        r = scale_cam(r)
        refined.append(r)
        attn_highres.append(cv2.resize(r, (W, H)))
        highres.append(cv2.resize(cam, (W, H)))
    return dict(cams=cams, refined=np.stack(refined), attn_highres=np.stack(attn_highres),
                highres=np.stack(highres))
