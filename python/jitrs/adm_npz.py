"""The ADM evaluation format: one .npz with arr_0 uint8 (N, H, W, 3) (and arr_1 labels), read and written
in a streaming way, since 50,000 images at 256 px are 9.8 GB."""

from __future__ import annotations

import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

import numpy as np

from jitrs.atomic import atomic_path
from jitrs.errors import UserError


def _read_header(f: IO[bytes], path: Path) -> tuple[int, ...]:
    major, _ = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(f)
    if dtype != np.uint8 or len(shape) != 4 or shape[3] != 3 or fortran:
        raise UserError(f"{path}: arr_0 must be uint8 (N, H, W, 3), got {dtype} {shape}")
    return shape


def keys(path: Path) -> list[str]:
    """The array names of an .npz; UserError when it is not a readable zip."""
    try:
        with zipfile.ZipFile(path) as zf:
            return [name.removesuffix(".npy") for name in zf.namelist()]
    except (OSError, zipfile.BadZipFile):
        raise UserError(f"{path}: not a readable .npz file") from None


def image_shape(path: Path) -> tuple[int, ...]:
    """(N, H, W, 3) of arr_0, reading only its header."""
    with zipfile.ZipFile(path) as zf, zf.open("arr_0.npy") as f:
        return _read_header(f, path)


def read_images(path: Path, batch: int, limit: int | None = None) -> Iterator[np.ndarray]:
    """arr_0 in (B, H, W, 3) uint8 batches (writable arrays), never all N images at once; the first `limit`."""
    with zipfile.ZipFile(path) as zf, zf.open("arr_0.npy") as f:
        shape = _read_header(f, path)
        total = shape[0] if limit is None else min(limit, shape[0])
        per = int(np.prod(shape[1:]))
        for start in range(0, total, batch):
            count = min(batch, total - start)
            yield np.frombuffer(bytearray(f.read(per * count)), dtype=np.uint8).reshape(count, *shape[1:])


def write(path: Path, shape: tuple[int, int, int, int], images: Iterable[np.ndarray], labels: np.ndarray) -> None:
    """Write arr_0 of `shape` from consecutive (B, H, W, 3) uint8 chunks, plus arr_1 labels; atomically, so a reader
    never sees a partial file."""
    header = {"descr": "|u1", "fortran_order": False, "shape": shape}
    written = 0
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            with zf.open("arr_0.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array_header_2_0(f, header)
                for chunk in images:
                    f.write(np.ascontiguousarray(chunk, dtype=np.uint8).tobytes())
                    written += len(chunk)
            with zf.open("arr_1.npy", "w") as f:
                np.lib.format.write_array(f, labels)
        if written != shape[0]:
            raise ValueError(f"{path}: got {written} images for an arr_0 of {shape[0]}")
