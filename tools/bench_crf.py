#!/usr/bin/env python3
"""Single-thread speed of the dense CRF: pydensecrf against clip-es-crf on the same inputs.

For every image of a split it builds exactly the inputs CLIP-ES's eval_cam_with_crf.py gives
pydensecrf (float16 CAMs -> [1 - max, cams] -> float16 unary_from_softmax; the BGR image minus the
mean, wrapped to uint8), times pydensecrf (set unary, both kernels, 10 iterations; best of
--repeats), writes the inputs and pydensecrf's marginals to a work directory, runs the Rust
benchmark (crates/clip-es-crf/examples/bench_crf.rs) on them, and prints both times, the ratio,
and whether the marginals agree bit for bit.

    python tools/bench_crf.py \
        --cams PARITY_DIR/runs/voc/cams \
        --images PARITY_DIR/fixture/VOC2012/JPEGImages \
        --split PARITY_DIR/fixture/VOC2012/ImageSets/Segmentation/train.txt

Both sides run on one thread (the script sets OMP/MKL thread counts to 1; the Rust benchmark is
single-threaded). Run it on an otherwise idle machine. CAMs may be the reference's pickled
`.npy` dicts or clip-es `.npz` files.

With --scaling it also times the whole `clip-es masks` command (CAM and image reading, CRF,
PNG writing) on the split with --jobs 1, 2, 4, ... up to the number of cores (wall clock).
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pydensecrf.densecrf as dcrf  # noqa: E402
import pydensecrf.utils as utils  # noqa: E402

cv2.setNumThreads(1)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEAN_BGR = (104.008, 116.669, 122.675)


def load_cams(cam_dir, image_id):
    npy = os.path.join(cam_dir, image_id + ".npy")
    if os.path.exists(npy):
        d = np.load(npy, allow_pickle=True).item()
        return d["attn_highres"]
    return np.load(os.path.join(cam_dir, image_id + ".npz"))["attn_highres"]


def reference_inputs(cams, image_path):
    bg = np.power(1 - np.max(cams, axis=0, keepdims=True), 1)
    prob = np.concatenate((bg, cams), axis=0)
    unary = np.ascontiguousarray(utils.unary_from_softmax(prob))
    image = cv2.imread(image_path, cv2.IMREAD_COLOR).astype(np.float32)
    image -= MEAN_BGR
    image = np.ascontiguousarray(image.astype(np.uint8))
    return unary, image


def run_pydensecrf(unary, image):
    h, w = image.shape[:2]
    d = dcrf.DenseCRF2D(w, h, unary.shape[0])
    d.setUnaryEnergy(unary)
    d.addPairwiseGaussian(sxy=1, compat=3)
    d.addPairwiseBilateral(sxy=67, srgb=3, rgbim=image, compat=4)
    return np.array(d.inference(10))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cams", required=True)
    ap.add_argument("--images", required=True)
    ap.add_argument("--split", required=True)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--limit", type=int, default=0, help="only the first N images")
    ap.add_argument("--work", help="directory for the inputs (default: a temporary one)")
    ap.add_argument("--scaling", action="store_true", help="also time `clip-es masks` with 1..N jobs")
    args = ap.parse_args()

    ids = [line.split()[0] for line in open(args.split) if line.strip()]
    if args.limit:
        ids = ids[: args.limit]
    work = args.work or tempfile.mkdtemp(prefix="bench_crf_")
    os.makedirs(work, exist_ok=True)
    py_times, py_wall = {}, {}
    for image_id in ids:
        cams = load_cams(args.cams, image_id)
        unary, image = reference_inputs(cams, os.path.join(args.images, image_id + ".jpg"))
        best, best_wall = float("inf"), float("inf")
        for _ in range(args.repeats):
            t, c = time.perf_counter(), time.thread_time()
            q = run_pydensecrf(unary, image)
            best = min(best, time.thread_time() - c)
            best_wall = min(best_wall, time.perf_counter() - t)
        py_times[image_id] = best
        py_wall[image_id] = best_wall
        np.save(os.path.join(work, image_id + "_unary.npy"), unary)
        np.save(os.path.join(work, image_id + "_image.npy"), image)
        np.save(os.path.join(work, image_id + "_q.npy"), np.ascontiguousarray(q.astype(np.float32)))

    cmd = ["cargo", "run", "--quiet", "--release", "-p", "clip-es-crf", "--example", "bench_crf", "--",
           work, str(args.repeats)]
    out = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    rust_times, rust_wall, diffs, sizes = {}, {}, {}, {}
    for line in out.splitlines():
        t = line.split()
        if t[0] == "TIME":
            rust_times[t[1]] = float(t[2])
            rust_wall[t[1]] = float(t[3])
            sizes[t[1]] = " ".join(t[4:])
        elif t[0] == "DIFF":
            diffs[t[1]] = (int(t[2]), float(t[3]))

    print("CPU seconds of the computing thread (best of %d runs); wall-clock seconds in brackets" % args.repeats)
    print(f"{'image':<16} {'size':<22} {'pydensecrf':>18} {'clip-es-crf':>18} {'speedup':>8}  marginals")
    for image_id in ids:
        p, r = py_times[image_id], rust_times[image_id]
        n, mx = diffs.get(image_id, (-1, float("nan")))
        agree = "identical" if n == 0 else f"{n} differ (max {mx:.1e})"
        print(f"{image_id:<16} {sizes[image_id]:<22} {p:>8.4f} ({py_wall[image_id]:>7.4f}) "
              f"{r:>8.4f} ({rust_wall[image_id]:>7.4f}) {p / r:>7.2f}x  {agree}")
    tp, tr = sum(py_times.values()), sum(rust_times[i] for i in ids)
    wp, wr = sum(py_wall.values()), sum(rust_wall[i] for i in ids)
    print(f"{'total':<16} {'':<22} {tp:>8.4f} ({wp:>7.4f}) {tr:>8.4f} ({wr:>7.4f}) {tp / tr:>7.2f}x")
    print(f"per image: pydensecrf {tp / len(ids):.4f} s, clip-es-crf {tr / len(ids):.4f} s, "
          f"ratio {tp / tr:.2f}x CPU time (wall: {wp / wr:.2f}x), one thread each")
    if args.scaling:
        scaling(args, work)
    return 0


def scaling(args, work):
    subprocess.run(["cargo", "build", "--quiet", "--release", "-p", "clip-es"], cwd=ROOT, check=True)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    exe = os.path.join(target, "release", "clip-es")
    jobs, n = [], 1
    while n <= (os.cpu_count() or 1):
        jobs.append(n)
        n *= 2
    print(f"clip-es masks on {args.split} (wall clock, best of {args.repeats}):")
    base = None
    for j in jobs:
        best = float("inf")
        for _ in range(args.repeats):
            t = time.perf_counter()
            subprocess.run([exe, "masks", "--cams", args.cams, "--images", args.images, "--split", args.split,
                            "--out", os.path.join(work, "masks"), "--overwrite", "--jobs", str(j)],
                           check=True, capture_output=True)
            best = min(best, time.perf_counter() - t)
        base = base or best
        print(f"  --jobs {j}: {best:.3f} s ({base / best:.2f}x)")


if __name__ == "__main__":
    sys.exit(main())
