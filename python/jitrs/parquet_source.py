"""Hugging Face parquet shards as a training set (the layout of the ImageNet parquet release): an `image` column
(a struct whose `bytes` field holds the encoded JPEG/PNG, or plain binary) and an integer `label` column.

Files: DATA/*.parquet, else DATA/data/*.parquet; when some are named train-*.parquet only those are used (a
Hugging Face dataset folder holds its validation and test splits beside them). Sorted by name; rows in file
order. Classes: the label's ClassLabel names from the Hugging Face schema metadata when present (class i is
names[i]), else "0".."max label". Rows whose label is missing or negative (a test split's -1) are left out,
logged and counted; rows whose image fails to decode are skipped by the loader, named `FILE.parquet:row R`.

The index holds only labels and row positions; the loader's worker threads read the image bytes of the rows a
batch needs, one row group at a time. A parquet row group is read whole, so random access costs a row group
read per image touched: for full-speed training convert once with `jitrs prepare --format tar`.

Needs pyarrow: `pip install 'jitrs[parquet]'`.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jitrs.dataset import Ids, ImageIndex, Source
from jitrs.errors import UserError

IMAGE_COLUMN, LABEL_COLUMN = "image", "label"
PARQUET_INSTALL = "pip install 'jitrs[parquet]'"


def parquet_files(root: Path) -> list[Path]:
    """The parquet shards of root (see the module docstring), sorted by name."""
    for folder in (root, root / "data"):
        if folder.is_dir():
            files = sorted(p for p in folder.glob("*.parquet") if p.is_file())
            if files:
                train = [p for p in files if p.name.startswith("train-")]
                return train or files
    return []


def _pq() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError(f"reading parquet shards needs pyarrow: install it with {PARQUET_INSTALL}") from None
    return pq


def _class_names(schema: Any) -> list[str] | None:
    """The label's ClassLabel names from the Hugging Face metadata of a parquet schema, if any."""
    try:
        meta = json.loads((schema.metadata or {})[b"huggingface"])
        names = meta["info"]["features"][LABEL_COLUMN]["names"]
    except (KeyError, TypeError, ValueError):
        return None
    return [str(n) for n in names] if isinstance(names, list) and names else None


def _stat_key(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _scan_file(root: Path, path: Path, data_dir: str | Path) -> dict[str, Any]:
    pq = _pq()
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises ArrowInvalid, OSError, ... for a file that is not parquet
        raise UserError(f"{path} is not a readable parquet file ({e})", param="data", value=data_dir) from None
    names = pf.schema_arrow.names
    if IMAGE_COLUMN not in names or LABEL_COLUMN not in names:
        raise UserError(
            f"{path} has the columns {names}; expected {IMAGE_COLUMN!r} (the encoded image) and {LABEL_COLUMN!r}",
            param="data",
            value=data_dir,
        )
    labels = pf.read(columns=[LABEL_COLUMN]).column(0).to_pylist()
    groups = [pf.metadata.row_group(i).num_rows for i in range(pf.metadata.num_row_groups)]
    return {
        "name": str(path.relative_to(root)),
        "stat": _stat_key(path),
        "groups": groups,
        "labels": labels,
        "classes": _class_names(pf.schema_arrow),
    }


@dataclass(frozen=True)
class ParquetRows:
    """Images as rows of parquet files: image i is row `rows[i]` of `files[file[i]]`, whose row groups start at
    `group_starts[file]`."""

    files: list[str]
    file: np.ndarray  # (N,) int32
    rows: np.ndarray  # (N,) int64
    group_starts: list[np.ndarray]
    _local: threading.local = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_local", threading.local())  # one open ParquetFile per file per thread

    def _open(self, f: int) -> Any:
        handles = self._local.__dict__.setdefault("files", {})
        if f not in handles:
            handles[f] = _pq().ParquetFile(self.files[f])
        return handles[f]

    def sources(self, ids: Ids) -> list[Source]:
        files, rows = self.file[ids], self.rows[ids]
        out: list[Source] = [b""] * len(files)
        groups: dict[tuple[int, int], list[int]] = {}
        for k, (f, r) in enumerate(zip(files.tolist(), rows.tolist(), strict=True)):
            g = int(np.searchsorted(self.group_starts[f], r, side="right")) - 1
            groups.setdefault((f, g), []).append(k)
        for (f, g), ks in groups.items():
            column = self._open(f).read_row_group(g, columns=[IMAGE_COLUMN]).column(0).combine_chunks()
            if hasattr(column, "field"):  # the Hugging Face Image feature: struct<bytes, path>
                column = column.field("bytes")
            start = int(self.group_starts[f][g])
            for k in ks:
                value = column[int(rows[k]) - start].as_py()
                out[k] = value if isinstance(value, bytes) else b""  # a null image: reported as empty by the decoder
        return out

    def names(self, ids: Ids) -> list[str]:
        return [
            f"{self.files[f]}:row {r}" for f, r in zip(self.file[ids].tolist(), self.rows[ids].tolist(), strict=True)
        ]


def build(
    root: Path, data_dir: str | Path, threads: int | None, previous: dict[str, Any] | None
) -> tuple[ImageIndex, dict[str, Any]]:
    """The index of root's parquet shards (labels and row-group sizes read from each file), or `previous` (the
    cached payload) while every file keeps its size and mtime."""
    files = parquet_files(root)
    payload = previous
    cached = (previous or {}).get("files")
    fresh = (
        isinstance(cached, list)
        and [c.get("name") for c in cached] == [str(p.relative_to(root)) for p in files]
        and all(c.get("stat") == _stat_key(p) for c, p in zip(cached, files, strict=True))
    )
    if not fresh:
        payload = {"files": [_scan_file(root, p, data_dir) for p in files]}
    assert payload is not None
    entries = payload["files"]
    classes = next((e["classes"] for e in entries if e.get("classes")), None)
    skipped: list[tuple[str, str]] = []
    file_ids, row_ids, labels = [], [], []
    for f, e in enumerate(entries):
        for r, label in enumerate(e["labels"]):
            bad = label is None or label < 0 or (classes is not None and label >= len(classes))
            if bad:
                skipped.append((f"{root / e['name']}:row {r}", f"no usable label ({label})"))
                continue
            file_ids.append(f)
            row_ids.append(r)
            labels.append(label)
    if not labels:
        raise UserError(
            f"no labelled rows in the {len(entries)} parquet file(s) of {root}", param="data", value=data_dir
        )
    label_array = np.array(labels, dtype=np.int64)
    if classes is None:
        classes = [str(i) for i in range(int(label_array.max()) + 1)]
    starts = [np.concatenate([[0], np.cumsum(e["groups"])[:-1]]).astype(np.int64) for e in entries]
    store = ParquetRows(
        [str(root / e["name"]) for e in entries], np.array(file_ids, np.int32), np.array(row_ids, np.int64), starts
    )
    return ImageIndex(root, classes, label_array, store, kind="parquet", skipped=skipped), payload
