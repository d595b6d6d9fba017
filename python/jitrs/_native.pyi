"""Type stubs for `jitrs._native`, the compiled Rust core (one section per feature)."""

from collections.abc import Sequence
from os import PathLike

import numpy as np
import numpy.typing as npt
from numpy.typing import NDArray

BUILD_PROFILE: str
""""release" or "debug": benchmarks refuse to report numbers from a debug build."""

# --- ADM center crop (rust/src/python/crop.rs) ---

def center_crop(img: NDArray[np.uint8], size: int, *, flip: bool = False) -> NDArray[np.uint8]:
    """ADM center crop (ADM, DiT, EDM2, official JiT) of one RGB image, bit-exact with Pillow.

    Halves the image with Pillow's BOX filter while its short side is at least 2*size, resizes it with
    BICUBIC so the short side is size, and keeps the central size×size square, mirrored left-right when
    flip. img: (H, W, 3) uint8, any strides. Returns a new C-contiguous (size, size, 3) uint8 array.
    Raises TypeError for a non-array or a dtype other than uint8, ValueError for a bad shape or size < 1.
    """
# --- patchify / unpatchify (rust/src/python/tokens.rs) and PNG writing (rust/src/python/png.rs) ---

def patchify(arr: npt.NDArray[np.generic], p: int, channels_last: bool = True) -> npt.NDArray[np.generic]: ...
def unpatchify(
    tokens: npt.NDArray[np.generic], p: int, height: int, width: int, channels_last: bool = True
) -> npt.NDArray[np.generic]: ...
def write_pngs(
    images: npt.NDArray[np.uint8], paths: Sequence[str | PathLike[str]], threads: int | None = None
) -> None: ...
def write_png(path: str | PathLike[str], image: npt.NDArray[np.uint8]) -> None: ...
