"""Threads: the GIL is released while native code computes, and the size of clip-es's thread
pool follows RAYON_NUM_THREADS or set_num_threads."""

import os
import subprocess
import sys
import threading

import numpy as np

import clip_es
import clip_es.pydensecrf.densecrf as dcrf


def test_inference_releases_the_gil():
    # While one thread runs a long inference, the main thread keeps running Python code. Were
    # the GIL held, the loop below would not advance until the inference ended.
    w, h, m = 160, 120, 21
    rng = np.random.default_rng(0)
    d = dcrf.DenseCRF2D(w, h, m)
    d.setUnaryEnergy(rng.random((m, w * h), dtype=np.float32))
    d.addPairwiseGaussian(3, 3)
    started = threading.Event()

    def work():
        started.set()
        d.inference(30)

    t = threading.Thread(target=work)
    t.start()
    started.wait()
    spins = 0
    while t.is_alive():
        spins += 1
    t.join()
    assert spins > 10000, spins


def run(code, env=None):
    e = dict(os.environ)
    e.pop("RAYON_NUM_THREADS", None)
    e.update(env or {})
    out = subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_rayon_num_threads_is_honoured():
    assert run("import clip_es; print(clip_es.num_threads())", {"RAYON_NUM_THREADS": "3"}) == "3"


def test_set_num_threads():
    code = (
        "import clip_es\n"
        "clip_es.set_num_threads(2)\n"
        "print(clip_es.num_threads())\n"
        "try:\n"
        "    clip_es.set_num_threads(3)\n"
        "except ValueError as e:\n"
        "    print('refused')\n"
    )
    assert run(code).split() == ["2", "refused"]


def test_version():
    assert clip_es.__version__.count(".") == 2


def test_one_model_serves_several_threads():
    # Calls on one Model from a pool of threads, with two class sets interleaved (the text
    # classifier switches between them), give the results of the same calls made one by one.
    from concurrent.futures import ThreadPoolExecutor

    from test_pipeline import IMAGES, MODEL

    model = clip_es.load_model(MODEL)
    calls = [(os.path.join(IMAGES, f"{i}.jpg"), labels, dataset)
             for i, labels in [("chelsea", ["cat"]), ("horse", ["horse"])]
             for dataset in ["voc", "coco"]] * 3

    def cams(call):
        image, labels, dataset = call
        return model.cams(image, labels, dataset=dataset)

    serial = [cams(c) for c in calls]
    with ThreadPoolExecutor(max_workers=6) as pool:
        parallel = list(pool.map(cams, calls))
    for a, b in zip(serial, parallel):
        assert np.array_equal(a["keys"], b["keys"])
        assert np.array_equal(a["attn_highres"], b["attn_highres"])
