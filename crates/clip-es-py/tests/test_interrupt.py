"""Ctrl-C (SIGINT) interrupts long native calls with KeyboardInterrupt within seconds: the
CRF's inference and the pseudo mask stop between mean-field iterations. (Training:
test_stage3.py.) Each call runs in a child interpreter that the test signals once the call has
begun; without the check the call would run for minutes."""

import signal
import subprocess
import sys
import textwrap
import time

import pytest

PRELUDE = """
import sys
import numpy as np
import clip_es
import clip_es.pydensecrf.densecrf as dcrf

rng = np.random.default_rng(0)
w, h, m = 200, 150, 21
probs = rng.random((m, h, w), dtype=np.float32) + 0.1
probs /= probs.sum(0)
image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
"""

CALLS = {
    "inference": """
        d = dcrf.DenseCRF2D(w, h, m)
        d.setUnaryEnergy(np.ascontiguousarray(-np.log(probs).reshape(m, -1)))
        d.addPairwiseGaussian(3, 3)
        d.addPairwiseBilateral(60, 10, image, 5)
        call = lambda: d.inference(200000)
    """,
    "pseudo_mask": """
        cams = {"keys": np.arange(m - 1), "attn_highres": probs[1:].astype(np.float16)}
        call = lambda: clip_es.pseudo_mask(cams, image, iterations=1000)  # the most accepted
    """,
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_sigint_raises_keyboard_interrupt(name):
    code = PRELUDE + textwrap.dedent(CALLS[name]) + textwrap.dedent("""
        print("started", flush=True)
        try:
            call()
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            sys.exit(0)
        print("finished", flush=True)
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "started", child.communicate()
        # Let the native call begin: a signal before it would be raised by the interpreter
        # whatever the native code does.
        time.sleep(1.0)
        assert child.poll() is None
        sent = time.monotonic()
        child.send_signal(signal.SIGINT)
        stdout, stderr = child.communicate(timeout=20)
        took = time.monotonic() - sent
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert child.returncode == 0 and stdout.strip() == "interrupted", (stdout, stderr[-2000:])
    assert took < 20, took
