"""Type stubs for `jitrs._native`, the compiled Rust core (one section per feature)."""

import os
from collections.abc import Sequence
from os import PathLike
from typing import Final, Literal, overload

import numpy as np
import numpy.typing as npt
from numpy.typing import NDArray

BUILD_PROFILE: str
""""release" or "debug": benchmarks refuse to report numbers from a debug build."""

# --- ADM center crop (rust/src/python/crop.rs) ---

def center_crop(img: NDArray[np.uint8], size: int, *, flip: bool = False) -> NDArray[np.uint8]:
    """ADM center crop (ADM, DiT, EDM2, official JiT) of one RGB image, bit-exact with Pillow >= 13.

    Pillow 13 resizes images more than about twice as tall as wide vertically first; older Pillow always
    went horizontally first, so for such images older Pillow's crops differ (about 10% of values, by a few
    levels).

    Halves the image with Pillow's BOX filter while its short side is at least 2*size, resizes it with
    BICUBIC so the short side is size, and keeps the central size×size square, mirrored left-right when
    flip. img: (H, W, 3) uint8, any strides. Returns a new C-contiguous (size, size, 3) uint8 array.
    Raises TypeError for a non-array or a dtype other than uint8, ValueError for a bad shape or a size
    outside 1..8192.
    """

# --- patchify / unpatchify (rust/src/python/tokens.rs) and PNG writing (rust/src/python/png.rs) ---

def patchify(
    arr: npt.NDArray[np.generic], p: int, channels_last: bool = True, out: npt.NDArray[np.generic] | None = None
) -> npt.NDArray[np.generic]:
    """JiT patch tokens of images: (H, W, C) -> (N, p*p*C), (B, H, W, C) -> (B, N, p*p*C), N = (H/p)*(W/p);
    (C, H, W) / (B, C, H, W) with channels_last=False. Patches in row-major order, each token ordered (row in
    patch, column in patch, channel). uint8/float16/float32/float64, any strides. out: a C-contiguous array of
    the result's shape and dtype, not sharing memory with arr, filled and returned instead of a new one.
    """

def unpatchify(
    tokens: npt.NDArray[np.generic],
    p: int,
    height: int,
    width: int,
    channels_last: bool = True,
    out: npt.NDArray[np.generic] | None = None,
) -> npt.NDArray[np.generic]:
    """The exact inverse of patchify: (N, p*p*C) / (B, N, p*p*C) -> (height, width, C) / (B, height, width, C),
    or channel-first with channels_last=False. out: as for patchify."""

def write_pngs(
    images: npt.NDArray[np.uint8], paths: Sequence[str | PathLike[str]], threads: int | None = None
) -> None: ...
def write_png(path: str | PathLike[str], image: npt.NDArray[np.uint8]) -> None: ...

# --- image decoding and batch loading (rust/src/python/image.rs) ---

DEFAULT_MAX_PIXELS: Final[int]
"""Pillow's decompression-bomb error threshold, 2 * 89,478,485 pixels."""

class DecodeError(ValueError):
    """An image could not be decoded: corrupt, truncated, not a JPEG/PNG, or larger than max_pixels."""

def decode(source: str | os.PathLike[str] | bytes, max_pixels: int = ...) -> npt.NDArray[np.uint8]:
    """Decode a JPEG or PNG file (or its bytes) into RGB, pixel-identical to Pillow's
    `Image.open(source).convert('RGB')`.

    The format is told by content, not by file name. Grayscale, CMYK/YCCK JPEGs and PNGs of every mode
    are converted to RGB as Pillow converts them (alpha dropped, not composited); 16-bit PNG samples
    keep their high byte (for 16-bit gray Pillow clamps at 255 instead). EXIF orientation is not applied,
    as Pillow's open/convert does not apply it. A truncated file is an error, as in Pillow by default.

    Args:
        source: a path (str or os.PathLike) or the encoded bytes.
        max_pixels: refuse, before allocating, an image whose header declares more pixels than this.

    Returns:
        (H, W, 3) uint8 array, C-contiguous.

    Raises:
        FileNotFoundError: the file does not exist (other read failures raise OSError).
        DecodeError: empty, truncated, corrupt, not a JPEG/PNG, or over max_pixels; the message names
            the file and the reason.
    """

@overload
def load_batch(
    paths: Sequence[str | os.PathLike[str]],
    size: int,
    flip: Sequence[bool] | None = ...,
    threads: int | None = ...,
    out: npt.NDArray[np.uint8] | None = ...,
    on_error: Literal["raise"] = ...,
    max_pixels: int = ...,
) -> npt.NDArray[np.uint8]:
    """Load image files as a training batch: decode, ADM center crop to `size`, optional flip.

    Images are processed in parallel on a cached pool of `threads` workers (default: all cores), with
    the GIL released. Each image equals `decode(path)` center-cropped the ADM way (as the official JiT
    data pipeline does with Pillow), mirrored left-right where `flip[i]`.

    Args:
        paths: B image files (JPEG or PNG, told by content).
        size: output side in pixels.
        flip: B bools; True mirrors that image left-right. None: no flips.
        threads: worker threads, 1 to 1024; None uses every core.
        out: optional C-contiguous writable (B, size, size, 3) uint8 array (pinned host memory, say),
            filled in place and returned.
        on_error: "raise" raises for the first bad file by index (out's contents are then unspecified);
            "skip" zeroes bad images' slots and returns `(batch, [(index, reason), ...])`.
        max_pixels: per-image decompression-bomb guard, as in `decode`.

    Returns:
        (B, size, size, 3) uint8 array, or with on_error="skip" the tuple `(batch, failures)`.

    Raises:
        FileNotFoundError, OSError, DecodeError: a bad file, with on_error="raise".
        TypeError: out is not a uint8 numpy array, or paths/flip hold the wrong types.
        ValueError: a wrong out shape or layout, a flip length other than B, a bad option value.
    """

@overload
def load_batch(
    paths: Sequence[str | os.PathLike[str]],
    size: int,
    flip: Sequence[bool] | None = ...,
    threads: int | None = ...,
    out: npt.NDArray[np.uint8] | None = ...,
    *,
    on_error: Literal["skip"],
    max_pixels: int = ...,
) -> tuple[npt.NDArray[np.uint8], list[tuple[int, str]]]: ...
