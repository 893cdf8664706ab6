"""clip-es: CLIP-ES (Lin et al., CVPR 2023) weakly supervised segmentation in Rust, from Python.

- ``clip_es.pydensecrf``: a drop-in replacement for pydensecrf (``densecrf`` and ``utils``),
  numerically identical and faster.

All computation runs in native code with the GIL released. Parallel work uses a pool of
``num_threads()`` threads: set it with ``set_num_threads(n)`` before any other call, or with
the environment variable ``RAYON_NUM_THREADS``.
"""

from . import _native
from ._native import num_threads, set_num_threads

__version__: str = _native.__version__

__all__ = ["num_threads", "set_num_threads", "pydensecrf", "__version__"]


def __getattr__(name: str):
    # `clip_es.pydensecrf` without an explicit import, as a submodule would be after one.
    if name == "pydensecrf":
        from . import pydensecrf

        return pydensecrf
    raise AttributeError(f"module 'clip_es' has no attribute {name!r}")
