"""Run one of the official CLIP-ES scripts unmodified on CUDA, timing each image.

usage: OFFICIAL_REPO=DIR python official_cuda.py SCRIPT.py [script args...]
The script runs as written: its own 'cuda' devices (and, for CLIP, clip.load's float16 model on
CUDA). Each image's time ends after torch.cuda.synchronize(). Prints the REFERENCE_TIMING line
of official_cpu.py with PyTorch's allocator peak (`peak_alloc_mib`, torch.cuda.max_memory_allocated).
Exits with a message when torch has no CUDA.

For testing this path on a machine without a GPU only: CLIP_ES_BENCH_TORCH_DEVICE=cpu maps the
devices to the CPU as official_cpu.py does (THREADS threads) and says so on its first line.
"""
import os, sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import official_cpu  # noqa: E402


def main():
    override = os.environ.get("CLIP_ES_BENCH_TORCH_DEVICE", "")
    if override not in ("", "cpu"):
        sys.exit(f"error: CLIP_ES_BENCH_TORCH_DEVICE={override!r}: only 'cpu' (a test override) is known")
    if override == "cpu":
        print("TEST OVERRIDE (CLIP_ES_BENCH_TORCH_DEVICE=cpu): the reference runs on the CPU, not CUDA", flush=True)
        official_cpu.map_cuda_to_cpu(int(os.environ.get("THREADS", "2")))
        cuda = False
    elif not torch.cuda.is_available():
        sys.exit(f"error: this torch ({torch.__version__}) sees no CUDA device "
                 f"(built for CUDA {torch.version.cuda or 'none'}); the reference cannot run on CUDA here")
    else:
        cuda = True
        print(f"reference device: cuda ({torch.cuda.get_device_name(0)})", flush=True)
    stamps = official_cpu.time_images(sync=torch.cuda.synchronize if cuda else None)
    total = official_cpu.run_script(os.environ["OFFICIAL_REPO"], sys.argv[1:])
    extra = f" peak_alloc_mib={torch.cuda.max_memory_allocated() / 2**20:.1f}" if cuda else ""
    line = official_cpu.timing_line(stamps, total, extra)
    if line:
        print(line, flush=True)


if __name__ == "__main__":
    main()
