"""pydensecrf's ``utils`` module: unary energies from labels or class probabilities, and
pairwise feature arrays for ``DenseCRF.addPairwiseEnergy``. Pure numpy, written to perform the
same numpy operations as pydensecrf's ``pydensecrf/utils.py`` lines 6-162 (github
lucasb-eyer/pydensecrf at commit 2723c7fa), so results (values and dtypes) are identical.
"""

from __future__ import annotations

from logging import warning
from numbers import Number
from typing import Optional, Sequence, Union

import numpy as np

__all__ = [
    "unary_from_labels",
    "unary_from_softmax",
    "create_pairwise_gaussian",
    "create_pairwise_bilateral",
    "compute_unary",
    "softmax_to_unary",
]


def unary_from_labels(
    labels: np.ndarray, n_labels: int, gt_prob: float, zero_unsure: bool = True
) -> np.ndarray:
    """Unary energy of shape (n_labels, labels.size), float32, from a label map: each pixel's
    label has probability ``gt_prob``, the others share the rest.

    With ``zero_unsure`` (the default) the value 0 means "unknown" (uniform probability) and
    labels 1..n_labels map to rows 0..n_labels-1; otherwise labels are 0..n_labels-1.
    ``gt_prob`` must lie in (0, 1) (``AssertionError`` otherwise, as in pydensecrf).
    """
    assert 0 < gt_prob < 1, "`gt_prob must be in (0,1)."
    flat = labels.flatten()
    other_energy = -np.log((1.0 - gt_prob) / (n_labels - 1))
    label_energy = -np.log(gt_prob)
    # Order matters: the label entries overwrite the background, then the unknown pixels
    # overwrite both.
    unary = np.full((n_labels, len(flat)), other_energy, dtype="float32")
    rows = flat - 1 if zero_unsure else flat
    unary[rows, np.arange(unary.shape[1])] = label_energy
    if zero_unsure:
        unary[:, flat == 0] = -np.log(1.0 / n_labels)
    return unary


def compute_unary(labels: np.ndarray, M: int, GT_PROB: float = 0.5) -> np.ndarray:
    """Deprecated alias of :func:`unary_from_labels` (kept from pydensecrf)."""
    warning("pydensecrf.compute_unary is deprecated, use unary_from_labels instead.")
    return unary_from_labels(labels, M, GT_PROB)


def unary_from_softmax(
    sm: np.ndarray, scale: Optional[float] = None, clip: Optional[float] = 1e-5
) -> np.ndarray:
    """Unary energy ``-log(p)`` of shape (classes, pixels), float32, from class probabilities
    ``sm`` of shape (classes, ...), clipped below at ``clip``. With ``scale``, probabilities are
    first mixed with the uniform distribution: ``scale * p + (1 - scale) / classes``.

    The logarithm is taken in ``sm``'s own dtype (float16 stays float16 until the final cast),
    as pydensecrf does.
    """
    n_classes = sm.shape[0]
    if scale is not None:
        assert 0 < scale <= 1, "`scale` needs to be in (0,1]"
        uniform = np.ones(sm.shape) / n_classes
        sm = scale * sm + (1 - scale) * uniform
    if clip is not None:
        sm = np.clip(sm, clip, 1.0)
    return -np.log(sm).reshape([n_classes, -1]).astype(np.float32)


def softmax_to_unary(sm: np.ndarray, GT_PROB: float = 1) -> np.ndarray:
    """Deprecated alias of :func:`unary_from_softmax` (kept from pydensecrf)."""
    warning("pydensecrf.softmax_to_unary is deprecated, use unary_from_softmax instead.")
    scale = None if GT_PROB == 1 else GT_PROB
    return unary_from_softmax(sm, scale, clip=None)


def _scaled_mesh(sdims: Sequence[float], shape: Sequence[int]) -> np.ndarray:
    """float32 coordinates of every element of an array of ``shape`` (one plane per axis),
    plane ``i`` divided by ``sdims[i]``."""
    mesh = np.array(np.meshgrid(*[range(s) for s in shape], indexing="ij"), dtype=np.float32)
    for axis, s in enumerate(sdims):
        mesh[axis] /= s
    return mesh


def create_pairwise_gaussian(sdims: Sequence[float], shape: Sequence[int]) -> np.ndarray:
    """Position features of shape (len(sdims), prod(shape)), float32, for an array of any
    number of dimensions: coordinate ``i`` divided by ``sdims[i]``. For an image of shape
    (h, w) with ``sdims=(s, s)`` this is ``DenseCRF2D.addPairwiseGaussian(s, ...)``'s kernel
    (with the axes in (y, x) order)."""
    return _scaled_mesh(sdims, shape).reshape([len(sdims), -1])


def create_pairwise_bilateral(
    sdims: Sequence[float],
    schan: Union[float, Sequence[float]],
    img: np.ndarray,
    chdim: int = -1,
) -> np.ndarray:
    """Position and channel features, float32, of shape (len(sdims) + channels, pixels):
    coordinates divided by ``sdims``, then the image's channels divided by ``schan`` (one
    number for all, or one per channel). ``chdim`` is the channel axis of ``img``, or -1 for an
    image without one (a single channel)."""
    if chdim == -1:
        channels = img[np.newaxis].astype(np.float32)
    else:
        channels = np.rollaxis(img, chdim).astype(np.float32)
    if isinstance(schan, Number):
        channels /= schan
    else:
        for c, s in enumerate(schan):
            channels[c] /= s
    mesh = _scaled_mesh(sdims, channels.shape[1:])
    feats = np.concatenate([mesh, channels])
    return feats.reshape([feats.shape[0], -1])
