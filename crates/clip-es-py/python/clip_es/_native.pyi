"""Type stubs of clip-es's native module (see ``clip_es`` for the public API)."""

from typing import Tuple, Union

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

def set_num_threads(n: int) -> None: ...
def num_threads() -> int: ...
