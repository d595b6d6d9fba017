"""Benchmark: jitrs.load_batch against the reference data path (Pillow decode + ADM crop in Python +
flip, in a multiprocessing Pool), measured side by side in one run on the same files and cores.

    python benches/bench_load_batch.py [--n-images 512] [--threads N] [--repeat 3] [--batch-size 128]

The image set is generated from the real photographs that ship with scikit-learn and matplotlib
(random crops and rescales, ImageNet-like: about 500x375 on average, up to ~2500 px, quality 75-95,
some progressive, some grayscale) and cached in the temp directory. Every figure is the best of
--repeat timed passes after one warm-up pass, the two sides of a comparison alternating pass by pass;
ratios compare figures from this same run.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import sklearn
from PIL import Image

import jitrs

SOURCES = [
    Path(sklearn.__file__).parent / "datasets" / "images" / "china.jpg",
    Path(sklearn.__file__).parent / "datasets" / "images" / "flower.jpg",
    Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg",
]
SET_VERSION = 2  # bump when the generated set changes, so stale caches are not reused


# ----------------------------------------------------------------------------------------------------
# the image set


def make_image_set(n: int, seed: int = 0) -> list[Path]:
    """`n` ImageNet-like JPEGs made from the real photographs, generated once and cached."""
    folder = Path(tempfile.gettempdir()) / f"jitrs-bench-images-v{SET_VERSION}-n{n}-s{seed}"
    paths = [folder / f"{i:05d}.JPEG" for i in range(n)]
    if all(p.exists() for p in paths):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    photos = [Image.open(p).convert("RGB") for p in SOURCES]
    for path in paths:
        photo = photos[rng.integers(len(photos))]
        # ImageNet: most images have a 500 px long side, landscape 4:3; a tail goes up to ~2500 px.
        draw = rng.random()
        if draw < 0.8:
            long_side = 500
        elif draw < 0.97:
            long_side = int(rng.integers(200, 700))
        else:
            long_side = int(rng.integers(700, 2500))
        aspect = float(rng.choice([4 / 3] * 5 + [3 / 2, 1.0, 3 / 4, 2 / 3]))
        if aspect >= 1:
            w, h = long_side, round(long_side / aspect)
        else:
            w, h = round(long_side * aspect), long_side
        # A random crop of the photo with that aspect ratio, 50-100% of the largest one that fits.
        cw = min(photo.width, round(photo.height * aspect)) * rng.uniform(0.5, 1.0)
        ch = cw / aspect
        x0 = rng.uniform(0, photo.width - cw)
        y0 = rng.uniform(0, photo.height - ch)
        im = photo.resize((w, h), Image.BICUBIC, box=(x0, y0, x0 + cw, y0 + ch))
        if rng.random() < 0.05:
            im = im.convert("L")
        im.save(path, "JPEG", quality=int(rng.integers(75, 96)), progressive=bool(rng.random() < 0.1))
    return paths


def describe(paths: Sequence[Path]) -> str:
    sizes, progressive, gray = [], 0, 0
    for p in paths:
        with Image.open(p) as im:
            sizes.append(im.size)
            progressive += bool(im.info.get("progressive"))
            gray += im.mode == "L"
    s = np.array(sizes)
    return (
        f"{len(paths)} JPEGs, mean {s[:, 0].mean():.0f}x{s[:, 1].mean():.0f}, "
        f"largest {s.max(axis=0)[0]}x{s.max(axis=0)[1]}, {progressive} progressive, {gray} grayscale"
    )


# ----------------------------------------------------------------------------------------------------
# the reference pipeline (what the official JiT code runs in its DataLoader workers)


def adm_center_crop(im: Image.Image, size: int) -> np.ndarray:
    while min(im.size) >= 2 * size:
        im = im.resize(tuple(x // 2 for x in im.size), resample=Image.BOX)
    scale = size / min(im.size)
    im = im.resize(tuple(round(x * scale) for x in im.size), resample=Image.BICUBIC)
    arr = np.asarray(im)
    top, left = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    return arr[top : top + size, left : left + size]


def reference_item(job: tuple[str, int, bool]) -> np.ndarray:
    path, size, flip = job
    with Image.open(path) as im:
        arr = adm_center_crop(im.convert("RGB"), size)
    return np.ascontiguousarray(arr[:, ::-1] if flip else arr)


# ----------------------------------------------------------------------------------------------------
# timing


def best_rates(ours: Callable[[], object], baseline: Callable[[], object], n: int, repeat: int) -> tuple[float, float]:
    """Images/s of `ours` and `baseline` (each processes `n` images), best of `repeat` passes. The two
    alternate pass by pass, so a load change on a shared machine hits both alike."""
    ours(), baseline()  # warm-up: page cache, thread pools, worker processes
    best = [float("inf"), float("inf")]
    for _ in range(repeat):
        for i, run in enumerate((ours, baseline)):
            start = time.perf_counter()
            run()
            best[i] = min(best[i], time.perf_counter() - start)
    return n / best[0], n / best[1]


def batches(items: Sequence, batch_size: int) -> list[Sequence]:
    return [items[i : i + batch_size] for i in range(0, len(items), batch_size)]


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model}; {os.cpu_count()} logical cores, {usable} usable; Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    parser.add_argument("--n-images", type=int, default=512)
    parser.add_argument("--threads", type=int, default=cores, help="jitrs threads = reference processes")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()

    if jitrs._native.BUILD_PROFILE != "release":
        sys.exit("bench_load_batch: jitrs is a debug build; build it with --release before timing it.")

    print(f"machine: {machine()}")
    paths = make_image_set(args.n_images)
    print(f"images:  {describe(paths)}")
    print(f"setup:   {args.threads} threads/processes, batches of {args.batch_size}, best of {args.repeat}\n")

    flips = list(np.random.default_rng(1).random(len(paths)) < 0.5)
    path_batches = batches([str(p) for p in paths], args.batch_size)
    flip_batches = batches(flips, args.batch_size)
    n = len(paths)

    rows: list[tuple[str, float, float]] = []
    with mp.get_context("fork").Pool(args.threads) as pool:
        for size in (256, 512):

            def reference(size: int = size) -> None:
                for pb, fb in zip(path_batches, flip_batches, strict=True):
                    jobs = [(p, size, bool(f)) for p, f in zip(pb, fb, strict=True)]
                    chunk = max(1, len(jobs) // (args.threads * 4))
                    np.stack(pool.map(reference_item, jobs, chunksize=chunk))

            def ours(size: int = size, threads: int = args.threads) -> None:
                for pb, fb in zip(path_batches, flip_batches, strict=True):
                    jitrs.load_batch(pb, size, flip=fb, threads=threads)

            rates = best_rates(ours, reference, n, args.repeat)
            rows.append((f"load_batch {size}px vs Pillow+ADM crop in a Pool", *rates))

    def ours_threads(threads: int) -> Callable[[], None]:
        def run() -> None:
            for pb, fb in zip(path_batches, flip_batches, strict=True):
                jitrs.load_batch(pb, 256, flip=fb, threads=threads)

        return run

    scaling = best_rates(ours_threads(2), ours_threads(1), n, args.repeat)
    rows.append(("load_batch 256px: 2 threads vs 1 thread", *scaling))

    def decode_ours() -> None:
        for p in paths:
            jitrs.decode(p)

    def decode_pillow() -> None:
        for p in paths:
            with Image.open(p) as im:
                np.asarray(im.convert("RGB"))

    decode_only = best_rates(decode_ours, decode_pillow, n, args.repeat)
    rows.append(("decode only, 1 thread: jitrs.decode vs Pillow", *decode_only))

    width = max(len(r[0]) for r in rows)
    print(f"{'comparison':<{width}}  {'ours img/s':>10}  {'baseline img/s':>14}  {'ratio':>6}")
    for name, ours_rate, base_rate in rows:
        print(f"{name:<{width}}  {ours_rate:>10.1f}  {base_rate:>14.1f}  {ours_rate / base_rate:>5.2f}x")
    print("\ntargets: load_batch >= 2.5x the reference at 256 and 512 px; 2 threads >= 1.8x 1 thread")


if __name__ == "__main__":
    main()
