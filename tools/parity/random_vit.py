"""Random CLIP ViT-B/16 weights with numpy alone (no torch): the weights of the parity fixture.

usage: python3 random_vit.py OUT.safetensors [SEED]   (SEED default 7)

Writes one float16 safetensors file with OpenAI's state-dict names (`visual.conv1.weight`, ...),
which `clip-es --model OUT.safetensors` reads with OpenAI's bundled vocabulary (sizes inferred
from the shapes). The values are those of make_fixture.py's `ViT-B-16-random.pt` for the same
SEED (make_fixture.py takes them from here), all float16-representable, so the file holds the
fixture's model exactly. About 300 MB; a few seconds. For the GPU check (tools/gpu_check.sh) on a
machine without torch.
"""
import json
import struct
import sys

import numpy as np


def openai_state_dict(rng, vw=768, vl=12, patch=16, grid=14, tw=512, tl=12, embed=512, vocab=49408, ctx=77):
    """CLIP's state dict under OpenAI's names, float32 arrays of float16-representable values."""

    def randn(*shape, std=1.0):
        # fp16-representable values, like the released CLIP weights (the official loader rounds to fp16)
        return (rng.standard_normal(shape) * std).astype(np.float16).astype(np.float32)

    def ln(prefix, width):
        sd[prefix + ".weight"] = (1.0 + randn(width, std=0.1)).astype(np.float16).astype(np.float32)
        sd[prefix + ".bias"] = randn(width, std=0.02)

    def block(prefix, width, layers):
        attn_std = width ** -0.5
        proj_std = attn_std * (2 * layers) ** -0.5
        fc_std = (2 * width) ** -0.5
        sd[prefix + ".attn.in_proj_weight"] = randn(3 * width, width, std=attn_std)
        sd[prefix + ".attn.in_proj_bias"] = randn(3 * width, std=0.02)
        sd[prefix + ".attn.out_proj.weight"] = randn(width, width, std=proj_std)
        sd[prefix + ".attn.out_proj.bias"] = randn(width, std=0.02)
        ln(prefix + ".ln_1", width)
        sd[prefix + ".mlp.c_fc.weight"] = randn(4 * width, width, std=fc_std)
        sd[prefix + ".mlp.c_fc.bias"] = randn(4 * width, std=0.02)
        sd[prefix + ".mlp.c_proj.weight"] = randn(width, 4 * width, std=proj_std)
        sd[prefix + ".mlp.c_proj.bias"] = randn(width, std=0.02)
        ln(prefix + ".ln_2", width)

    sd = {}
    sd["visual.class_embedding"] = randn(vw, std=vw ** -0.5)
    sd["visual.positional_embedding"] = randn(grid * grid + 1, vw, std=vw ** -0.5)
    sd["visual.conv1.weight"] = randn(vw, 3, patch, patch, std=(3 * patch * patch) ** -0.5)
    ln("visual.ln_pre", vw)
    for i in range(vl):
        block(f"visual.transformer.resblocks.{i}", vw, vl)
    ln("visual.ln_post", vw)
    sd["visual.proj"] = randn(vw, embed, std=vw ** -0.5)
    sd["token_embedding.weight"] = randn(vocab, tw, std=0.02)
    sd["positional_embedding"] = randn(ctx, tw, std=0.01)
    for i in range(tl):
        block(f"transformer.resblocks.{i}", tw, tl)
    ln("ln_final", tw)
    sd["text_projection"] = randn(tw, embed, std=tw ** -0.5)
    sd["logit_scale"] = np.array(np.log(100.0), dtype=np.float16).astype(np.float32)
    return sd


def write_safetensors_f16(tensors, path):
    """The safetensors format by hand (8-byte header length, JSON header, raw little-endian
    data), so that numpy is the only dependency."""
    header, blobs, offset = {}, [], 0
    for name, v in tensors.items():
        b = np.ascontiguousarray(v, dtype="<f2").tobytes()
        header[name] = {"dtype": "F16", "shape": list(np.shape(v)), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    seed = int(sys.argv[2]) if len(sys.argv) == 3 else 7
    write_safetensors_f16(openai_state_dict(np.random.default_rng(seed)), sys.argv[1])


if __name__ == "__main__":
    main()
