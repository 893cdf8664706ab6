"""Golden outputs of the CLIP encoders and of the CLIP-ES CAM stage on the tiny random models
of crates/clip-es-model/tests/fixtures, computed with our PyTorch reference
(tools/torch_clip.py, tools/torch_cam.py; tools/check_torch_cam.py checks the latter against
the CLIP-ES reference itself).

usage: python tools/golden_clip.py
writes crates/clip-es-model/tests/data/golden_clip.safetensors   (encoders)
       crates/clip-es/tests/data/golden_cams.safetensors          (CAM stage)
Needs torch, numpy, safetensors, opencv-python-headless. Deterministic (fixed seeds).
"""
import os
import sys

import numpy as np
import torch
from safetensors.numpy import save_file
from safetensors.torch import load_file

TOOLS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TOOLS)
sys.path.insert(0, TOOLS)
import make_tiny_clip  # noqa: E402
import torch_cam  # noqa: E402
import torch_clip  # noqa: E402

FIXTURES = os.path.join(REPO, "crates/clip-es-model/tests/fixtures")
torch.set_num_threads(2)


def tiny_openai(round_pos_fp16=False):
    sd = torch.load(os.path.join(FIXTURES, "tiny-openai.pt"), map_location="cpu")
    return torch_clip.build_model(sd, round_pos_fp16=round_pos_fp16)


def tiny_deep():
    sizes = make_tiny_clip.TINY_DEEP
    sd = make_tiny_clip.random_state_dict(sizes, seed=20260102)
    # the committed HF file must hold exactly these weights
    hf = load_file(os.path.join(FIXTURES, "tiny-deep-hf/model.safetensors"))
    for name, value in make_tiny_clip.hf_names(sd, sizes).items():
        assert np.array_equal(np.asarray(value, np.float32), hf[name].float().numpy()), name
    return torch_clip.build_model(sd, vision_heads=sizes["vision_heads"], text_heads=sizes["text_heads"])


def token_rows(rng, vocab, lengths, ctx=77):
    """Rows of [sot, random ids, eot, 0...] with the given numbers of inner tokens."""
    sot, eot = vocab - 2, vocab - 1
    rows = np.zeros((len(lengths), ctx), np.int64)
    for r, n in enumerate(lengths):
        rows[r, 0] = sot
        rows[r, 1:1 + n] = rng.integers(1, vocab - 2, n)
        rows[r, 1 + n] = eot
    return rows


def encoder_goldens():
    out = {}
    rng = np.random.default_rng(7)
    cases = {
        "openai": (tiny_openai(), [(48, 48), (64, 96), (32, 80)]),
        "openai_f16pos": (tiny_openai(round_pos_fp16=True), [(64, 96)]),
        "deep": (tiny_deep(), [(64, 48), (48, 80)]),
    }
    for name, (model, sizes) in cases.items():
        for h, w in sizes:
            x = torch.from_numpy(rng.standard_normal((1, 3, h, w)).astype(np.float32))
            with torch.no_grad():
                attn, ln1, cls_emb, mean_emb = model.encode_image(x)
            key = f"{name}.{h}x{w}"
            out[f"{key}.input"] = x[0].numpy()
            out[f"{key}.attention"] = torch.stack([a[0] for a in attn]).numpy()
            out[f"{key}.last_ln_1"] = ln1[0].numpy()
            out[f"{key}.cls_embedding"] = cls_emb[0].numpy()
            out[f"{key}.patch_mean_embedding"] = mean_emb[0].numpy()
        if name == "openai_f16pos":
            continue
        ids = token_rows(rng, model.token_embedding.weight.shape[0], [0, 3, 9, 75])
        with torch.no_grad():
            out[f"{name}.text.ids"] = ids
            out[f"{name}.text.embedding"] = model.encode_text(torch.from_numpy(ids)).numpy()
    return out


def cam_goldens():
    """CAM stage on tiny-deep (10 blocks: the last 8 are averaged)."""
    out = {}
    rng = np.random.default_rng(11)
    model = tiny_deep()
    model.round_pos_fp16 = True
    embed_dim = model.text_projection.shape[1]
    # (input h, w), (original H, W), number of labels, number of background rows, box threshold
    cases = [((64, 96), (60, 90), 2, 5, 0.4), ((48, 48), (41, 37), 1, 3, 0.7), ((80, 64), (80, 64), 3, 4, 0.4)]
    for i, ((h, w), (H, W), k, m, thr) in enumerate(cases):
        x = torch.from_numpy(rng.standard_normal((1, 3, h, w)).astype(np.float32))
        text = torch.from_numpy(rng.standard_normal((k + m, embed_dim)).astype(np.float32))
        text = text / text.norm(dim=-1, keepdim=True)
        res = torch_cam.clip_es_cams(model, x, text, k, (H, W), box_threshold=thr)
        key = f"case{i}"
        out[f"{key}.input"] = x[0].numpy()
        out[f"{key}.text"] = text.numpy()
        out[f"{key}.labels"] = np.array([k], np.int64)
        out[f"{key}.original_size"] = np.array([H, W], np.int64)
        out[f"{key}.box_threshold"] = np.array([thr], np.float64)
        for name in ("cams", "refined", "attn_highres", "highres"):
            out[f"{key}.{name}"] = res[name].astype(np.float32)
    return out


def main():
    enc = encoder_goldens()
    path = os.path.join(REPO, "crates/clip-es-model/tests/data/golden_clip.safetensors")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in enc.items()}, path)
    print(f"{path}: {os.path.getsize(path) / 1e3:.0f} kB")
    cams = cam_goldens()
    path = os.path.join(REPO, "crates/clip-es/tests/data/golden_cams.safetensors")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in cams.items()}, path)
    print(f"{path}: {os.path.getsize(path) / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
