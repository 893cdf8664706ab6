"""pydensecrf's ``densecrf`` module: ``DenseCRF``, ``DenseCRF2D`` and the kernel and
normalization enums, with pydensecrf's signatures, defaults, dtypes and shapes (mirrors
pydensecrf's ``pydensecrf/densecrf.pyx`` lines 11-140 and ``densecrf.pxd``, github
lucasb-eyer/pydensecrf at commit 2723c7fa; the CRF itself is the clip-es-crf crate:
Kraehenbuehl and Koltun, NIPS 2011).

Arrays are checked the way pydensecrf's Cython signatures check them: float32 (uint8 for the
image), the right number of dimensions, C-contiguous; a wrong one raises ``ValueError`` naming
the argument. ``None`` where an array is required raises ``TypeError``, as in pydensecrf.
Unlike pydensecrf, non-finite unary energies, features or weights raise ``ValueError`` (pydensecrf
silently returns NaN marginals), and so do compatibility vectors or matrices of the wrong size
(pydensecrf reads past their end). Sizes are C ints, as in pydensecrf: a count beyond 2**31 - 1
raises ``OverflowError``, and so does a ``DenseCRF2D`` whose ``w * h`` exceeds it (pydensecrf
overflows); a CRF too large for the memory raises ``MemoryError``. Ctrl-C interrupts
``inference`` between iterations with ``KeyboardInterrupt``.

Step-by-step inference (``startInference``, ``stepInference``, ``klDivergence``) has
pydensecrf's semantics and values, with one difference: the marginals and the two scratch
matrices are float32 numpy arrays of shape (nlabels, nvar), not pydensecrf's ``eigen.MatrixXf``
(``np.array`` of either gives the same array); ``stepInference`` updates ``Q`` in place and does
not use ``tmp1`` and ``tmp2`` (pydensecrf leaves energies in them).
"""

from __future__ import annotations

import enum
import operator
from numbers import Number
from typing import Any, Sequence, Tuple, Union

import numpy as np

from .. import _native

__all__ = [
    "DenseCRF",
    "DenseCRF2D",
    "KernelType",
    "NormalizationType",
    "CONST_KERNEL",
    "DIAG_KERNEL",
    "FULL_KERNEL",
    "NO_NORMALIZATION",
    "NORMALIZE_BEFORE",
    "NORMALIZE_AFTER",
    "NORMALIZE_SYMMETRIC",
]


class KernelType(enum.IntEnum):
    """densecrf's kernel types. Only learning uses them; inference is the same for all."""

    CONST_KERNEL = 0
    DIAG_KERNEL = 1
    FULL_KERNEL = 2


class NormalizationType(enum.IntEnum):
    """How a pairwise term normalises its filter (densecrf's ``NormalizationType``)."""

    NO_NORMALIZATION = 0
    NORMALIZE_BEFORE = 1
    NORMALIZE_AFTER = 2
    NORMALIZE_SYMMETRIC = 3


CONST_KERNEL = KernelType.CONST_KERNEL
DIAG_KERNEL = KernelType.DIAG_KERNEL
FULL_KERNEL = KernelType.FULL_KERNEL
NO_NORMALIZATION = NormalizationType.NO_NORMALIZATION
NORMALIZE_BEFORE = NormalizationType.NORMALIZE_BEFORE
NORMALIZE_AFTER = NormalizationType.NORMALIZE_AFTER
NORMALIZE_SYMMETRIC = NormalizationType.NORMALIZE_SYMMETRIC

Compat = Union[float, np.ndarray]


# C type names of numpy dtypes, as Cython's buffer errors print them.
_C_NAMES = {
    "float32": "float",
    "float64": "double",
    "float16": "half",
    "uint8": "unsigned char",
    "int8": "signed char",
    "int16": "short",
    "uint16": "unsigned short",
    "int32": "int",
    "uint32": "unsigned int",
    "int64": "long",
    "uint64": "unsigned long",
    "bool": "bool",
}


def _c_name(dtype: np.dtype) -> str:
    return _C_NAMES.get(dtype.name, dtype.name) if dtype.isnative else f"{dtype.str}"


def _buffer(x: Any, name: str, dtype: Any, ndim: int) -> np.ndarray:
    """``x`` as a C-contiguous array of ``dtype`` and ``ndim`` dimensions, or an error like
    the one Cython raises for a typed memoryview argument."""
    if x is None:
        raise TypeError(f"Argument '{name}' must not be None")
    if not isinstance(x, np.ndarray):
        # Any object with the buffer protocol, as Cython accepts (TypeError otherwise).
        x = np.asarray(memoryview(x))
    want = np.dtype(dtype)
    if x.dtype != want:
        raise ValueError(
            f"{name}: Buffer dtype mismatch, expected '{_c_name(want)}' but got "
            f"'{_c_name(x.dtype)}'"
        )
    if x.ndim != ndim:
        raise ValueError(
            f"{name}: Buffer has wrong number of dimensions (expected {ndim}, got {x.ndim})"
        )
    if not x.flags["C_CONTIGUOUS"]:
        raise ValueError(f"{name}: ndarray is not C-contiguous")
    return x


def _compat(compat: Any) -> Any:
    """A label compatibility as pydensecrf reads it: a number is a Potts weight, a float32
    vector one weight per label, a float32 matrix a full compatibility."""
    if isinstance(compat, Number):
        return float(compat)  # type: ignore[arg-type]
    ndim = memoryview(compat).ndim
    if ndim == 1:
        return _buffer(compat, "compat", np.float32, 1)
    if ndim == 2:
        return _buffer(compat, "compat", np.float32, 2)
    raise ValueError("LabelCompatibility of dimension >2 not meaningful.")


_C_INT_MAX = 2**31 - 1


def _c_int(value: Any) -> int:
    """``value`` converted as Cython converts an argument declared ``int``: truncated to an
    integer, ``OverflowError`` beyond a C int."""
    v = int(value)
    if not -_C_INT_MAX - 1 <= v <= _C_INT_MAX:
        raise OverflowError("value too large to convert to int")
    return v


def _kernel(kernel: Any) -> int:
    return int(KernelType(operator.index(kernel)))


def _normalization(normalization: Any) -> int:
    return int(NormalizationType(operator.index(normalization)))


class DenseCRF:
    """A fully connected CRF over ``nvar`` variables taking ``nlabels`` labels.

    Set the unary energy with :meth:`setUnaryEnergy`, add pairwise terms with
    :meth:`addPairwiseEnergy`, then run :meth:`inference`.
    """

    def __init__(self, nvar: int, nlabels: int, *_: Any, **__: Any) -> None:
        # pydensecrf converts to C ints (truncating floats).
        self._nvar = _c_int(nvar)
        self._nlabel = _c_int(nlabels)
        self._crf = _native.Crf(self._nvar, self._nlabel)

    def addPairwiseEnergy(
        self,
        features: np.ndarray,
        compat: Compat,
        kernel: int = DIAG_KERNEL,
        normalization: int = NORMALIZE_SYMMETRIC,
    ) -> None:
        """Adds a Gaussian pairwise term over ``features``, a float32 C-contiguous array of
        shape (feature dimensions, nvar), already divided by the kernel's standard deviations
        (see ``utils.create_pairwise_gaussian`` and ``utils.create_pairwise_bilateral``).
        ``compat`` is a number (Potts weight), a float32 vector of one weight per label or a
        float32 (nlabels, nlabels) matrix."""
        features = _buffer(features, "features", np.float32, 2)
        if features.shape[1] != self._nvar:
            raise ValueError(
                "Bad shape for pairwise energy (Need (?, {}), got {})".format(
                    self._nvar, (features.shape[0], features.shape[1])
                )
            )
        self._crf.add_pairwise(
            features, _compat(compat), _kernel(kernel), _normalization(normalization)
        )

    def setUnaryEnergy(self, u: np.ndarray, f: Any = None) -> None:
        """Sets the unary energy (negative log-probabilities), a float32 C-contiguous array of
        shape (nlabels, nvar). Replaces any earlier one. (pydensecrf's logistic unary, the
        second argument ``f``, is not supported.)"""
        u = _buffer(u, "u", np.float32, 2)
        if f is not None:
            raise NotImplementedError(
                "clip_es.pydensecrf does not support the logistic unary energy (setUnaryEnergy "
                "with features)"
            )
        if u.shape[0] != self._nlabel or u.shape[1] != self._nvar:
            raise ValueError(
                "Bad shape for unary energy (Need {}, got {})".format(
                    (self._nlabel, self._nvar), (u.shape[0], u.shape[1])
                )
            )
        self._crf.set_unary(u)

    def inference(self, niter: int) -> np.ndarray:
        """Runs ``niter`` mean-field iterations and returns the marginals, a float32 array of
        shape (nlabels, nvar). (pydensecrf returns a buffer object of the same shape and
        values; ``np.array`` of either gives the same array.)"""
        return self._crf.inference(_c_int(niter))

    def startInference(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Starts a step-by-step inference: returns ``(Q, tmp1, tmp2)``, ``Q`` the starting
        marginals (the softmax of the negated unary energy; zeros without a unary energy), a
        float32 array of shape (nlabels, nvar), and two scratch arrays for
        :meth:`stepInference`."""
        empty = np.zeros((0, 0), np.float32)
        return self._crf.start_inference(), empty, empty.copy()

    def stepInference(self, Q: np.ndarray, tmp1: Any, tmp2: Any) -> None:
        """One mean-field iteration: updates ``Q`` (a float32 C-contiguous writable array of
        shape (nlabels, nvar), as :meth:`startInference` returns) in place. ``tmp1`` and
        ``tmp2`` are accepted for pydensecrf's signature and not used."""
        Q = self._marginals(Q, "Q")
        if not Q.flags["WRITEABLE"]:
            raise ValueError("Q: buffer source array is read-only")
        self._crf.step_inference(Q)

    def klDivergence(self, Q: np.ndarray) -> float:
        """The KL divergence between the marginals ``Q`` (float32, shape (nlabels, nvar)) and
        the CRF's distribution, up to a constant (densecrf's ``klDivergence``); it decreases
        along :meth:`stepInference`."""
        return self._crf.kl_divergence(self._marginals(Q, "Q"))

    def _marginals(self, Q: Any, name: str) -> np.ndarray:
        Q = _buffer(Q, name, np.float32, 2)
        if Q.shape[0] != self._nlabel or Q.shape[1] != self._nvar:
            raise ValueError(
                "Bad shape for {} (Need {}, got {})".format(
                    name, (self._nlabel, self._nvar), (Q.shape[0], Q.shape[1])
                )
            )
        return Q


class DenseCRF2D(DenseCRF):
    """A fully connected CRF over the pixels of a ``w`` x ``h`` image, pixel ``(x, y)`` being
    variable ``y * w + x``."""

    def __init__(self, w: int, h: int, nlabels: int, *_: Any, **__: Any) -> None:
        w, h = _c_int(w), _c_int(h)
        if w > 0 and h > 0 and w * h > _C_INT_MAX:
            raise OverflowError(
                f"DenseCRF2D: a {w} x {h} image has {w * h} pixels, more than densecrf counts "
                f"in a C int ({_C_INT_MAX})"
            )
        super().__init__(w * h, nlabels)
        self._w = w
        self._h = h

    def addPairwiseGaussian(
        self,
        sxy: Union[float, Sequence[float]],
        compat: Compat,
        kernel: int = DIAG_KERNEL,
        normalization: int = NORMALIZE_SYMMETRIC,
    ) -> None:
        """Adds the smoothness kernel: a Gaussian over pixel positions of standard deviation
        ``sxy`` (a number, or ``(sx, sy)``)."""
        if isinstance(sxy, Number):
            sxy = (sxy, sxy)  # type: ignore[assignment]
        sx, sy = float(sxy[0]), float(sxy[1])  # type: ignore[index]
        self._crf.add_pairwise_gaussian(
            self._w,
            self._h,
            sx,
            sy,
            _compat(compat),
            _kernel(kernel),
            _normalization(normalization),
        )

    def addPairwiseBilateral(
        self,
        sxy: Union[float, Sequence[float]],
        srgb: Union[float, Sequence[float]],
        rgbim: np.ndarray,
        compat: Compat,
        kernel: int = DIAG_KERNEL,
        normalization: int = NORMALIZE_SYMMETRIC,
    ) -> None:
        """Adds the appearance kernel: a Gaussian over pixel positions (deviation ``sxy``) and
        colours (deviation ``srgb``, a number or three), ``rgbim`` being a uint8 C-contiguous
        array of shape (h, w, 3)."""
        if isinstance(sxy, Number):
            sxy = (sxy, sxy)  # type: ignore[assignment]
        if isinstance(srgb, Number):
            srgb = (srgb, srgb, srgb)  # type: ignore[assignment]
        rgbim = _buffer(rgbim, "rgbim", np.uint8, 3)
        if rgbim.shape[0] != self._h or rgbim.shape[1] != self._w:
            raise ValueError(
                "Bad shape for pairwise bilateral (Need {}, got {})".format(
                    (self._h, self._w, 3), rgbim.shape
                )
            )
        if rgbim.shape[2] != 3:
            raise ValueError(
                "addPairwiseBilateral only works for RGB images. For other types, use "
                "`utils.create_pairwise_bilateral` to construct your own pairwise energy and add "
                "it through `addPairwiseEnergy`."
            )
        schan: Tuple[float, float, float] = (
            float(srgb[0]),  # type: ignore[index]
            float(srgb[1]),  # type: ignore[index]
            float(srgb[2]),  # type: ignore[index]
        )
        self._crf.add_pairwise_bilateral(
            self._w,
            self._h,
            float(sxy[0]),  # type: ignore[index]
            float(sxy[1]),  # type: ignore[index]
            schan,
            rgbim,
            _compat(compat),
            _kernel(kernel),
            _normalization(normalization),
        )
