"""A drop-in replacement for pydensecrf, on clip-es's CRF.

Replace ``import pydensecrf.densecrf as dcrf`` by ``import clip_es.pydensecrf.densecrf as dcrf``
and ``from pydensecrf.utils import ...`` by ``from clip_es.pydensecrf.utils import ...``; nothing
else changes. Inference gives the same float32 marginals as pydensecrf 1.0 (densecrf compiled
with Eigen 3.3 and SSE2), bit for bit, several times faster. What is not covered is listed in
the package documentation (docs/python.md of the clip-es repository).
"""

from . import densecrf, utils

__all__ = ["densecrf", "utils"]
