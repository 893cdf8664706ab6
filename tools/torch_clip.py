"""Our own PyTorch CLIP (OpenAI ViT architecture), written from the project's account
(docs/algorithm.md, "Text side" and "Image side") to make golden files for the Rust port.

Parameter names are those of OpenAI's state dicts (`visual.conv1.weight`,
`visual.transformer.resblocks.{i}.attn.in_proj_weight`, `token_embedding.weight`, ...), so a state
dict saved by `torch.save(model.state_dict())` loads with OpenAI's `clip.model.build_model` and
vice versa. The module is torch.jit-traceable (see tools/make_tiny_clip.py).

    model = build_model(state_dict)                      # sizes inferred as OpenAI does
    model = build_model(sd, vision_heads=4, text_heads=4)  # HF-style configs set heads freely
    attn, last_ln1, cls_emb, mean_emb = model.encode_image(x)   # x: (B, 3, H, W), H, W % patch == 0
    text_emb = model.encode_text(ids)                            # ids: (B, 77) int64

`encode_image` returns
- attn: a tuple of per-block head-averaged attention probabilities, each (B, N, N), N = 1 + h*w;
- last_ln1: the output of the last block's ln_1, (B, N, D) (the CAM target, docs/algorithm.md "Softmax-GradCAM");
- cls_emb: ln_post(x[:, 0]) @ proj (OpenAI's pooled image embedding);
- mean_emb: ln_post(x)[:, 1:].mean(1) @ proj (the CLIP-ES image embedding, docs/algorithm.md
  "Softmax-GradCAM").
The positional embedding's patch grid is resized bilinearly (align_corners=False) to the h x w
token grid; `round_pos_fp16=True` rounds the resized table to float16 as the reference does.

Used by tools/make_tiny_clip.py; run with a Python that has torch (see tools/README.md).
"""
import math

import torch
import torch.nn.functional as F
from torch import nn


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class SelfAttention(nn.Module):
    """Multi-head self-attention with OpenAI's (nn.MultiheadAttention's) parameter layout:
    in_proj_weight (3D, D) holding q, k, v rows in that order, in_proj_bias (3D,), out_proj."""

    def __init__(self, width, heads):
        super().__init__()
        if width % heads != 0:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.zeros(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x, mask=None):
        # x: (B, N, D); returns the output (B, N, D) and head-averaged probabilities (B, N, N)
        b, n, d = x.shape
        head_dim = d // self.heads
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.chunk(3, dim=-1)

        def split(t):
            return t.reshape(b, n, self.heads, head_dim).transpose(1, 2)  # (B, H, N, hd)

        q, k, v = split(q), split(k), split(v)
        scores = (q * head_dim ** -0.5) @ k.transpose(-2, -1)
        if mask is not None:
            scores = scores + mask
        probs = scores.softmax(dim=-1)
        out = (probs @ v).transpose(1, 2).reshape(b, n, d)
        return self.out_proj(out), probs.mean(dim=1)


class ResidualBlock(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.attn = SelfAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width, eps=1e-5)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, 4 * width))
        self.mlp.add_module("gelu", QuickGELU())
        self.mlp.add_module("c_proj", nn.Linear(4 * width, width))
        self.ln_2 = nn.LayerNorm(width, eps=1e-5)

    def forward(self, x, mask=None):
        normed = self.ln_1(x)
        attn_out, probs = self.attn(normed, mask)
        x = x + attn_out
        x = x + self.mlp(self.ln_2(x))
        return x, probs, normed


class Transformer(nn.Module):
    def __init__(self, width, layers, heads):
        super().__init__()
        self.resblocks = nn.ModuleList([ResidualBlock(width, heads) for _ in range(layers)])


def resize_positional_embedding(pos, h, w, round_fp16=False):
    """pos: (1 + g*g, D). Keeps the class row, resizes the g x g grid to h x w (bilinear,
    align_corners=False) and flattens it back row-major."""
    cls_pos, grid_pos = pos[:1], pos[1:]
    g = int(round(math.sqrt(grid_pos.shape[0])))
    d = pos.shape[1]
    grid = grid_pos.reshape(1, g, g, d).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(h * w, d)
    out = torch.cat([cls_pos, grid], dim=0)
    if round_fp16:
        out = out.half().to(pos.dtype)
    return out


class VisionTransformer(nn.Module):
    def __init__(self, width, layers, heads, patch_size, grid, embed_dim):
        super().__init__()
        self.patch_size = patch_size
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(width))
        self.positional_embedding = nn.Parameter(torch.zeros(grid * grid + 1, width))
        self.ln_pre = nn.LayerNorm(width, eps=1e-5)
        self.transformer = Transformer(width, layers, heads)
        self.ln_post = nn.LayerNorm(width, eps=1e-5)
        self.proj = nn.Parameter(torch.zeros(width, embed_dim))


class CLIP(nn.Module):
    def __init__(self, embed_dim, vision_width, vision_layers, vision_heads, patch_size, grid,
                 text_width, text_layers, text_heads, context_length, vocab_size,
                 round_pos_fp16=False):
        super().__init__()
        self.round_pos_fp16 = round_pos_fp16
        self.visual = VisionTransformer(vision_width, vision_layers, vision_heads, patch_size, grid,
                                        embed_dim)
        self.token_embedding = nn.Embedding(vocab_size, text_width)
        self.positional_embedding = nn.Parameter(torch.zeros(context_length, text_width))
        self.transformer = Transformer(text_width, text_layers, text_heads)
        self.ln_final = nn.LayerNorm(text_width, eps=1e-5)
        self.text_projection = nn.Parameter(torch.zeros(text_width, embed_dim))
        self.logit_scale = nn.Parameter(torch.zeros([]))

    def encode_image(self, x):
        v = self.visual
        b = x.shape[0]
        h, w = x.shape[2] // v.patch_size, x.shape[3] // v.patch_size
        tokens = v.conv1(x).flatten(2).transpose(1, 2)  # (B, h*w, D), row-major over the grid
        cls = v.class_embedding.reshape(1, 1, -1).expand(b, 1, -1)
        tokens = torch.cat([cls, tokens], dim=1)
        tokens = tokens + resize_positional_embedding(v.positional_embedding, h, w,
                                                      self.round_pos_fp16)
        tokens = v.ln_pre(tokens)
        attns = []
        last_ln1 = tokens
        for block in v.transformer.resblocks:
            tokens, probs, last_ln1 = block(tokens)
            attns.append(probs)
        out = v.ln_post(tokens)
        cls_emb = out[:, 0] @ v.proj
        mean_emb = out[:, 1:].mean(dim=1) @ v.proj
        return tuple(attns), last_ln1, cls_emb, mean_emb

    def encode_text(self, ids):
        n = ids.shape[1]
        x = self.token_embedding(ids) + self.positional_embedding[:n]
        # additive causal mask: token i attends to tokens 0..i (built here, not stored as a
        # buffer, so that the state dict holds exactly OpenAI's tensors)
        mask = torch.full((n, n), float("-inf"), dtype=x.dtype, device=x.device).triu(1)
        for block in self.transformer.resblocks:
            x, _, _ = block(x, mask)
        x = self.ln_final(x)
        eot = ids.argmax(dim=-1)  # the end-of-text token has the largest id
        return x[torch.arange(x.shape[0]), eot] @ self.text_projection


def infer_sizes(sd):
    """Model sizes from an OpenAI ViT state dict's shapes (as OpenAI's build_model does)."""
    if "visual.proj" not in sd:
        raise ValueError("not a ViT CLIP state dict (no visual.proj; ResNet CLIPs are unsupported)")

    def count_blocks(prefix):
        return len({k[len(prefix):].split(".")[0] for k in sd if k.startswith(prefix)})

    vision_width = sd["visual.conv1.weight"].shape[0]
    text_width = sd["ln_final.weight"].shape[0]
    n_pos = sd["visual.positional_embedding"].shape[0] - 1
    grid = int(round(math.sqrt(n_pos)))
    if grid * grid != n_pos:
        raise ValueError(f"visual.positional_embedding has {n_pos} grid rows, not a square")
    return dict(
        embed_dim=sd["text_projection"].shape[1],
        vision_width=vision_width,
        vision_layers=count_blocks("visual.transformer.resblocks."),
        vision_heads=vision_width // 64,
        patch_size=sd["visual.conv1.weight"].shape[-1],
        grid=grid,
        text_width=text_width,
        text_layers=count_blocks("transformer.resblocks."),
        text_heads=text_width // 64,
        context_length=sd["positional_embedding"].shape[0],
        vocab_size=sd["token_embedding.weight"].shape[0],
    )


def build_model(state_dict, vision_heads=None, text_heads=None, round_pos_fp16=False):
    """A float32 CLIP in eval mode from an OpenAI-named state dict (tensors or numpy arrays).
    Heads default to width // 64 like OpenAI's build_model; pass them for HF-style configs."""
    sd = {k: torch.as_tensor(v) for k, v in state_dict.items()
          if k not in ("input_resolution", "context_length", "vocab_size")}
    sizes = infer_sizes(sd)
    if vision_heads is not None:
        sizes["vision_heads"] = vision_heads
    if text_heads is not None:
        sizes["text_heads"] = text_heads
    model = CLIP(**sizes, round_pos_fp16=round_pos_fp16)
    model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    return model.float().eval()
