"""Type stubs for `jitrs._native`, the compiled Rust core: types only. The documentation of each function is
its Rust doc comment (rust/src/python/), which becomes its `__doc__`; `make lint` checks these stubs against
the built module with `mypy.stubtest`."""

import os
from collections.abc import Sequence
from typing import Final, Literal, TypeAlias, overload

import numpy as np
import numpy.typing as npt

__all__ = [
    "BUILD_PROFILE",
    "DEFAULT_MAX_PIXELS",
    "DecodeError",
    "center_crop",
    "decode",
    "load_batch",
    "patchify",
    "unpatchify",
    "write_png",
    "write_pngs",
]

# "release" or "debug": benchmarks refuse to report numbers from a debug build.
BUILD_PROFILE: Final[str]

# --- ADM center crop (rust/src/python/crop.rs) ---

def center_crop(img: npt.NDArray[np.uint8], size: int, *, flip: bool = False) -> npt.NDArray[np.uint8]: ...

# --- patchify / unpatchify (rust/src/python/tokens.rs) ---

def patchify(
    arr: npt.NDArray[np.generic], p: int, channels_last: bool = True, out: npt.NDArray[np.generic] | None = None
) -> npt.NDArray[np.generic]: ...
def unpatchify(
    tokens: npt.NDArray[np.generic],
    p: int,
    height: int,
    width: int,
    channels_last: bool = True,
    out: npt.NDArray[np.generic] | None = None,
) -> npt.NDArray[np.generic]: ...

# --- PNG writing (rust/src/python/png.rs) ---

def write_pngs(
    images: npt.NDArray[np.uint8], paths: Sequence[str | os.PathLike[str]], threads: int | None = None
) -> None: ...
def write_png(path: str | os.PathLike[str], image: npt.NDArray[np.uint8]) -> None: ...

# --- image decoding and batch loading (rust/src/python/image.rs, error.rs) ---

# Pillow's decompression-bomb error threshold, 2 * 89,478,485 pixels.
DEFAULT_MAX_PIXELS: Final[int]

class DecodeError(ValueError): ...

# What decode and load_batch take as one image: a path, the encoded bytes, or (path, offset, length), a byte
# range of a file (a member of an uncompressed tar shard).
_ImageSource: TypeAlias = (
    str | os.PathLike[str] | bytes | bytearray | memoryview | tuple[str | os.PathLike[str], int, int]
)

def decode(source: _ImageSource, max_pixels: int = 178956970, name: str | None = None) -> npt.NDArray[np.uint8]: ...
@overload
def load_batch(
    sources: Sequence[_ImageSource],
    size: int,
    flip: Sequence[bool] | None = None,
    threads: int | None = None,
    out: npt.NDArray[np.uint8] | None = None,
    on_error: Literal["raise"] = "raise",
    max_pixels: int = 178956970,
    *,
    names: Sequence[str] | None = None,
) -> npt.NDArray[np.uint8]: ...
@overload
def load_batch(
    sources: Sequence[_ImageSource],
    size: int,
    flip: Sequence[bool] | None = None,
    threads: int | None = None,
    out: npt.NDArray[np.uint8] | None = None,
    *,
    on_error: Literal["skip"],
    max_pixels: int = 178956970,
    names: Sequence[str] | None = None,
) -> tuple[npt.NDArray[np.uint8], list[tuple[int, str]]]: ...
