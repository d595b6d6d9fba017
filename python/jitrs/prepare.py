"""`jitrs prepare`: write any training source (an ImageFolder, parquet shards, tar shards) as tar shards that
`jitrs train --data` reads in place (the layout of jitrs.shards).

OUT/shard-000000.tar, shard-000001.tar, ... hold `shard_size` images each, in index order (class order for an
ImageFolder; the loader shuffles globally), as members `KEY.jpg|.png` (the encoded bytes copied unchanged, the
extension told by content) and `KEY.cls` (the integer class id); KEY is the image's position in the source
index. OUT/classes.txt names the classes, one a line; OUT/prepare.json records what was converted.

Each shard is written under a temporary name and renamed when complete (jitrs.atomic), so a killed run leaves
whole shards only; rerunning the same command writes just the missing shards, and a different source or shard
size in a folder that holds a conversion already is refused. Images are not decoded: one that the loader cannot
read is reported when training on the shards; members the source's index left out are not written.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jitrs.atomic import atomic_path, atomic_write_text, writable_dir
from jitrs.dataset import IMAGE_EXTENSIONS, Source, build_index
from jitrs.errors import UserError
from jitrs.shards import CLASSES_FILE, ID_FIELD

FORMATS = ("tar",)
MANIFEST = "prepare.json"
SHARD_NAME = "shard-{:06d}.tar"
_READ_CHUNK = 256  # images whose bytes are held in memory at once per writer thread


@dataclass(frozen=True)
class Prepared:
    images: int
    shards: int
    written: int  # shards written by this run (the others were there from an earlier, interrupted one)
    skipped: list[tuple[str, str]]


def read_source(source: Source) -> bytes:
    """The encoded bytes of one index source (a file, a byte range of a file, or bytes)."""
    if isinstance(source, bytes):
        return source
    if isinstance(source, str):
        with open(source, "rb") as f:
            return f.read()
    path, offset, length = source
    with open(path, "rb") as f:
        return os.pread(f.fileno(), length, offset)


def image_extension(data: bytes, name: str) -> str:
    """ ".jpg" or ".png" told by content; for bytes that are neither, the name's image extension (else .jpg)."""
    if data[:3] == b"\xff\xd8\xff":
        return ".jpg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return ".png"
    suffix = os.path.splitext(name)[1].lower()
    return suffix if suffix in IMAGE_EXTENSIONS else ".jpg"


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0  # mtime 0: the same input gives the same shard bytes
    tar.addfile(info, io.BytesIO(data))


def _check_out(out: Path, manifest: dict[str, object]) -> None:
    """Refuse an --out that holds anything but an unfinished conversion of the same source with the same shard size."""
    existing = out / MANIFEST
    if existing.is_file():
        try:
            before = json.loads(existing.read_text())
        except ValueError:
            before = None
        if before != manifest:
            raise UserError(
                f"holds a conversion of another source or shard size ({existing}); "
                "give a new folder or delete it to start over",
                param="out",
                value=out,
            )
        return
    with os.scandir(out) as entries:
        busy = any(not e.name.startswith(".") for e in entries)
    if busy:
        raise UserError(f"is not empty and holds no {MANIFEST}: give an empty or new folder", param="out", value=out)


def prepare(
    data: str | Path,
    out: Path,
    fmt: str = "tar",
    shard_size: int = 1000,
    threads: int | None = None,
    on_start: Callable[[int, int], None] | None = None,
    on_image: Callable[[int], None] | None = None,
) -> Prepared:
    """Convert DATA into tar shards in OUT (see the module docstring). `on_start(images, already_done)` and
    `on_image(n)` report progress (called from writer threads). UserError on a bad source, format or OUT."""
    if fmt not in FORMATS:
        raise UserError(f"must be one of {', '.join(FORMATS)}, got {fmt!r}", param="format")
    if shard_size < 1:
        raise UserError(f"must be a positive number of images per shard, got {shard_size}", param="shard_size")
    index = build_index(data, threads=threads)
    writable_dir(out)
    if out.resolve() == index.root:
        raise UserError("is the source folder: give another one", param="out", value=out)
    n = len(index)
    count = -(-n // shard_size)
    manifest = {"format": fmt, "source": str(index.root), "kind": index.kind, "images": n, "shard_size": shard_size}
    manifest |= {"shards": count, "classes": index.classes}
    _check_out(out, manifest)
    for leftover in out.glob(".shard-*.tar.*.tmp"):  # an interrupted run's unfinished shard: never renamed in
        leftover.unlink()
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1))
    atomic_write_text(out / CLASSES_FILE, "".join(f"{c}\n" for c in index.classes))
    todo = [k for k in range(count) if not (out / SHARD_NAME.format(k)).is_file()]
    if on_start is not None:
        on_start(n, n - sum(min(shard_size, n - k * shard_size) for k in todo))
    width = max(6, len(str(n - 1)))
    stop = threading.Event()

    def write(k: int) -> None:
        ids = np.arange(k * shard_size, min((k + 1) * shard_size, n))
        with atomic_path(out / SHARD_NAME.format(k)) as tmp, tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for start in range(0, len(ids), _READ_CHUNK):
                chunk = ids[start : start + _READ_CHUNK]
                for i, source, name in zip(chunk.tolist(), index.sources(chunk), index.names(chunk), strict=True):
                    if stop.is_set():
                        raise KeyboardInterrupt
                    data = read_source(source)
                    key = f"{i:0{width}d}"
                    _add(tar, key + image_extension(data, name), data)
                    _add(tar, key + ID_FIELD, str(int(index.labels[i])).encode())
                if on_image is not None:
                    on_image(len(chunk))

    with ThreadPoolExecutor(max_workers=max(1, min(threads or 4, len(todo) or 1))) as pool:
        futures = [pool.submit(write, k) for k in todo]
        try:
            for f in futures:
                f.result()
        except BaseException:
            stop.set()  # the other writers drop their unfinished shards (atomic_path removes the temporary file)
            for f in futures:
                f.cancel()
            raise
    return Prepared(n, count, len(todo), list(index.skipped))
