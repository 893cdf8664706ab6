"""Deterministic tiny random CLIP models for the tests of crates/clip-es-model.

usage (from the repository root):
    python tools/make_tiny_clip.py [OUT_DIR]
        OUT_DIR defaults to crates/clip-es-model/tests/fixtures
    OFFICIAL_REPO=/path/to/CLIP-ES python tools/make_tiny_clip.py
        additionally checks tools/torch_clip.py against OpenAI's clip/model.py (the CLIP-ES copy)

Writes (same seed, same bytes of tensor data):
- tiny-openai-hf/   Hugging Face layout: config.json (like openai/clip-vit-base-patch16's, tiny
                    sizes), model.safetensors in HF names stored as float16 (with the int64
                    position_ids buffers that HF's published checkpoints carry), and a tiny
                    CLIP-format BPE tokenizer (vocab.json, merges.txt, tokenizer.json, ...).
- tiny-openai.pt    the same weights as an OpenAI state dict (torch.save, float32)
- tiny-openai-jit.pt the same weights as a float16 TorchScript archive (torch.jit.trace_module of
                    tools/torch_clip.py's module, .half(), save), like OpenAI's published files
- tiny-deep-hf/     HF layout only (float16): a deeper, narrower model whose head count is not
                    width // 64, with the same tokenizer.

tiny-openai: vision width 128, 2 heads, 2 layers, patch 16, 3x3 position grid (image_size 48);
text width 64, 1 head, 2 layers, context 77, vocab 600; embed dim 32.
tiny-deep: vision width 32, 4 heads, 10 layers, patch 16, 4x4 grid (image_size 64); text width 32,
4 heads, 2 layers, context 77, vocab 600; embed dim 16.

All values are float16-representable, so the three layouts hold identical numbers. (float16
safetensors keep the fixtures small, ~5.7 MB in all; the Rust tests write float32 safetensors
from them on the fly.) The tokenizer:
256 byte symbols, their 256 `</w>` forms, 86 merges learned by BPE on the prompts
"a clean origami {}." over the VOC class names and background words, `<|startoftext|>` (598),
`<|endoftext|>` (599).

The script also checks tools/torch_clip.py against transformers' CLIPModel on the HF layouts
(embeddings, attention probabilities, the last ln_1 output) and that every layout reads back.
"""
import collections
import json
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_clip  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(REPO, "crates/clip-es-model/tests/fixtures")

VOCAB_SIZE = 600
CONTEXT = 77

TINY_OPENAI = dict(embed_dim=32, vision_width=128, vision_layers=2, vision_heads=2, patch_size=16,
                   grid=3, text_width=64, text_layers=2, text_heads=1, context_length=CONTEXT,
                   vocab_size=VOCAB_SIZE)
TINY_DEEP = dict(embed_dim=16, vision_width=32, vision_layers=10, vision_heads=4, patch_size=16,
                 grid=4, text_width=32, text_layers=2, text_heads=4, context_length=CONTEXT,
                 vocab_size=VOCAB_SIZE)


# ---------------------------------------------------------------- random weights (OpenAI names)

class Gen:
    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)

    def normal(self, shape, std, mean=0.0):
        # round through float16: every layout (f16 or f32) then holds the same numbers
        x = mean + self.rng.standard_normal(shape) * std
        return x.astype(np.float16).astype(np.float32)


def add_layer_norm(sd, g, prefix, width):
    sd[f"{prefix}.weight"] = g.normal((width,), 0.1, mean=1.0)
    sd[f"{prefix}.bias"] = g.normal((width,), 0.05)


def add_block(sd, g, prefix, width, layers):
    w_std = width ** -0.5
    out_std = w_std * (2 * layers) ** -0.5
    sd[f"{prefix}.attn.in_proj_weight"] = g.normal((3 * width, width), w_std)
    sd[f"{prefix}.attn.in_proj_bias"] = g.normal((3 * width,), 0.05)
    sd[f"{prefix}.attn.out_proj.weight"] = g.normal((width, width), out_std)
    sd[f"{prefix}.attn.out_proj.bias"] = g.normal((width,), 0.05)
    add_layer_norm(sd, g, f"{prefix}.ln_1", width)
    sd[f"{prefix}.mlp.c_fc.weight"] = g.normal((4 * width, width), (2 * width) ** -0.5)
    sd[f"{prefix}.mlp.c_fc.bias"] = g.normal((4 * width,), 0.05)
    sd[f"{prefix}.mlp.c_proj.weight"] = g.normal((width, 4 * width), out_std)
    sd[f"{prefix}.mlp.c_proj.bias"] = g.normal((width,), 0.05)
    add_layer_norm(sd, g, f"{prefix}.ln_2", width)


def random_state_dict(sizes, seed):
    g = Gen(seed)
    vw, tw, p, grid = sizes["vision_width"], sizes["text_width"], sizes["patch_size"], sizes["grid"]
    sd = collections.OrderedDict()
    sd["visual.conv1.weight"] = g.normal((vw, 3, p, p), (3 * p * p) ** -0.5)
    sd["visual.class_embedding"] = g.normal((vw,), vw ** -0.5)
    sd["visual.positional_embedding"] = g.normal((grid * grid + 1, vw), vw ** -0.5)
    add_layer_norm(sd, g, "visual.ln_pre", vw)
    for i in range(sizes["vision_layers"]):
        add_block(sd, g, f"visual.transformer.resblocks.{i}", vw, sizes["vision_layers"])
    add_layer_norm(sd, g, "visual.ln_post", vw)
    sd["visual.proj"] = g.normal((vw, sizes["embed_dim"]), vw ** -0.5)
    sd["token_embedding.weight"] = g.normal((sizes["vocab_size"], tw), 0.02)
    sd["positional_embedding"] = g.normal((sizes["context_length"], tw), 0.01)
    for i in range(sizes["text_layers"]):
        add_block(sd, g, f"transformer.resblocks.{i}", tw, sizes["text_layers"])
    add_layer_norm(sd, g, "ln_final", tw)
    sd["text_projection"] = g.normal((tw, sizes["embed_dim"]), tw ** -0.5)
    sd["logit_scale"] = np.array(math.log(100.0), dtype=np.float16).astype(np.float32)
    return sd


# ---------------------------------------------------------------- Hugging Face layout

def hf_names(sd, sizes):
    """OpenAI names -> transformers' CLIPModel names (q/k/v split, projections transposed)."""
    hf = collections.OrderedDict()
    hf["vision_model.embeddings.patch_embedding.weight"] = sd["visual.conv1.weight"]
    hf["vision_model.embeddings.class_embedding"] = sd["visual.class_embedding"]
    hf["vision_model.embeddings.position_embedding.weight"] = sd["visual.positional_embedding"]
    hf["text_model.embeddings.token_embedding.weight"] = sd["token_embedding.weight"]
    hf["text_model.embeddings.position_embedding.weight"] = sd["positional_embedding"]
    layer_norms = {"visual.ln_pre": "vision_model.pre_layrnorm",
                   "visual.ln_post": "vision_model.post_layernorm",
                   "ln_final": "text_model.final_layer_norm"}
    for src, dst in layer_norms.items():
        for s in ("weight", "bias"):
            hf[f"{dst}.{s}"] = sd[f"{src}.{s}"]
    towers = [("visual.transformer.resblocks", "vision_model.encoder.layers", sizes["vision_layers"]),
              ("transformer.resblocks", "text_model.encoder.layers", sizes["text_layers"])]
    for src, dst, layers in towers:
        for i in range(layers):
            a, b = f"{src}.{i}", f"{dst}.{i}"
            qkv_w, qkv_b = sd[f"{a}.attn.in_proj_weight"], sd[f"{a}.attn.in_proj_bias"]
            for part, rows_w, rows_b in zip(("q_proj", "k_proj", "v_proj"),
                                            np.split(qkv_w, 3), np.split(qkv_b, 3)):
                hf[f"{b}.self_attn.{part}.weight"] = rows_w
                hf[f"{b}.self_attn.{part}.bias"] = rows_b
            pairs = {"attn.out_proj": "self_attn.out_proj", "ln_1": "layer_norm1",
                     "ln_2": "layer_norm2", "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
            for s_name, d_name in pairs.items():
                for s in ("weight", "bias"):
                    hf[f"{b}.{d_name}.{s}"] = sd[f"{a}.{s_name}.{s}"]
    hf["visual_projection.weight"] = sd["visual.proj"].T
    hf["text_projection.weight"] = sd["text_projection"].T
    hf["logit_scale"] = sd["logit_scale"]
    return hf


def hf_config(sizes):
    # the shape of openai/clip-vit-base-patch16's config.json, with the tiny sizes
    text = {"hidden_size": sizes["text_width"], "intermediate_size": 4 * sizes["text_width"],
            "num_attention_heads": sizes["text_heads"], "num_hidden_layers": sizes["text_layers"],
            "max_position_embeddings": sizes["context_length"], "vocab_size": sizes["vocab_size"],
            "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
            "projection_dim": sizes["embed_dim"], "bos_token_id": VOCAB_SIZE - 2,
            "eos_token_id": VOCAB_SIZE - 1, "pad_token_id": VOCAB_SIZE - 1, "model_type": "clip_text_model"}
    vision = {"hidden_size": sizes["vision_width"], "intermediate_size": 4 * sizes["vision_width"],
              "num_attention_heads": sizes["vision_heads"], "num_hidden_layers": sizes["vision_layers"],
              "image_size": sizes["patch_size"] * sizes["grid"], "patch_size": sizes["patch_size"],
              "num_channels": 3, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
              "projection_dim": sizes["embed_dim"], "model_type": "clip_vision_model"}
    return {"architectures": ["CLIPModel"], "model_type": "clip", "initializer_factor": 1.0,
            "logit_scale_init_value": 2.6592, "projection_dim": sizes["embed_dim"],
            "torch_dtype": "float32", "text_config": text, "vision_config": vision}


def write_hf(sd, sizes, out_dir, dtype, with_position_ids):
    from safetensors.torch import save_file
    os.makedirs(out_dir, exist_ok=True)
    # (np.ascontiguousarray would turn the 0-d logit_scale into shape (1,))
    tensors = {k: torch.from_numpy(np.array(v, order="C")).to(dtype) for k, v in hf_names(sd, sizes).items()}
    if with_position_ids:
        n_vis = sizes["grid"] ** 2 + 1
        tensors["vision_model.embeddings.position_ids"] = torch.arange(n_vis).unsqueeze(0)
        tensors["text_model.embeddings.position_ids"] = torch.arange(sizes["context_length"]).unsqueeze(0)
    save_file(tensors, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    cfg = hf_config(sizes)
    cfg["torch_dtype"] = "float16" if dtype == torch.float16 else "float32"
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")


# ---------------------------------------------------------------- tiny BPE tokenizer

VOC_NAMES = ["aeroplane", "bicycle", "bird avian", "boat", "bottle", "bus", "car", "cat", "chair seat",
             "cow", "table", "dog", "horse", "motorbike", "person with clothes,people,human",
             "potted plant", "sheep", "sofa", "train", "tvmonitor screen"]
BACKGROUND = ["ground", "land", "grass", "tree", "building", "wall", "sky", "lake", "water", "river",
              "sea", "railway", "railroad", "keyboard", "helmet", "cloud", "house", "mountain",
              "ocean", "road", "rock", "street", "valley", "bridge", "sign"]


def bytes_to_unicode():
    """CLIP's (GPT-2's) reversible byte -> printable unicode symbol table, in vocabulary order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) \
        + list(range(ord("\xae"), ord("\xff") + 1))
    symbols = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in symbols:
            symbols[b] = chr(256 + extra)
            extra += 1
    order = printable + [b for b in range(256) if b not in printable]
    return [(b, symbols[b]) for b in order]


def learn_merges(n_merges):
    """Byte-pair merges learned greedily on the prompts (most frequent pair first, ties by the
    pair's text) -- a miniature of how CLIP's vocabulary was built."""
    import re
    words = collections.Counter()
    for name in VOC_NAMES + BACKGROUND:
        text = f"a clean origami {name}.".lower()
        for w in re.findall(r"[a-z]+|[^\sa-z]", text):
            words[tuple(w[:-1]) + (w[-1] + "</w>",)] += 1
    merges, seen = [], set()
    while len(merges) < n_merges:
        pairs = collections.Counter()
        for w, c in words.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] += c
        candidates = [(-c, p) for p, c in pairs.items() if "".join(p) not in seen]
        if not candidates:
            raise RuntimeError("corpus too small for the requested number of merges")
        _, best = min(candidates)
        merges.append(best)
        seen.add("".join(best))
        merged = collections.Counter()
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            merged[tuple(out)] += c
        words = merged
    return merges


def write_tokenizer(out_dir):
    symbols = [s for _, s in bytes_to_unicode()]
    merges = learn_merges(VOCAB_SIZE - 2 * 256 - 2)
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] \
        + ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == len(set(vocab)) == VOCAB_SIZE
    with open(os.path.join(out_dir, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({t: i for i, t in enumerate(vocab)}, f, ensure_ascii=False)
    with open(os.path.join(out_dir, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    from transformers import CLIPTokenizerFast
    tok = CLIPTokenizerFast(os.path.join(out_dir, "vocab.json"), os.path.join(out_dir, "merges.txt"),
                            model_max_length=CONTEXT)
    tok.save_pretrained(out_dir)
    ids = tok("a clean origami cat.")["input_ids"]
    assert ids[0] == VOCAB_SIZE - 2 and ids[-1] == VOCAB_SIZE - 1 and max(ids) < VOCAB_SIZE, ids
    return tok


# ---------------------------------------------------------------- TorchScript

def write_torchscript(model, sizes, path):
    ids = torch.zeros(1, sizes["context_length"], dtype=torch.long)
    ids[0, :3] = torch.tensor([VOCAB_SIZE - 2, 7, VOCAB_SIZE - 1])
    image = torch.zeros(1, 3, 2 * sizes["patch_size"], 3 * sizes["patch_size"])
    import copy
    model = copy.deepcopy(model)  # the traced module shares parameters; .half() must not touch ours
    traced = torch.jit.trace_module(model, {"encode_text": (ids,), "encode_image": (image,)})
    traced.half()
    traced.save(path)


# ---------------------------------------------------------------- checks

def check_against_transformers(model, hf_dir, sizes, tok):
    from transformers import CLIPModel
    hf = CLIPModel.from_pretrained(hf_dir, torch_dtype=torch.float32, attn_implementation="eager").eval()
    g = torch.Generator().manual_seed(0)
    side = sizes["patch_size"] * sizes["grid"]
    pixels = torch.randn(2, 3, side, side, generator=g)
    prompts = ["a clean origami cat.", "a clean origami person with clothes,people,human."]
    ids = torch.zeros(2, CONTEXT, dtype=torch.long)
    for i, p in enumerate(prompts):
        t = tok(p)["input_ids"]
        ids[i, :len(t)] = torch.tensor(t)
    last_ln1 = {}
    hook = hf.vision_model.encoder.layers[-1].layer_norm1.register_forward_hook(
        lambda m, i, o: last_ln1.__setitem__("x", o))
    with torch.no_grad():
        attn, ln1, cls_emb, _ = model.encode_image(pixels)
        vis = hf.vision_model(pixel_values=pixels, output_attentions=True)
        hf_img = hf.visual_projection(vis.pooler_output)
        hf_txt = hf.text_projection(hf.text_model(input_ids=ids).pooler_output)
        txt = model.encode_text(ids)
    hook.remove()
    diffs = {"image embedding": (cls_emb - hf_img).abs().max().item(),
             "text embedding": (txt - hf_txt).abs().max().item(),
             "attention": max((a - h.mean(1)).abs().max().item() for a, h in zip(attn, vis.attentions)),
             "last ln_1": (ln1 - last_ln1["x"]).abs().max().item()}
    for k, v in diffs.items():
        assert v < 1e-4, (hf_dir, k, v)
    print(f"  torch_clip vs transformers ({os.path.basename(hf_dir)}): "
          + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()))


def check_against_official(model, sd, sizes):
    """tools/torch_clip.py against OpenAI's clip/model.py as modified by CLIP-ES, at a resolution
    other than the pretrained grid (positional embedding resized, rounded to fp16 there)."""
    repo = os.environ.get("OFFICIAL_REPO")
    if not repo:
        return
    sys.path.insert(0, repo)
    from clip.model import build_model as official_build
    ref = official_build({k: torch.from_numpy(np.array(v)) for k, v in sd.items()}).float().eval()
    ours = torch_clip.build_model(sd, round_pos_fp16=True)
    g = torch.Generator().manual_seed(1)
    h, w = 4 * sizes["patch_size"], 5 * sizes["patch_size"]
    pixels = torch.randn(1, 3, h, w, generator=g)
    ids = torch.zeros(1, CONTEXT, dtype=torch.long)
    ids[0, :5] = torch.tensor([VOCAB_SIZE - 2, 40, 300, 520, VOCAB_SIZE - 1])
    with torch.no_grad():
        ref_x, ref_attn = ref.encode_image(pixels, h, w)  # all blocks but the last
        attn, ln1, _, mean_emb = ours.encode_image(pixels)
        last = ref.visual.transformer.resblocks[-1]
        ref_ln1 = last.ln_1(ref_x).permute(1, 0, 2)
        ref_out, _ = last(ref_x)
        ref_out = ref.visual.ln_post(ref_out.permute(1, 0, 2))
        ref_mean = ref_out[:, 1:].mean(1) @ ref.visual.proj
        ref_txt = ref.encode_text(ids)
        txt = ours.encode_text(ids)
    diffs = {"attention": max((a - r).abs().max().item() for a, r in zip(attn, ref_attn)),
             "last ln_1": (ln1 - ref_ln1).abs().max().item(),
             "patch-mean embedding": (mean_emb - ref_mean).abs().max().item(),
             "text embedding": (txt - ref_txt).abs().max().item()}
    for k, v in diffs.items():
        assert v < 1e-4, ("official", k, v)
    print("  torch_clip vs official clip/model.py (64x80 input): "
          + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()))


def check_readback(sd, out):
    from safetensors.torch import load_file
    pt = torch.load(os.path.join(out, "tiny-openai.pt"))
    jit = torch.jit.load(os.path.join(out, "tiny-openai-jit.pt")).state_dict()
    hf = load_file(os.path.join(out, "tiny-openai-hf", "model.safetensors"))
    assert set(pt) == set(sd) and set(jit) == set(sd), (set(jit) ^ set(sd))
    for k, v in sd.items():
        ref = torch.from_numpy(np.array(v))
        assert torch.equal(pt[k], ref) and pt[k].dtype == torch.float32, k
        assert torch.equal(jit[k].float(), ref) and jit[k].dtype == torch.float16, k
    assert torch.equal(hf["visual_projection.weight"].float(), torch.from_numpy(sd["visual.proj"].T))
    print("  tiny-openai: state dict, TorchScript and HF layouts read back identical")


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)

    sd = random_state_dict(TINY_OPENAI, seed=20260101)
    model = torch_clip.build_model(sd)
    hf_dir = os.path.join(OUT, "tiny-openai-hf")
    write_hf(sd, TINY_OPENAI, hf_dir, torch.float16, with_position_ids=True)
    tok = write_tokenizer(hf_dir)
    torch.save({k: torch.from_numpy(np.array(v)) for k, v in sd.items()}, os.path.join(OUT, "tiny-openai.pt"))
    write_torchscript(model, TINY_OPENAI, os.path.join(OUT, "tiny-openai-jit.pt"))
    check_readback(sd, OUT)
    check_against_transformers(model, hf_dir, TINY_OPENAI, tok)
    check_against_official(model, sd, TINY_OPENAI)

    deep = random_state_dict(TINY_DEEP, seed=20260102)
    deep_model = torch_clip.build_model(deep, vision_heads=TINY_DEEP["vision_heads"],
                                        text_heads=TINY_DEEP["text_heads"])
    deep_dir = os.path.join(OUT, "tiny-deep-hf")
    write_hf(deep, TINY_DEEP, deep_dir, torch.float16, with_position_ids=False)
    write_tokenizer(deep_dir)
    check_against_transformers(deep_model, deep_dir, TINY_DEEP, tok)

    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(OUT) for f in fs)
    print(f"fixtures written to {OUT} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
