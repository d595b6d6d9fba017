"""The training set: an ImageFolder-style file index (built in parallel, cached); the built-ins are in jitrs.builtin.

Layout: DATA/train/<class>/**/<image> when DATA/train exists, else DATA/<class>/**/<image>. Classes are the
sub-directory names sorted like torchvision's ImageFolder, so label ids match the ImageNet convention (class i is
the i-th synset in sorted order). Files are recognised by extension only (case-insensitive); decoding problems
surface later, in the loader.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jitrs.atomic import atomic_write_text
from jitrs.errors import UserError

# What jitrs.load_batch decodes; everything else in a class folder is ignored.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".png"})
INDEX_VERSION = 1


@dataclass(frozen=True)
class ImageIndex:
    """Every image of a dataset: `paths[i]` (absolute, str) has label `labels[i]` (int64) = its class's position
    in `classes` (sorted folder names)."""

    root: Path
    classes: list[str]
    paths: list[str]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.paths)


def image_root(data_dir: Path) -> Path:
    """DATA/train when it exists, else DATA itself; UserError when DATA is missing or not a directory."""
    if not data_dir.exists():
        raise UserError("no such directory", param="data", value=data_dir)
    if not data_dir.is_dir():
        raise UserError("not a directory", param="data", value=data_dir)
    train = data_dir / "train"
    return train if train.is_dir() else data_dir


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


def build_index(data_dir: str | Path, cache: Path | None = None, threads: int | None = None) -> ImageIndex:
    """Index DATA (see the module docstring), walking the class folders in a thread pool.

    With `cache` (a JSON file, normally RUN/index.json) the index is reused while the root and every directory
    walked keep their modification times (adding, removing or renaming a file changes its directory's mtime),
    and rewritten otherwise. Raises UserError when DATA is missing, has no class folders or no images.
    """
    root = image_root(Path(data_dir)).resolve()
    if cache is not None and cache.is_file():
        index = _read_cache(cache, root)
        if index is not None:
            return index
    classes = _class_dirs(root)
    if not classes:
        raise UserError(
            f"no class sub-directories in {root} (expected {root}/<class>/<images>)", param="data", value=data_dir
        )
    with ThreadPoolExecutor(max_workers=threads or min(32, (os.cpu_count() or 1) + 4)) as pool:
        scans = list(pool.map(_scan_class, [os.path.join(root, c) for c in classes]))
    paths = [p for files, _ in scans for p in files]
    if not paths:
        raise UserError(
            f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) under {root}", param="data", value=data_dir
        )
    labels = np.concatenate([np.full(len(files), i, dtype=np.int64) for i, (files, _) in enumerate(scans)])
    index = ImageIndex(root, classes, paths, labels)
    if cache is not None:
        dirs = {str(root): os.stat(root).st_mtime_ns}
        for _, d in scans:
            dirs.update(d)
        _write_cache(cache, index, [len(f) for f, _ in scans], dirs)
    return index


def _write_cache(cache: Path, index: ImageIndex, counts: list[int], dirs: dict[str, int]) -> None:
    prefix = str(index.root) + os.sep
    payload = {
        "version": INDEX_VERSION,
        "root": str(index.root),
        "classes": index.classes,
        "counts": counts,
        "files": [p.removeprefix(prefix) for p in index.paths],
        "dirs": dirs,
    }
    cache.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cache, json.dumps(payload))  # one C-encoded string: json.dump goes through the slow encoder


def _read_cache(cache: Path, root: Path) -> ImageIndex | None:
    """The cached index, or None when it is unreadable, for another root, or stale."""
    try:
        with open(cache) as f:
            payload = json.load(f)
        if payload.get("version") != INDEX_VERSION or payload["root"] != str(root):
            return None
        if not _dirs_unchanged(payload["dirs"]):
            return None
        labels = np.repeat(np.arange(len(payload["counts"]), dtype=np.int64), payload["counts"])
        paths = [os.path.join(root, p) for p in payload["files"]]
        if len(paths) != len(labels):
            return None
        return ImageIndex(root, list(payload["classes"]), paths, labels)
    except (OSError, ValueError, KeyError, TypeError):
        return None
