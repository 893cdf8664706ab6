"""clip-es: CLIP-ES (Lin et al., CVPR 2023) weakly supervised segmentation in Rust, from Python.

- ``load_model(name_or_path)`` loads CLIP; ``model.cams(image, labels, dataset="voc")`` gives
  the CAMs of one image as the reference's dict (``keys``, ``attn_highres``).
- ``pseudo_mask(cams, image)`` makes the dense-CRF pseudo mask of one image.
- ``evaluate(gt, split, cams=... | masks=...)`` scores a directory of CAMs or masks.
- ``train(arch, images, masks, split, out, ...)`` trains DeepLab-v2 or the clip-decoder on
  pseudo masks (stage three); ``predict(checkpoint, images, split, out, crf=...)`` writes the
  trained network's label maps.
- ``run(images, out, labels=..., gt=..., train=...)``, ``segment(photos, classes=...)`` and
  ``prompts(images, templates, split=...)`` are the commands ``clip-es run``, ``segment`` and
  ``prompts``, with their options as keyword arguments.
- ``clip_es.pydensecrf``: a drop-in replacement for pydensecrf (``densecrf`` and ``utils``),
  numerically identical and faster.

These run the same library code as the ``clip-es`` command line. All computation runs in
native code with the GIL released. Parallel work uses a pool of ``num_threads()`` threads: set
it with ``set_num_threads(n)`` before any other call, or with the environment variable
``RAYON_NUM_THREADS``. Bad arguments raise ``ValueError`` (``TypeError`` for arguments of the
wrong kind) with the library's message.
"""

from . import _native
from ._native import (
    Model,
    evaluate,
    load_model,
    num_threads,
    predict,
    prompts,
    pseudo_mask,
    run,
    segment,
    set_num_threads,
    train,
)

__version__: str = _native.__version__

__all__ = [
    "Model",
    "load_model",
    "pseudo_mask",
    "evaluate",
    "train",
    "predict",
    "run",
    "segment",
    "prompts",
    "num_threads",
    "set_num_threads",
    "pydensecrf",
    "__version__",
]


def __getattr__(name: str):
    # `clip_es.pydensecrf` without an explicit import, as a submodule would be after one.
    if name == "pydensecrf":
        from . import pydensecrf

        return pydensecrf
    raise AttributeError(f"module 'clip_es' has no attribute {name!r}")
