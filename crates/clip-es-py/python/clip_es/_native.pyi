"""Type stubs of clip-es's native module (see ``clip_es`` for the public API)."""

import os
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

__version__: str

class Crf:
    """A dense CRF over ``n_points`` variables and ``n_labels`` labels."""

    def __init__(self, n_points: int, n_labels: int) -> None: ...
    @property
    def num_points(self) -> int: ...
    @property
    def num_labels(self) -> int: ...
    def set_unary(self, unary: np.ndarray) -> None: ...
    def add_pairwise(
        self,
        features: np.ndarray,
        compat: Union[float, np.ndarray],
        kernel: int,
        normalization_type: int,
    ) -> None: ...
    def add_pairwise_gaussian(
        self,
        width: int,
        height: int,
        sx: float,
        sy: float,
        compat: Union[float, np.ndarray],
        kernel: int,
        normalization_type: int,
    ) -> None: ...
    def add_pairwise_bilateral(
        self,
        width: int,
        height: int,
        sx: float,
        sy: float,
        schan: Tuple[float, float, float],
        image: np.ndarray,
        compat: Union[float, np.ndarray],
        kernel: int,
        normalization_type: int,
    ) -> None: ...
    def inference(self, iterations: int) -> np.ndarray: ...
    def start_inference(self) -> np.ndarray: ...
    def step_inference(self, q: np.ndarray) -> None: ...
    def kl_divergence(self, q: np.ndarray) -> float: ...

def set_num_threads(n: int) -> None: ...
def num_threads() -> int: ...

class Model:
    """A loaded CLIP model (from :func:`load_model`)."""

    @property
    def name(self) -> str: ...
    def cams(
        self,
        image: Union[str, "os.PathLike[str]", np.ndarray],
        labels: Sequence[Union[str, int]],
        dataset: Optional[str] = None,
        classes: Union[None, str, "os.PathLike[str]", Sequence[str]] = None,
        background: Optional[str] = None,
        box_threshold: Optional[float] = None,
        templates: Optional[Sequence[str]] = None,
        save_unrefined: bool = False,
        exact_pos_embed: bool = False,
    ) -> Dict[str, np.ndarray]: ...

def load_model(name_or_path: Union[str, "os.PathLike[str]"]) -> Model: ...
def pseudo_mask(
    cams: Mapping[str, Any],
    image: Union[str, "os.PathLike[str]", np.ndarray],
    confidence: float = 0.95,
    crf: bool = True,
    crf_image: str = "reference",
    cam_key: str = "attn_highres",
    iterations: int = 10,
    gaussian_sxy: float = 1.0,
    gaussian_weight: float = 3.0,
    bilateral_sxy: float = 67.0,
    bilateral_srgb: float = 3.0,
    bilateral_weight: float = 4.0,
) -> Tuple[np.ndarray, np.ndarray]: ...
def evaluate(
    gt: Union[str, "os.PathLike[str]"],
    split: Union[str, "os.PathLike[str]"],
    cams: Union[None, str, "os.PathLike[str]"] = None,
    masks: Union[None, str, "os.PathLike[str]"] = None,
    dataset: Optional[str] = None,
    classes: Union[None, str, "os.PathLike[str]", Sequence[str]] = None,
    bg_powers: Optional[Sequence[float]] = None,
    cam_key: str = "attn_highres",
    unlabelled: str = "miss",
    threads: Optional[int] = None,
) -> Dict[str, Any]: ...

def train(
    arch: str,
    images: Union[str, "os.PathLike[str]"],
    masks: Union[str, "os.PathLike[str]"],
    split: Union[str, "os.PathLike[str]"],
    out: Union[str, "os.PathLike[str]"],
    iters: Optional[int] = None,
    lr: Optional[float] = None,
    batch: int = 5,
    iter_size: int = 2,
    loss: str = "ce",
    num_classes: int = 21,
    init: Union[None, str, "os.PathLike[str]"] = None,
    resume: Union[None, bool, str, "os.PathLike[str]"] = None,
    model: str = "ViT-B/16",
    seed: int = 0,
    save_every: int = 1000,
    hidden: int = 256,
    upsamplings: int = 1,
    grid_crop: int = 20,
    width: int = 64,
    blocks: Optional[Sequence[int]] = None,
    crop: int = 321,
    threads: Optional[int] = None,
) -> Dict[str, Any]: ...

def predict(
    checkpoint: Union[str, "os.PathLike[str]"],
    images: Union[str, "os.PathLike[str]"],
    split: Union[str, "os.PathLike[str]"],
    out: Union[str, "os.PathLike[str]"],
    crf: bool = False,
    scales: Optional[Sequence[float]] = None,
    flip: bool = True,
    model: Optional[str] = None,
    palette: bool = True,
    overlays: Union[None, str, "os.PathLike[str]"] = None,
    overwrite: bool = False,
    threads: Optional[int] = None,
) -> Dict[str, Any]: ...
