"""The training set: one index of labelled images whatever holds them, built once (in parallel) and cached.

DATA/train is used when it exists, else DATA; what it holds decides the source kind:
- `*.tar` files and no sub-directories: WebDataset-style tar shards, read in place by byte ranges
  (jitrs.shards);
- `*.parquet` files (or data/*.parquet, the Hugging Face layout): parquet shards (jitrs.parquet_source);
- otherwise an ImageFolder, DATA/<class>/**/<image>. Classes are the sub-directory names sorted like
  torchvision's ImageFolder, so label ids match the ImageNet convention (class i is the i-th synset in sorted
  order). Files are recognised by extension only (case-insensitive); decoding problems surface later, in the
  loader.

Every kind gives the same ImageIndex: labels, class names, and per image a source for jitrs.load_batch (a path,
a byte range of a shard, or bytes) and a name for logs, in a fixed order, so the loader's (seed, epoch) order,
rank sharding, resume and bad-image handling are one code path.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from jitrs.atomic import atomic_write_text
from jitrs.errors import UserError

# What jitrs.load_batch decodes; everything else in a class folder is ignored.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".png"})
INDEX_VERSION = 2

# What jitrs.load_batch reads one image from: a file, a (file, offset, length) byte range, or the bytes.
Source = str | bytes | tuple[str, int, int]
# Positions in an index: a list, or an integer array (stores index their arrays with it).
Ids = Sequence[int] | np.ndarray


class Store(Protocol):
    """Where the images of an index live; `ids` are positions in the index."""

    def sources(self, ids: Ids) -> list[Source]: ...

    def names(self, ids: Ids) -> list[str]: ...


@dataclass(frozen=True)
class Files:
    """ImageFolder images: whole files, named by their paths."""

    paths: list[str]

    def sources(self, ids: Ids) -> list[Source]:
        return [self.paths[i] for i in ids]

    def names(self, ids: Ids) -> list[str]:
        return [self.paths[i] for i in ids]


@dataclass(frozen=True)
class ImageIndex:
    """Every usable image of a dataset: image i is read from `sources([i])`, has label `labels[i]` (int64) = its
    class's position in `classes`, and is called `names([i])` in logs. `skipped` lists (name, reason) of what the
    index left out (a shard member without a label, a truncated shard), for the loader to log and count."""

    root: Path
    classes: list[str]
    labels: np.ndarray
    store: Store
    kind: str = "folder"
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def sources(self, ids: Ids) -> list[Source]:
        return self.store.sources(ids)

    def names(self, ids: Ids) -> list[str]:
        return self.store.names(ids)


def image_root(data_dir: Path) -> Path:
    """DATA/train when it exists, else DATA itself; UserError when DATA is missing or not a directory."""
    if not data_dir.exists():
        raise UserError("no such directory", param="data", value=data_dir)
    if not data_dir.is_dir():
        raise UserError("not a directory", param="data", value=data_dir)
    train = data_dir / "train"
    return train if train.is_dir() else data_dir


def source_kind(root: Path) -> str:
    """ "tar", "parquet" or "folder": what the image root holds (see the module docstring)."""
    from jitrs import parquet_source, shards  # they build on this module

    with os.scandir(root) as entries:
        # Class folders make an ImageFolder, whatever archives lie beside them (the ImageNet download's tars, say).
        folders = any(e.is_dir() and not e.name.startswith(".") for e in entries)
    if not folders and shards.shard_files(root):
        return "tar"
    if parquet_source.parquet_files(root):
        return "parquet"
    return "folder"


def build_index(data_dir: str | Path, cache: Path | None = None, threads: int | None = None) -> ImageIndex:
    """Index DATA (see the module docstring), scanning class folders or shards in parallel.

    With `cache` (a JSON file, normally RUN/index.json) the index is reused while what it was built from is
    unchanged (for a folder: every directory's mtime; for shards: each shard's size and mtime, and only changed
    shards are scanned again), and rewritten otherwise. Raises UserError when DATA is missing or holds no images.
    """
    from jitrs import parquet_source, shards

    root = image_root(Path(data_dir)).resolve()
    kind = source_kind(root)
    previous = _read_cache(cache, root, kind) if cache is not None else None
    build = {"folder": _build_folder, "tar": shards.build, "parquet": parquet_source.build}[kind]
    index, payload = build(root, data_dir, threads, previous)
    if cache is not None and payload is not previous:
        cache.parent.mkdir(parents=True, exist_ok=True)
        # one C-encoded string: json.dump goes through the slow encoder
        atomic_write_text(cache, json.dumps({"version": INDEX_VERSION, "kind": kind, "root": str(root), **payload}))
    return index


def _read_cache(cache: Path, root: Path, kind: str) -> dict[str, Any] | None:
    """The cached payload of this root and kind, or None when there is none or it is unreadable (freshness is for
    the builder to judge)."""
    try:
        with open(cache) as f:
            payload = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(payload, dict):
        return None
    if payload.get("version") != INDEX_VERSION or payload.get("kind") != kind or payload.get("root") != str(root):
        return None
    return payload


def default_threads(threads: int | None) -> int:
    return threads or min(32, (os.cpu_count() or 1) + 4)


# ---------------------------------------------------------------------------------------------- ImageFolder
def _class_dirs(root: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(root) if e.is_dir(follow_symlinks=True) and not e.name.startswith("."))


def _scan_class(class_dir: str) -> tuple[list[str], dict[str, int]]:
    """(sorted image paths under class_dir, recursively; {directory: mtime_ns} of every directory walked)."""
    files: list[str] = []
    dirs: dict[str, int] = {}
    stack = [class_dir]
    while stack:
        d = stack.pop()
        dirs[d] = os.stat(d).st_mtime_ns
        with os.scandir(d) as it:
            for e in it:
                if e.is_dir(follow_symlinks=True):
                    stack.append(e.path)
                elif "." + e.name.rpartition(".")[2].lower() in IMAGE_EXTENSIONS:
                    files.append(e.path)
    files.sort()
    return files, dirs


def _dirs_unchanged(dirs: dict[str, int]) -> bool:
    try:
        return all(os.stat(d).st_mtime_ns == m for d, m in dirs.items())
    except OSError:
        return False


def _build_folder(
    root: Path, data_dir: str | Path, threads: int | None, previous: dict[str, Any] | None
) -> tuple[ImageIndex, dict[str, Any]]:
    """The ImageFolder index: from `previous` (the cached payload) while every directory keeps its mtime (adding,
    removing or renaming a file changes its directory's mtime), else walked again in a thread pool."""
    if previous is not None:
        index = _folder_from_payload(root, previous)
        if index is not None:
            return index, previous
    classes = _class_dirs(root)
    if not classes:
        raise UserError(
            f"no class sub-directories in {root} (expected {root}/<class>/<images>, or *.tar or *.parquet shards)",
            param="data",
            value=data_dir,
        )
    with ThreadPoolExecutor(max_workers=default_threads(threads)) as pool:
        scans = list(pool.map(_scan_class, [os.path.join(root, c) for c in classes]))
    paths = [p for files, _ in scans for p in files]
    if not paths:
        raise UserError(
            f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) under {root}", param="data", value=data_dir
        )
    labels = np.concatenate([np.full(len(files), i, dtype=np.int64) for i, (files, _) in enumerate(scans)])
    dirs = {str(root): os.stat(root).st_mtime_ns}
    for _, d in scans:
        dirs.update(d)
    prefix = str(root) + os.sep
    payload = {
        "classes": classes,
        "counts": [len(f) for f, _ in scans],
        "files": [p.removeprefix(prefix) for p in paths],
        "dirs": dirs,
    }
    return ImageIndex(root, classes, labels, Files(paths)), payload


def _folder_from_payload(root: Path, payload: dict[str, Any]) -> ImageIndex | None:
    """The cached ImageFolder index, or None when it is malformed or stale."""
    try:
        if not _dirs_unchanged(payload["dirs"]):
            return None
        labels = np.repeat(np.arange(len(payload["counts"]), dtype=np.int64), payload["counts"])
        paths = [os.path.join(root, p) for p in payload["files"]]
        if len(paths) != len(labels):
            return None
        return ImageIndex(root, list(payload["classes"]), labels, Files(paths))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
