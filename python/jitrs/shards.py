"""WebDataset-style tar shards as a training set, read in place: the index holds each image's byte range in its
shard and jitrs.load_batch reads exactly those bytes (positioned reads, no unpacking).

Layout: DATA/*.tar (DATA/train/*.tar when DATA/train exists), no sub-directories beside them, uncompressed, taken
in sorted name order. A sample is the members sharing a key (the member path up to the first dot of its file name,
as in WebDataset):
- the image, `KEY.jpg` / `.jpeg` / `.jpe` / `.png` (told by content when decoded);
- its label, either `KEY.cls` holding the integer class id as text, or `KEY.class` holding the class name
  (one kind of label for the whole dataset).
Other members are ignored. Class names and ids: with integer labels, DATA/classes.txt (optional, one name per
line, line i naming class i; `jitrs prepare` writes it) gives the names and the number of classes, else the
classes are "0".."max id"; with class-name labels, the sorted names are the classes (class i is the i-th name),
as for an ImageFolder. Images are indexed in shard order, then member order.

Left out of the index, and logged and counted by the loader with the shard and member named: an image without
a label or with an unusable one, a second image for a key, members cut off by a truncated shard, a file that is
not a tar. An empty shard is no error. Images that fail to decode are skipped by the loader, as for files.
"""

from __future__ import annotations

import multiprocessing
import os
import posixpath
import tarfile
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jitrs.dataset import IMAGE_EXTENSIONS, Ids, ImageIndex, Source, default_threads
from jitrs.errors import UserError

SHARD_SUFFIX = ".tar"
CLASSES_FILE = "classes.txt"
ID_FIELD, NAME_FIELD = ".cls", ".class"  # KEY.cls: the integer label; KEY.class: the class name
# Scanning is Python work (a header parsed per member), so only processes scale it with cores; a thread pool still
# overlaps the reads. Processes from this many shards and cores on: below, their start-up and the result pickling
# cost more than they save (on the 2-core VM, 320 shards: threads 8.4 s, 2 processes 11.8 s).
_PROCESS_POOL_MIN_SHARDS = 64
_PROCESS_POOL_MIN_CORES = 4
_COMPRESSED = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar.zst")


def shard_files(root: Path) -> list[Path]:
    """The .tar shards directly in root, sorted by name; UserError when it holds only compressed tars, which
    cannot be read in place."""
    with os.scandir(root) as it:
        names = sorted(e.name for e in it if e.is_file() and not e.name.startswith("."))
    shards = [root / n for n in names if n.endswith(SHARD_SUFFIX)]
    if not shards and any(n.endswith(_COMPRESSED) for n in names):
        raise UserError(
            f"{root} holds compressed tar shards, which cannot be read in place: decompress them to .tar",
            param="data",
        )
    return shards


@dataclass(frozen=True)
class TarMembers:
    """Images as byte ranges of shards: image i is `lengths[i]` bytes at `offsets[i]` of `shards[shard[i]]`."""

    shards: list[str]
    shard: np.ndarray  # (N,) int32
    offsets: np.ndarray  # (N,) int64
    lengths: np.ndarray  # (N,) int64
    members: list[str]

    def sources(self, ids: Ids) -> list[Source]:
        return [
            (self.shards[s], o, n)
            for s, o, n in zip(
                self.shard[ids].tolist(), self.offsets[ids].tolist(), self.lengths[ids].tolist(), strict=True
            )
        ]

    def names(self, ids: Ids) -> list[str]:
        return [f"{self.shards[self.shard[i]]}:{self.members[i]}" for i in ids]


class _Extended(Exception):
    """A pax or GNU extension header, or a tar without the ustar magic: for tarfile to read."""


class _Window:
    """Positioned reads through one window: a label member and the next sample's header usually lie within a few
    KiB of a header, so one system call serves several reads."""

    SIZE = 16 * 1024

    def __init__(self, fd: int) -> None:
        self.fd, self.start, self.data = fd, 0, b""

    def read(self, pos: int, n: int) -> bytes:
        if not (self.start <= pos and pos + n <= self.start + len(self.data)):
            self.start, self.data = pos, os.pread(self.fd, max(n, self.SIZE), pos)
        return self.data[pos - self.start : pos - self.start + n]


_REGULAR = (b"0", b"\0", b"7")
_EXTENDED = (b"x", b"g", b"L", b"K")
_BLOCK = 512


def _octal(field: bytes) -> int:
    return int(field.split(b"\0", 1)[0].strip() or b"0", 8)


def _ustar_members(window: _Window, size: int, skipped: list[list[str]]) -> list[tuple[str, int, int]]:
    """(name, data offset, length) of each regular file of a plain ustar/GNU tar, from positioned reads of headers:
    several times faster than tarfile, whose per-member objects dominate a 1.28M-member scan (headers are told by
    the ustar magic, not by the checksum, whose byte sum costs as much as the rest). Raises _Extended for what only
    tarfile reads."""
    found: list[tuple[str, int, int]] = []
    pos = 0
    while pos + _BLOCK <= size:
        h = window.read(pos, _BLOCK)
        if h.count(0) == _BLOCK:
            return found  # the end-of-archive blocks
        if h[257:262] != b"ustar":  # every ustar, GNU and pax header has the magic (an old v7 tar: tarfile reads it)
            if pos == 0:
                raise _Extended
            skipped.append(["", f"unreadable from byte {pos} on (no tar header there); the members before it are used"])
            return found
        kind = h[156:157]
        if kind in _EXTENDED or h[124] & 0x80:
            raise _Extended
        try:
            length = _octal(h[124:136])
        except ValueError:
            skipped.append(["", f"unreadable from byte {pos} on (a bad size field); the members before it are used"])
            return found
        if kind in _REGULAR:
            name = h[:100].split(b"\0", 1)[0]
            if h[257:263] == b"ustar\0" and h[345]:  # POSIX ustar: a path prefix (GNU keeps times there)
                name = h[345:500].split(b"\0", 1)[0] + b"/" + name
            found.append((name.decode("utf-8", errors="replace"), pos + _BLOCK, length))
        pos += _BLOCK + -(-length // _BLOCK) * _BLOCK
    if pos < size:
        skipped.append(["", f"truncated shard: a member header is cut off at byte {pos}"])
    return found


def _tarfile_members(path: str, skipped: list[list[str]]) -> list[tuple[str, int, int]]:
    found: list[tuple[str, int, int]] = []
    try:
        with tarfile.open(path, "r:") as tar:
            while True:
                try:
                    info = tar.next()
                except tarfile.ReadError as e:
                    skipped.append(["", f"unreadable from byte {tar.offset} on ({e}); the members before it are used"])
                    return found
                if info is None:
                    return found
                if info.isfile():
                    found.append((info.name, info.offset_data, info.size))
    except tarfile.ReadError as e:
        skipped.append(["", f"not a tar file ({e})"])
    return found


def scan_shard(path: str) -> dict[str, Any]:
    """One shard's images: {"size", "mtime_ns", "members", "offsets", "lengths", "labels" (the label member's text),
    "field" (ID_FIELD or NAME_FIELD or None), "skipped": [[member, reason], ...]}.
    Runs in a worker thread or process."""
    st = os.stat(path)
    images: dict[str, tuple[str, int, int]] = {}
    labels: dict[str, tuple[str, str]] = {}
    skipped: list[list[str]] = []
    with open(path, "rb") as f:
        window = _Window(f.fileno())
        try:
            members = _ustar_members(window, st.st_size, skipped)
        except _Extended:
            members = _tarfile_members(path, skipped)
        for name, offset, length in members:
            if offset + length > st.st_size:
                skipped.append([name, f"truncated shard: the member needs {length} bytes from byte {offset}, "
                                f"the file ends at {st.st_size}"])  # fmt: skip
                break
            base = posixpath.basename(name)
            dot = base.find(".")
            if dot <= 0:
                continue
            key, ext = name[: len(name) - len(base) + dot], base[dot:].lower()
            if ext in IMAGE_EXTENSIONS:
                if key in images:
                    skipped.append([name, f"a second image for the key {key!r} (the first is used)"])
                else:
                    images[key] = (name, offset, length)
            elif ext in (ID_FIELD, NAME_FIELD):
                labels[key] = (ext, window.read(offset, length).decode("utf-8", errors="replace").strip())
    fields = {f for f, _ in labels.values()}
    if len(fields) > 1:
        skipped.append(["", f"holds both {ID_FIELD} and {NAME_FIELD} labels; the shard is left out"])
        images = {}
    out: dict[str, Any] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "field": next(iter(fields), None)}
    out |= {"members": [], "offsets": [], "lengths": [], "labels": [], "skipped": skipped}
    for key, (member, offset, length) in images.items():
        if key not in labels:
            skipped.append([member, f"no label (no {key}{ID_FIELD} or {key}{NAME_FIELD} member)"])
            continue
        out["members"].append(member)
        out["offsets"].append(offset)
        out["lengths"].append(length)
        out["labels"].append(labels[key][1])
    return out


def _scan_all(paths: list[str], threads: int | None) -> list[dict[str, Any]]:
    cores = os.cpu_count() or 1
    if len(paths) < _PROCESS_POOL_MIN_SHARDS or cores < _PROCESS_POOL_MIN_CORES:
        with ThreadPoolExecutor(max_workers=default_threads(threads)) as pool:
            return list(pool.map(scan_shard, paths))
    workers = min(default_threads(threads), cores)
    # spawn, not fork: the parent may hold rayon and CUDA threads, which a forked child would inherit broken.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(scan_shard, paths, chunksize=max(1, len(paths) // (workers * 8))))


def _stat_key(path: Path) -> list[int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def build(
    root: Path, data_dir: str | Path, threads: int | None, previous: dict[str, Any] | None
) -> tuple[ImageIndex, dict[str, Any]]:
    """The index of the shards in root, scanning (in a process pool) only the shards whose size or mtime differ
    from `previous` (the cached payload); returns `previous` itself when nothing changed."""
    shards = shard_files(root)
    old = {s["name"]: s for s in (previous or {}).get("shards", []) if isinstance(s, dict) and "name" in s}
    entries: list[dict[str, Any] | None] = []
    for path in shards:
        entry = old.get(path.name)
        fresh = entry is not None and [entry.get("size"), entry.get("mtime_ns")] == _stat_key(path)
        entries.append(entry if fresh else None)
    todo = [i for i, e in enumerate(entries) if e is None]
    for i, scanned in zip(todo, _scan_all([str(shards[i]) for i in todo], threads), strict=True):
        entries[i] = {"name": shards[i].name, **scanned}
    classes_key = _stat_key(root / CLASSES_FILE)
    unchanged = (
        previous is not None and not todo and len(old) == len(shards) and previous.get("classes_file") == classes_key
    )
    payload: dict[str, Any] | None = previous if unchanged else {"classes_file": classes_key, "shards": entries}
    assert payload is not None
    return _assemble(root, data_dir, payload["shards"]), payload


def _assemble(root: Path, data_dir: str | Path, entries: list[dict[str, Any]]) -> ImageIndex:
    skipped = [
        (f"{root / e['name']}:{m}" if m else str(root / e["name"]), why) for e in entries for m, why in e["skipped"]
    ]
    fields = {e["field"] for e in entries if e["members"]}
    if not fields:
        raise UserError(
            f"no labelled images in the {len(entries)} shard(s) of {root}"
            + (f" (e.g. {skipped[0][0]}: {skipped[0][1]})" if skipped else ""),
            param="data",
            value=data_dir,
        )
    if len(fields) > 1:
        raise UserError(
            f"the shards of {root} mix {ID_FIELD} (class id) and {NAME_FIELD} (class name) labels: use one kind",
            param="data",
            value=data_dir,
        )
    texts = [t for e in entries for t in e["labels"]]
    keep = np.ones(len(texts), dtype=bool)
    if fields == {NAME_FIELD}:
        classes = sorted(set(texts))
        ids = {c: i for i, c in enumerate(classes)}
        labels = np.array([ids[t] for t in texts], dtype=np.int64)
    else:
        labels = np.array([int(t) if t.isdecimal() else -1 for t in texts], dtype=np.int64)
        keep &= labels >= 0
        classes_file = root / CLASSES_FILE
        if classes_file.is_file():
            classes = [c.strip() for c in classes_file.read_text().splitlines() if c.strip()]
            keep &= labels < len(classes)
        else:
            classes = [str(i) for i in range(int(labels[keep].max(initial=-1)) + 1)]
    shard = np.concatenate([np.full(len(e["members"]), i, dtype=np.int32) for i, e in enumerate(entries)])
    offsets = np.array([o for e in entries for o in e["offsets"]], dtype=np.int64)
    lengths = np.array([n for e in entries for n in e["lengths"]], dtype=np.int64)
    members = [m for e in entries for m in e["members"]]
    store = TarMembers([str(root / e["name"]) for e in entries], shard, offsets, lengths, members)
    if not keep.all():
        bad = np.flatnonzero(~keep)
        limit = f"an integer 0..{len(classes) - 1} ({CLASSES_FILE} names {len(classes)} classes)"
        if not (root / CLASSES_FILE).is_file():
            limit = "a non-negative integer"
        for name, i in zip(store.names(bad), bad.tolist(), strict=True):
            skipped.append((name, f"label {texts[i]!r} is not {limit}"))
        kept = np.flatnonzero(keep)
        store = TarMembers(store.shards, shard[kept], offsets[kept], lengths[kept], [members[i] for i in kept])
        labels = labels[kept]
        if not len(labels):
            raise UserError(
                f"no usable labels in the shards of {root} ({skipped[-1][1]})", param="data", value=data_dir
            )
    return ImageIndex(root, classes, labels, store, kind="tar", skipped=skipped)
