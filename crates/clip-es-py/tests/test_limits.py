"""Sizes beyond the memory or beyond densecrf's C ints raise Python exceptions (OverflowError,
MemoryError, ValueError) instead of aborting the interpreter (test_stage3.py checks that a Rust
panic reaches Python as a RuntimeError, never as pyo3's PanicException). Each call runs in a
child interpreter, so that an abort shows as a failed test rather than a crashed pytest."""

import os
import subprocess
import sys
import textwrap

import pytest

from test_pipeline import IMAGES, MODEL

PRELUDE = """
import numpy as np
import clip_es
import clip_es._native as native
import clip_es.pydensecrf.densecrf as dcrf

def report(call):
    try:
        call()
    except Exception as e:  # PanicException is a BaseException: it is not caught here
        print("raised", type(e).__name__, str(e)[:300])
    else:
        print("returned")
"""


def child(code, timeout=120):
    """Runs `code` after PRELUDE in a new interpreter; its output, which must be a clean exit."""
    out = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(code)],
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, (out.returncode, out.stdout, out.stderr[-2000:])
    return out.stdout.strip()


@pytest.mark.parametrize("call, allowed", [
    # w * h = 1e10 variables: more than densecrf's C int counts.
    ("dcrf.DenseCRF2D(100000, 100000, 21)", {"OverflowError", "MemoryError", "ValueError"}),
    # pydensecrf raises OverflowError converting 2**40 to a C int.
    ("dcrf.DenseCRF(2**40, 2)", {"OverflowError"}),
    ("dcrf.DenseCRF(10, 2**40)", {"OverflowError"}),
    # The native CRF takes sizes beyond C ints; its buffers are allocated fallibly.
    ("native.Crf(10**12, 21)", {"MemoryError"}),
    ("native.Crf(2**62, 2**62)", {"MemoryError"}),
])
def test_crf_sizes_raise(call, allowed):
    out = child(f"report(lambda: {call})")
    assert out.split()[:2][0] == "raised" and out.split()[1] in allowed, out


def available_bytes():
    """MemAvailable of /proc/meminfo (0 where there is none)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def test_cams_of_a_huge_array_view_raise():
    # A square RGB view of one pixel, at least 100000 x 100000 (30 GB once copied) and larger
    # than the memory available, so that no machine copies it.
    side = max(100000, int((available_bytes() / 3) ** 0.5) + 1)
    out = child(f"""
        model = clip_es.load_model({MODEL!r})
        view = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), ({side}, {side}, 3))
        report(lambda: model.cams(view, ["cat"]))
        # The model still works afterwards.
        got = model.cams({os.path.join(IMAGES, "chelsea.jpg")!r}, ["cat"])
        print("after", got["attn_highres"].shape)
    """, timeout=300)
    first, after = out.splitlines()[-2:]
    assert first.split()[:2] == ["raised", "MemoryError"], out
    assert after.startswith("after (1,"), out
