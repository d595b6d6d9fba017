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
import time
from collections.abc import Callable, Sequence

import numpy as np
from common import adm_center_crop, machine, make_image_set, usable_cores, warn_if_debug_build
from PIL import Image

import jitrs


def reference_item(job: tuple[str, int, bool]) -> np.ndarray:
    """What the official JiT code runs in its DataLoader workers, for one file."""
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-images", type=int, default=512)
    parser.add_argument("--threads", type=int, default=usable_cores(), help="jitrs threads = reference processes")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()

    warn_if_debug_build()

    print(f"machine: {machine()}")
    image_set = make_image_set(args.n_images)
    paths = image_set.paths
    print(f"images:  {image_set.describe()}")
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
