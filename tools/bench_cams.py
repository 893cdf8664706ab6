"""Side-by-side CAM speed: the CLIP-ES reference (run unmodified on the CPU through the parity
fixture's tools/parity/official_cpu.py) and `clip-es cams`, same images, same weights, same thread count.
Prints both medians of seconds per image, the ratio, wall times and peak memory, and checks
that the two outputs agree.

usage:
  OFFICIAL_REPO=/path/to/CLIP-ES python tools/bench_cams.py \
      --fixture FIXTURE_DIR [--threads 2] [--rounds 1]

The fixture is what tools/parity/make_fixture.py writes (VOC2012/ mini dataset and
ViT-B-16-random.pt). clip-es is taken from target/release/clip-es (build it first with
`cargo build --release`).
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd, env=None, cwd=None):
    """Runs cmd, returns (stdout+stderr text, wall seconds, peak RSS in MB) of that process."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=cwd, text=True)
    out_chunks = []
    for line in p.stdout:
        out_chunks.append(line)
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t
    out = "".join(out_chunks)
    if p.returncode != 0:
        sys.exit(f"{cmd[0]} failed ({p.returncode}):\n{out[-3000:]}")
    return out, wall, usage.ru_maxrss / 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixture", required=True)
    ap.add_argument("--parity-kit", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "parity"),
                    help="directory holding official_cpu.py (default: tools/parity)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1, help="alternate the two programs this many times")
    ap.add_argument("--clip-es", default=os.path.join(REPO, "target/release/clip-es"))
    args = ap.parse_args()
    official = os.environ.get("OFFICIAL_REPO")
    if not official:
        sys.exit("set OFFICIAL_REPO to a checkout of linyq2117/CLIP-ES")
    voc = os.path.join(args.fixture, "VOC2012")
    split = os.path.join(voc, "ImageSets/Segmentation/train.txt")
    model = os.path.join(args.fixture, "ViT-B-16-random.pt")
    ref_times, our_times, ref_wall, our_wall, ref_rss, our_rss = [], [], [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            ours_dir = os.path.join(tmp, f"ours{r}")
            report = os.path.join(tmp, f"report{r}.json")
            _, wall, rss = run([args.clip_es, "cams", "--dataset", "voc", "--images", os.path.join(voc, "JPEGImages"),
                                "--annotations", os.path.join(voc, "Annotations"), "--split", split, "--model", model,
                                "--out", ours_dir, "--threads", str(args.threads), "--report", report])
            our_times += [im["seconds"] for im in json.load(open(report))["images"]]
            our_wall.append(wall)
            our_rss.append(rss)

            # the eval scripts of the reference look for 'voc' in the output path
            ref_dir = os.path.join(tmp, f"voc_ref{r}")
            env = dict(os.environ, THREADS=str(args.threads), OFFICIAL_REPO=official, OMP_NUM_THREADS=str(args.threads))
            out, wall, rss = run([sys.executable, os.path.join(args.parity_kit, "official_cpu.py"), "generate_cams_voc12.py",
                                  "--img_root", os.path.join(voc, "JPEGImages"), "--split_file", split, "--model", model,
                                  "--num_workers", "1", "--cam_out_dir", ref_dir], env=env, cwd=official)
            m = re.search(r"REFERENCE_TIMING .*per_image_s=\[([^\]]*)\]", out)
            ref_times += [float(v) for v in m.group(1).split(",")]
            ref_wall.append(wall)
            ref_rss.append(rss)

        diffs = []
        for f in sorted(os.listdir(ref_dir)):
            ref = np.load(os.path.join(ref_dir, f), allow_pickle=True).item()
            with np.load(os.path.join(ours_dir, f[:-4] + ".npz")) as z:
                assert list(z["keys"]) == list(ref["keys"]), f
                diffs.append(np.abs(z["attn_highres"].astype(np.float32) - ref["attn_highres"].astype(np.float32)).ravel())
        d = np.concatenate(diffs)

    med_ref, med_ours = statistics.median(ref_times), statistics.median(our_times)
    print(f"images: {len(ref_times) // args.rounds} x {args.rounds} round(s), threads: {args.threads}")
    print(f"reference: median {med_ref:.3f} s/image, wall {min(ref_wall):.1f} s, peak RSS {max(ref_rss):.0f} MB")
    print(f"clip-es:   median {med_ours:.3f} s/image, wall {min(our_wall):.1f} s, peak RSS {max(our_rss):.0f} MB")
    print(f"speed-up (median s/image, reference / clip-es): {med_ref / med_ours:.2f}x")
    print(f"attn_highres vs reference: mean abs diff {d.mean():.6f}, p99 {np.percentile(d, 99):.6f}, max {d.max():.6f}")


if __name__ == "__main__":
    main()
