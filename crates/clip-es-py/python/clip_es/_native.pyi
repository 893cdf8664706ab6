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
    @property
    def device(self) -> str: ...
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

def load_model(name_or_path: Union[str, "os.PathLike[str]"], device: str = "cpu") -> Model: ...
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
    batch: Optional[int] = None,
    iter_size: Optional[int] = None,
    loss: Optional[str] = None,
    num_classes: Optional[int] = None,
    init: Union[None, str, "os.PathLike[str]"] = None,
    resume: Union[None, bool, str, "os.PathLike[str]"] = None,
    model: Optional[str] = None,
    seed: Optional[int] = None,
    save_every: Optional[int] = None,
    hidden: Optional[int] = None,
    upsamplings: Optional[int] = None,
    grid_crop: Optional[int] = None,
    width: Optional[int] = None,
    blocks: Optional[Sequence[int]] = None,
    crop: Optional[int] = None,
    threads: Optional[int] = None,
    overwrite: bool = False,
    random_init: bool = False,
    device: Optional[str] = None,
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
    device: Optional[str] = None,
) -> Dict[str, Any]: ...

def segment(
    inputs: Union[str, "os.PathLike[str]", Sequence[Union[str, "os.PathLike[str]"]]],
    out: Union[None, str, "os.PathLike[str]"] = None,
    classes: Optional[str] = None,
    dataset: Optional[str] = None,
    background: Optional[str] = None,
    vocabulary: Union[None, str, "os.PathLike[str]"] = None,
    tags_only: bool = False,
    tag_threshold: Optional[float] = None,
    max_tags: Optional[int] = None,
    no_crf: bool = False,
    memory_limit: Optional[int] = None,
    max_side: Optional[int] = None,
    confidence: Optional[float] = None,
    scales: Optional[Sequence[float]] = None,
    flip: bool = False,
    templates: Optional[Sequence[str]] = None,
    model: Optional[str] = None,
    threads: Optional[int] = None,
    device: Optional[str] = None,
) -> Dict[str, Any]: ...

def prompts(
    images: Union[str, "os.PathLike[str]"],
    templates: Union[str, "os.PathLike[str]", Sequence[str]],
    split: Union[None, str, "os.PathLike[str]"] = None,
    labels: Union[None, str, "os.PathLike[str]"] = None,
    annotations: Union[None, str, "os.PathLike[str]"] = None,
    dataset: Optional[str] = None,
    model: Optional[str] = None,
    json: Union[None, str, "os.PathLike[str]"] = None,
    exact_pos_embed: bool = False,
    threads: Optional[int] = None,
) -> Dict[str, Any]: ...

def run(
    images: Union[str, "os.PathLike[str]"],
    out: Union[str, "os.PathLike[str]"],
    split: Union[None, str, "os.PathLike[str]"] = None,
    labels: Union[None, str, "os.PathLike[str]"] = None,
    annotations: Union[None, str, "os.PathLike[str]"] = None,
    dataset: Optional[str] = None,
    background: Optional[str] = None,
    model: Optional[str] = None,
    box_threshold: Optional[float] = None,
    templates: Optional[Sequence[str]] = None,
    save_unrefined: bool = False,
    exact_pos_embed: bool = False,
    scales: Optional[Sequence[float]] = None,
    flip: bool = False,
    max_side: Optional[int] = None,
    memory_limit: Optional[int] = None,
    apply_exif_orientation: bool = False,
    confidence: Optional[float] = None,
    crf_image: Optional[str] = None,
    no_crf: bool = False,
    palette: bool = False,
    save_confidence: Union[None, str, "os.PathLike[str]"] = None,
    cam_key: Optional[str] = None,
    gt: Union[None, str, "os.PathLike[str]"] = None,
    bg_power: Optional[Sequence[float]] = None,
    unlabelled: Optional[str] = None,
    overwrite: bool = False,
    report: Union[None, str, "os.PathLike[str]"] = None,
    threads: Optional[int] = None,
    overlays: bool = False,
    train: Optional[str] = None,
    train_iters: Optional[int] = None,
    train_lr: Optional[float] = None,
    train_batch: Optional[int] = None,
    train_init: Union[None, str, "os.PathLike[str]"] = None,
    train_save_every: Optional[int] = None,
    predict_split: Union[None, str, "os.PathLike[str]"] = None,
    predict_crf: bool = False,
    device: Optional[str] = None,
) -> Dict[str, Any]: ...
