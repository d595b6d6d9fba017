# Signatures of the compiled module jitrs._native (docstrings live with the Rust functions).
from collections.abc import Sequence
from os import PathLike

import numpy as np
import numpy.typing as npt

BUILD_PROFILE: str

def patchify(arr: npt.NDArray[np.generic], p: int, channels_last: bool = True) -> npt.NDArray[np.generic]: ...
def unpatchify(
    tokens: npt.NDArray[np.generic], p: int, height: int, width: int, channels_last: bool = True
) -> npt.NDArray[np.generic]: ...
def write_pngs(
    images: npt.NDArray[np.uint8], paths: Sequence[str | PathLike[str]], threads: int | None = None
) -> None: ...
def write_png(path: str | PathLike[str], image: npt.NDArray[np.uint8]) -> None: ...
