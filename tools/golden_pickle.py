"""Golden files for the clip-es-pickle crate (pickle VM, PyTorch archives, .npy files).

Writes small fixtures and the values Rust must read back to crates/clip-es-pickle/tests/data:
  state_dict.pt          torch.save of a dict: every dtype, a transposed and a permuted tensor,
                         views sharing one storage at offsets, an expanded (stride 0) tensor,
                         a 0-d and an empty tensor, an nn.Parameter, a nested dict
  state_dict_legacy.pt   the same dict in the legacy non-zip torch.save format
  small_jit.pt           a traced module (nested submodules, Sequential, ModuleList,
                         nn.MultiheadAttention, a Parameter, a buffer) made .half() and saved
                         like OpenAI's ViT-B-16.pt (see tools/parity/make_fixture.py)
  cam_dict.npy           np.save of {"keys": int64 array, "attn_highres": float16 array}, as the
                         CLIP-ES reference's generate_cams_voc12.py writes CAMs
  plain_f16.npy, fortran_f32.npy, big_endian_i4.npy, bool_v3.npy, scalar_f8.npy
  values_p{0..5}.pkl     one Python object pickled with each protocol (the Rust test builds the
                         expected Value tree itself)
  expected.json          per file: tensor/array name, dtype, shape, C-order little-endian bytes
                         (hex) and values

usage: python tools/golden_pickle.py   (from any directory; seeded, so re-runs give the
same files except state_dict_legacy.pt, whose storage keys are Python object ids)
"""
import collections
import json
import os
import pickle

import numpy as np
import torch
from torch import nn

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "clip-es-pickle", "tests", "data")
torch.manual_seed(0)
rng = np.random.default_rng(0)

TORCH_DTYPES = {torch.float16: "f16", torch.bfloat16: "bf16", torch.float32: "f32", torch.float64: "f64",
                torch.int64: "i64", torch.int32: "i32", torch.int16: "i16", torch.int8: "i8",
                torch.uint8: "u8", torch.bool: "bool"}
NUMPY_DTYPES = {"f2": "f16", "f4": "f32", "f8": "f64", "i1": "i8", "i2": "i16", "i4": "i32", "i8": "i64",
                "u1": "u8", "u2": "u16", "u4": "u32", "u8": "u64", "b1": "bool"}


def tensor_entry(name, t):
    raw = t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    return {"name": name, "dtype": TORCH_DTYPES[t.dtype], "shape": list(t.shape),
            "strides": list(t.stride()), "offset": t.storage_offset(), "hex": raw.hex(),
            "values": [float(v) for v in t.detach().reshape(-1).tolist()]}


def array_entry(name, a):
    a = a.astype(a.dtype.newbyteorder("<"), order="C")
    return {"name": name, "dtype": NUMPY_DTYPES[a.dtype.str[1:]], "shape": list(a.shape),
            "hex": a.tobytes().hex(), "values": [float(v) for v in a.reshape(-1).tolist()]}


def state_dict():
    base = torch.arange(20, dtype=torch.float32) * 0.5
    sd = collections.OrderedDict()
    sd["f32"] = torch.randn(3, 4)
    sd["f16"] = torch.randn(5).half()
    sd["bf16"] = torch.randn(2, 3).bfloat16()
    sd["f64"] = torch.randn(2, 2, dtype=torch.float64)
    sd["i64"] = torch.tensor([-5, 0, 2 ** 40, 7])
    sd["i32"] = torch.tensor([-2 ** 31, 5], dtype=torch.int32)
    sd["i16"] = torch.tensor([-300, 300], dtype=torch.int16)
    sd["i8"] = torch.tensor([-128, 127], dtype=torch.int8)
    sd["u8"] = torch.tensor([0, 255, 9], dtype=torch.uint8)
    sd["bool"] = torch.tensor([True, False, True])
    sd["transposed"] = torch.randn(3, 5).t()
    sd["permuted"] = torch.randn(2, 3, 4).permute(2, 0, 1)
    sd["view_a"] = base[2:12].view(2, 5)
    sd["view_b"] = base[5:15:2]
    sd["expanded"] = torch.tensor([1.0, 2.0, 3.0]).expand(4, 3)
    sd["scalar"] = torch.tensor(3.25)
    sd["empty"] = torch.zeros(0, 3)
    sd["param"] = nn.Parameter(torch.randn(2))
    sd["nested"] = {"inner": torch.tensor([[1, 2], [3, 4]], dtype=torch.int16)}
    sd["epoch"] = 3  # not a tensor: skipped by the reader
    assert sd["view_a"].untyped_storage().data_ptr() == sd["view_b"].untyped_storage().data_ptr()
    return sd


def flat_entries(sd, prefix=""):
    out = []
    for k, v in sd.items():
        if isinstance(v, dict):
            out += flat_entries(v, prefix + k + ".")
        elif isinstance(v, torch.Tensor):
            out.append(tensor_entry(prefix + k, v))
    return out


class Inner(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self.scale = nn.Parameter(torch.randn(3))

    def forward(self, x):
        return self.lin(x) * self.scale


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.pos = nn.Parameter(torch.randn(5, 4))
        self.seq = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.LayerNorm(4))
        self.blocks = nn.ModuleList([nn.Linear(4, 4) for _ in range(2)])
        self.attn = nn.MultiheadAttention(4, 2)
        self.inner = Inner()
        self.register_buffer("buf", torch.arange(6.0).view(2, 3))

    def forward(self, x):  # x: (5, 1, 4)
        x = x + self.pos[:, None, :]
        x = self.seq(x)
        for b in self.blocks:
            x = b(x)
        x = x + self.attn(x, x, x, need_weights=False)[0]
        return self.inner(x) + self.buf.sum()


def write_torchscript(path):
    model = Net().float().eval()
    traced = torch.jit.trace_module(model, {"forward": (torch.randn(5, 1, 4),)})
    traced.half()
    traced.save(path)
    back = torch.jit.load(path).state_dict()
    return [tensor_entry(k, v) for k, v in back.items()]


def python_values():
    shared = [1, 2]
    return {
        "none": None, "true": True, "false": False,
        "small": 7, "neg": -3, "i32min": -2 ** 31, "i62": 2 ** 62, "big": 2 ** 64, "negbig": -(2 ** 64),
        "float": 1.5, "negfloat": -2.25e-3,
        "str": "h\u00e9llo \u20ac \\ \n end", "bytes": b"\x00\xffab", "empty_bytes": b"",
        "tuple0": (), "tuple1": (1,), "tuple2": (1, "a"), "tuple3": (1, 2, 3), "tuple4": (1, 2, 3, 4),
        "list": [1, [2, 3], {}], "nested": {"a": {"b": [None]}},
        "set": {3}, "frozenset": frozenset({4}),
        "shared": (shared, shared),
        "od": collections.OrderedDict([("x", 1), ("y", 2)]),
        "intkey": {1: "one", (2, 3): "tuple-key"},
        "bytearray": bytearray(b"xy"),
    }


def main():
    os.makedirs(OUT, exist_ok=True)
    expected = {}

    sd = state_dict()
    torch.save(sd, os.path.join(OUT, "state_dict.pt"))
    torch.save(sd, os.path.join(OUT, "state_dict_legacy.pt"), _use_new_zipfile_serialization=False)
    expected["state_dict.pt"] = flat_entries(sd)
    expected["state_dict_legacy.pt"] = flat_entries(sd)

    expected["small_jit.pt"] = write_torchscript(os.path.join(OUT, "small_jit.pt"))

    keys = np.array([3, 14])
    highres = rng.standard_normal((2, 5, 7)).astype(np.float16)
    np.save(os.path.join(OUT, "cam_dict.npy"), {"keys": keys, "attn_highres": highres})
    expected["cam_dict.npy"] = [array_entry("keys", keys), array_entry("attn_highres", highres)]

    plain = rng.standard_normal((3, 4)).astype(np.float16)
    np.save(os.path.join(OUT, "plain_f16.npy"), plain)
    fortran = np.asfortranarray(rng.standard_normal((3, 4, 2)).astype(np.float32))
    np.save(os.path.join(OUT, "fortran_f32.npy"), fortran)
    big = np.arange(-3, 3, dtype=">i4").reshape(2, 3)
    np.save(os.path.join(OUT, "big_endian_i4.npy"), big)
    flags = np.array([[True, False], [False, True]])
    with open(os.path.join(OUT, "bool_v3.npy"), "wb") as f:
        np.lib.format.write_array(f, flags, version=(3, 0))
    scalar = np.array(0.1, dtype=np.float64)
    np.save(os.path.join(OUT, "scalar_f8.npy"), scalar)
    for name, arr in [("plain_f16.npy", plain), ("fortran_f32.npy", fortran), ("big_endian_i4.npy", big),
                      ("bool_v3.npy", flags), ("scalar_f8.npy", scalar)]:
        expected[name] = [array_entry("", arr)]
    header = open(os.path.join(OUT, "fortran_f32.npy"), "rb").read(128)
    assert b"'fortran_order': True" in header

    obj = python_values()
    for proto in range(6):
        with open(os.path.join(OUT, f"values_p{proto}.pkl"), "wb") as f:
            pickle.dump(obj, f, protocol=proto)

    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
    total = sum(os.path.getsize(os.path.join(OUT, n)) for n in os.listdir(OUT))
    print(f"wrote {len(os.listdir(OUT))} files, {total} bytes, to {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
