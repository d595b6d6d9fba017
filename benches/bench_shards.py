"""Training sources side by side: images/s delivered to the training loop from tar shards, parquet shards and the
same JPEGs as an ImageFolder; and the cost of building (and re-reading) each kind of index at ImageNet scale.

    python benches/bench_shards.py [--images 1536] [--batch 64] [--res 256] [--batches 12] [--rounds 3]
                                   [--index-entries 1281167]

Throughput: the ImageNet-like JPEG set of benches/common.py (about 500×375, real photographs) as an ImageFolder;
the same files converted by jitrs.prepare into tar shards of 256 images; and, with pyarrow, the same bytes in
Hugging Face style parquet files (image struct<bytes, path>, label; row groups of 100 rows, as `datasets` writes
image sets). Each source runs through jitrs.loader.Loader (shuffled, flips, pinned buffers, device), best of
`--rounds` interleaved rounds of `--batches` batches after one warm-up batch.

Indexing: `--index-entries` samples in 1000-sample tar shards (members of 16 bytes, as the index never decodes),
in parquet files of 4,357 rows (the Hugging Face ImageNet train split's 294 files), and as empty files in 1000
class folders; timed cold (no cache) and from the cache in the run directory (index.json). Files are warm in the
page cache (just written).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from common import machine, make_image_set, usable_cores, warn_if_debug_build

from jitrs.dataset import ImageIndex, build_index
from jitrs.loader import Loader, Plan
from jitrs.prepare import prepare

HF_ROW_GROUP = 100  # rows per row group in the parquet files `datasets` writes for image data
HF_FILE_ROWS = 4357  # ImageNet train in the Hugging Face parquet release: 1,281,167 rows in 294 files
TAR_SAMPLES = 1000


def have_pyarrow() -> bool:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


def write_parquet_copy(index: ImageIndex, out: Path, rows_per_file: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = len(index)
    for f, start in enumerate(range(0, n, rows_per_file)):
        ids = range(start, min(start + rows_per_file, n))
        blobs = [Path(p).read_bytes() for p in index.sources(ids)]
        image = pa.array([{"bytes": b, "path": f"{i}.JPEG"} for i, b in zip(ids, blobs, strict=True)])
        table = pa.table({"image": image, "label": pa.array(index.labels[list(ids)], type=pa.int64())})
        pq.write_table(table, out / f"train-{f:05d}.parquet", row_group_size=HF_ROW_GROUP)


def images_per_s(index: ImageIndex, res: int, batch: int, batches: int, threads: int, device: torch.device) -> float:
    with Loader(index, res, Plan(len(index), batch, seed=1), device, threads=threads) as loader:
        it = iter(loader)
        next(it)  # warm-up: thread start-up, first decode
        start = time.perf_counter()
        total = sum(next(it).x.shape[0] for _ in range(batches))
        if device.type == "cuda":
            torch.cuda.synchronize()
        return total / (time.perf_counter() - start)


def throughput(args: argparse.Namespace, device: torch.device, tmp: Path) -> None:
    folder = make_image_set(args.images).root
    sources = {"ImageFolder": build_index(folder)}
    prepare(folder, tmp / "tar", shard_size=256)
    sources["tar shards"] = build_index(tmp / "tar")
    if have_pyarrow():
        (tmp / "parquet").mkdir()
        write_parquet_copy(sources["ImageFolder"], tmp / "parquet", rows_per_file=512)
        sources["parquet"] = build_index(tmp / "parquet")
    best = dict.fromkeys(sources, 0.0)
    for _ in range(args.rounds):
        for name, index in sources.items():
            best[name] = max(best[name], images_per_s(index, args.res, args.batch, args.batches, args.threads, device))
    base = best["ImageFolder"]
    print(f"\n{args.images} JPEGs at {args.res} px, batch {args.batch}, {args.threads} decode threads, {device}")
    print(f"{'source':>12} {'img/s':>8} {'vs ImageFolder':>15}")
    for name, value in best.items():
        print(f"{name:>12} {value:>8.0f} {value / base:>14.2f}×")


def make_tar_shards(root: Path, entries: int) -> None:
    """`entries` samples in shards of TAR_SAMPLES: one template shard written with tarfile, copied byte for byte."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for i in range(TAR_SAMPLES):
            for name, data in ((f"{i:09d}.jpg", b"\xff\xd8\xff" + bytes(13)), (f"{i:09d}.cls", str(i % 1000).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    template = buf.getvalue()
    root.mkdir(parents=True)
    full, rest = divmod(entries, TAR_SAMPLES)
    for s in range(full):
        (root / f"shard-{s:06d}.tar").write_bytes(template)
    if rest:
        with tarfile.open(fileobj=io.BytesIO(template)) as tar:
            cut = tar.getmembers()[2 * rest].offset  # the header of the first sample left out
        (root / f"shard-{full:06d}.tar").write_bytes(template[:cut] + bytes(1024))


def make_parquet(root: Path, entries: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    root.mkdir(parents=True)
    for f, start in enumerate(range(0, entries, HF_FILE_ROWS)):
        rows = min(HF_FILE_ROWS, entries - start)
        image = pa.array([{"bytes": b"\xff\xd8\xff" + bytes(13), "path": "x.JPEG"}] * rows)
        table = pa.table({"image": image, "label": pa.array(np.arange(rows) % 1000, type=pa.int64())})
        pq.write_table(table, root / f"train-{f:05d}-of-00294.parquet", row_group_size=HF_ROW_GROUP)


def make_folder(root: Path, entries: int) -> None:
    for c in range(1000):
        d = root / f"n{c:08d}"
        d.mkdir(parents=True)
        for i in range(c, entries, 1000):
            (d / f"{i}.JPEG").touch()


def indexing(entries: int, kinds: list[str], tmp: Path) -> None:
    makers: dict[str, Callable[[Path, int], None]] = {"tar": make_tar_shards, "folder": make_folder}
    if have_pyarrow():
        makers["parquet"] = make_parquet
    makers = {k: m for k, m in makers.items() if k in kinds}
    print(f"\nindexing {entries:,} entries (cold: no cache; cached: index.json in the run directory)")
    print(f"{'source':>8} {'make s':>7} {'cold s':>7} {'entries/s':>10} {'cached s':>9}")
    for name, make in makers.items():
        root = tmp / "index-bench" / name
        start = time.perf_counter()
        make(root, entries)
        made = time.perf_counter() - start
        cache = root.parent / f"{root.name}-index.json"
        times = []
        for _ in range(2):
            start = time.perf_counter()
            found = len(build_index(root, cache=cache))
            times.append(time.perf_counter() - start)
            assert found == entries, (name, found)
        print(f"{name:>8} {made:>7.1f} {times[0]:>7.2f} {entries / times[0]:>10,.0f} {times[1]:>9.2f}", flush=True)
        shutil.rmtree(root)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1536)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--res", type=int, default=256)
    parser.add_argument("--threads", type=int, default=usable_cores())
    parser.add_argument("--index-entries", type=int, default=1_281_167, help="entries in the indexing test (0: skip)")
    parser.add_argument("--index-kinds", default="tar,parquet,folder", help="sources in the indexing test")
    parser.add_argument("--no-throughput", action="store_true", help="only the indexing test")
    args = parser.parse_args()
    warn_if_debug_build()
    print(machine())
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_throughput:
            throughput(args, device, Path(tmp))
        if args.index_entries:
            indexing(args.index_entries, args.index_kinds.split(","), Path(tmp))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
