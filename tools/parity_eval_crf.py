"""Check of clip_es.pydensecrf as a drop-in: runs the reference's
eval_cam_with_crf.py twice, unmodified except, in the second run, its two pydensecrf imports
switched to clip_es.pydensecrf, in one process (joblib with n_jobs=1), and compares the pseudo
masks of the two runs pixel for pixel and the time spent in the script's CRF (its
`DenseCRF.__call__`: unary, CRF set-up and 10 mean-field iterations).

Usage:
    OFFICIAL_REPO=<checkout of linyq2117/CLIP-ES> python tools/parity_eval_crf.py \
        --cam-dir CAMS_VOC --images JPEGImages --gt SegmentationClassAug --split train.txt \
        --out OUT_DIR [--repeat N]

CAMS_VOC holds the reference's `<id>.npy` CAM files (its path must contain "voc", as the
script decides the dataset from it). Needs pydensecrf (pip pydensecrf2), clip_es, numpy,
opencv-python, pillow, joblib, torch (the script imports it). The two runs write
OUT_DIR/pydensecrf and OUT_DIR/clip_es. Prints the figures and exits 1 if any mask differs.
"""

import argparse
import builtins
import os
import sys
import time

import numpy as np

IMPORTS = {
    "import pydensecrf.densecrf as dcrf": "import clip_es.pydensecrf.densecrf as dcrf",
    "import pydensecrf.utils as utils": "import clip_es.pydensecrf.utils as utils",
}


def run_reference(source, argv, timings):
    """Executes the script's source as __main__ with `argv`, one process, recording the
    seconds of each call of its DenseCRF post-processor into `timings`."""
    import joblib
    import multiprocessing

    g = {"__name__": "__main__", "__file__": "eval_cam_with_crf.py", "__builtins__": builtins}
    real_parallel = joblib.Parallel

    class TimedParallel(real_parallel):
        def __call__(self, iterable):
            # The script builds its DenseCRF instance before calling Parallel: time its calls.
            cls = g["DenseCRF"]
            if not getattr(cls, "_timed", False):
                call = cls.__call__

                def timed(self_, image, probmap):
                    t = time.perf_counter()
                    out = call(self_, image, probmap)
                    timings.append(time.perf_counter() - t)
                    return out

                cls.__call__ = timed
                cls._timed = True
            return super().__call__(iterable)

    old_argv, old_count = sys.argv, multiprocessing.cpu_count
    joblib.Parallel = TimedParallel
    multiprocessing.cpu_count = lambda: 1  # the script's n_jobs: a single process
    sys.argv = ["eval_cam_with_crf.py"] + argv
    try:
        exec(compile(source, "eval_cam_with_crf.py", "exec"), g)
    finally:
        joblib.Parallel = real_parallel
        multiprocessing.cpu_count = old_count
        sys.argv = old_argv


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cam-dir", required=True)
    ap.add_argument("--images", required=True)
    ap.add_argument("--gt", required=True)
    ap.add_argument("--split", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--repeat", type=int, default=1, help="runs of each variant (best kept)")
    args = ap.parse_args()
    repo = os.environ.get("OFFICIAL_REPO")
    if not repo:
        sys.exit("set OFFICIAL_REPO to a checkout of the reference CLIP-ES")
    if "voc" not in args.cam_dir:
        sys.exit("--cam-dir must contain 'voc' (the script picks the dataset from it)")
    with open(os.path.join(repo, "eval_cam_with_crf.py")) as f:
        original = f.read()
    patched = original
    for old, new in IMPORTS.items():
        assert patched.count(old) == 1, f"the script does not import `{old}` once"
        patched = patched.replace(old, new)

    ids = [l.strip() for l in open(args.split) if l.strip()]
    variants = [("pydensecrf", original), ("clip_es", patched)]
    results = {}
    # The variants alternate, and each keeps its best run, so that load from other processes
    # weighs on both alike.
    for _ in range(args.repeat):
        for name, source in variants:
            out = os.path.join(args.out, name)
            timings = []
            t = time.perf_counter()
            run_reference(source, ["--cam_out_dir", args.cam_dir, "--image_root", args.images,
                                   "--gt_root", args.gt, "--split_file", args.split,
                                   "--pseudo_mask_save_path", out], timings)
            total = time.perf_counter() - t
            assert len(timings) == len(ids), (len(timings), len(ids))
            if name not in results or sum(timings) < sum(results[name][0]):
                results[name] = (timings, total)
    for name, _ in variants:
        timings, total = results[name]
        print(f"{name}: CRF {sum(timings):.3f} s for {len(ids)} images "
              f"(median {np.median(timings) * 1000:.1f} ms), whole script {total:.3f} s "
              f"(best of {args.repeat})")

    import cv2

    same = 0
    pixels = differing = 0
    for i in ids:
        a = cv2.imread(os.path.join(args.out, "pydensecrf", i + ".png"), cv2.IMREAD_UNCHANGED)
        b = cv2.imread(os.path.join(args.out, "clip_es", i + ".png"), cv2.IMREAD_UNCHANGED)
        assert a is not None and b is not None, i
        pixels += a.size
        differing += int((a != b).sum())
        same += int(np.array_equal(a, b))
    speedup = sum(results["pydensecrf"][0]) / sum(results["clip_es"][0])
    print(f"masks identical: {same}/{len(ids)} images, {differing} of {pixels} pixels differ")
    print(f"CRF speed-up (pydensecrf time / clip_es time, one process): {speedup:.2f}x")
    sys.exit(0 if same == len(ids) else 1)


if __name__ == "__main__":
    main()
