"""Benchmark: load_batch decoding only the part of each JPEG the ADM crop reads, against load_batch decoding
whole images, a full decode alone, and the Pillow reference, side by side in one run on the same files.

    python benches/bench_partial_decode.py [--n-images 384] [--repeat 3] [--batch-size 128]
    valgrind --tool=callgrind python benches/bench_partial_decode.py --only windowed --size 256 --n-images 96

`--only` runs one pass of one contender (or `none`: nothing, for the start-up cost) and exits: for counting
instructions, which other load on the machine does not change.

The image set: the real photographs shipped with scikit-learn and matplotlib (china.jpg, flower.jpg,
grace_hopper.jpg), random crops of them resized to ImageNet-like sizes and aspect ratios, cycling through
500x375, 500x333, 640x480, 1024x683, 375x500 (portrait), 333x500 (portrait), 800x450 and 1280x720 (16:9),
saved as baseline 4:2:0 JPEGs at quality 90-95 (Pillow, libjpeg-turbo), cached in the temp folder.
For each crop size (256, 512) and thread count (2, 1) the four contenders alternate pass by pass; every
figure is the best of --repeat passes after a warm-up, so a load change on a shared machine hits all alike.

- load_batch windowed: `jitrs.load_batch(paths, size)` (partial decode, the default);
- load_batch full: `jitrs.load_batch(paths, size, partial_decode=False)` (jitrs before partial decoding);
- full decode alone: `jitrs.decode` of every file on `threads` threads, no crop (the bound of any exact
  pipeline that decodes whole images);
- Pillow pool: Pillow decode + ADM crop + flip in a `multiprocessing.Pool(threads)` (the official pipeline).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from bench_load_batch import reference_item
from common import machine, photos, warn_if_debug_build
from PIL import Image

import jitrs

SIZES = [(500, 375), (500, 333), (640, 480), (1024, 683), (375, 500), (333, 500), (800, 450), (1280, 720)]
SET_VERSION = 1  # bump when the generated set changes


def make_set(n: int, seed: int = 0) -> list[Path]:
    """`n` JPEGs cut from the real photographs at the sizes above, generated once and cached."""
    root = Path(tempfile.gettempdir()) / f"jitrs-bench-partial-v{SET_VERSION}-n{n}-s{seed}"
    paths = [root / f"{i:05d}.JPEG" for i in range(n)]
    if root.is_dir():
        return paths
    partial = Path(tempfile.mkdtemp(prefix=root.name + ".partial-", dir=root.parent))
    rng = np.random.default_rng(seed)
    sources = [Image.fromarray(p) for p in photos()]
    for i, path in enumerate(paths):
        photo = sources[i % len(sources)]
        w, h = SIZES[i % len(SIZES)]
        # A random crop of the photo with the target's aspect ratio, 60-100% of the largest that fits.
        cw = min(photo.width, photo.height * w / h) * rng.uniform(0.6, 1.0)
        ch = cw * h / w
        x0, y0 = rng.uniform(0, photo.width - cw), rng.uniform(0, photo.height - ch)
        im = photo.resize((w, h), Image.Resampling.BICUBIC, box=(x0, y0, x0 + cw, y0 + ch))
        im.save(partial / path.name, "JPEG", quality=int(rng.integers(90, 96)), subsampling="4:2:0")
    try:
        partial.rename(root)
    except OSError:  # another run finished the same set first
        shutil.rmtree(partial)
    return paths


def best_rates(runs: Sequence[Callable[[], object]], n: int, repeat: int) -> list[float]:
    """Images/s of each run (each processes `n` images), best of `repeat` passes, the runs alternating."""
    for run in runs:
        run()  # warm-up: page cache, thread pools, worker processes
    best = [float("inf")] * len(runs)
    for _ in range(repeat):
        for i, run in enumerate(runs):
            start = time.perf_counter()
            run()
            best[i] = min(best[i], time.perf_counter() - start)
    return [n / b for b in best]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-images", type=int, default=384)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--only", choices=["windowed", "full", "decode", "none"])
    parser.add_argument("--size", type=int, default=256, help="crop size for --only")
    args = parser.parse_args()
    warn_if_debug_build()

    paths = [str(p) for p in make_set(args.n_images)]
    if args.only:
        if args.only == "decode":
            for p in paths:
                jitrs.decode(p)
        elif args.only != "none":
            for i in range(0, len(paths), args.batch_size):
                batch = paths[i : i + args.batch_size]
                jitrs.load_batch(batch, args.size, threads=1, partial_decode=args.only == "windowed")
        return
    sizes = np.array([Image.open(p).size for p in paths])
    print(f"machine: {machine()}")
    print(
        f"images:  {len(paths)} baseline 4:2:0 JPEGs, q 90-95, sizes {', '.join(f'{w}x{h}' for w, h in SIZES)} "
        f"in turn (mean {sizes[:, 0].mean():.0f}x{sizes[:, 1].mean():.0f})"
    )
    print(f"setup:   batches of {args.batch_size}, best of {args.repeat}, contenders alternating\n")
    flips = [bool(f) for f in np.random.default_rng(1).random(len(paths)) < 0.5]
    chunks = [
        (paths[i : i + args.batch_size], flips[i : i + args.batch_size]) for i in range(0, len(paths), args.batch_size)
    ]
    n = len(paths)
    names = ["load_batch windowed", "load_batch full", "full decode alone", "Pillow pool"]
    print(
        f"{'size':>4} {'threads':>7}  "
        + "  ".join(f"{name:>19}" for name in names)
        + "  windowed/full  windowed/decode"
    )
    for threads in (2, 1):
        with mp.get_context("fork").Pool(threads) as pool, ThreadPoolExecutor(threads) as executor:
            for size in (256, 512):

                def windowed(size: int = size, threads: int = threads) -> None:
                    for pb, fb in chunks:
                        jitrs.load_batch(pb, size, flip=fb, threads=threads)

                def full(size: int = size, threads: int = threads) -> None:
                    for pb, fb in chunks:
                        jitrs.load_batch(pb, size, flip=fb, threads=threads, partial_decode=False)

                def decode_alone(executor: ThreadPoolExecutor = executor) -> None:
                    for _ in executor.map(jitrs.decode, paths):
                        pass

                def pillow(size: int = size, pool: mp.pool.Pool = pool, threads: int = threads) -> None:
                    for pb, fb in chunks:
                        jobs = [(p, size, f) for p, f in zip(pb, fb, strict=True)]
                        np.stack(pool.map(reference_item, jobs, chunksize=max(1, len(jobs) // (threads * 4))))

                rates = best_rates([windowed, full, decode_alone, pillow], n, args.repeat)
                print(
                    f"{size:>4} {threads:>7}  "
                    + "  ".join(f"{r:>13.1f} img/s" for r in rates)
                    + f"  {rates[0] / rates[1]:>12.2f}x  {rates[0] / rates[2]:>14.2f}x"
                )
    # On a shared machine other processes steal wall time; the CPU seconds this process spends do not move much.
    print("\n1 thread, images per CPU-second of this process (robust to other load on the machine):")
    for size in (256, 512):
        runs = [
            lambda size=size: jitrs.load_batch(paths, size, flip=flips, threads=1),
            lambda size=size: jitrs.load_batch(paths, size, flip=flips, threads=1, partial_decode=False),
            lambda: [jitrs.decode(p) for p in paths],
        ]
        for run in runs:
            run()
        best = [float("inf")] * len(runs)
        for _ in range(args.repeat):
            for i, run in enumerate(runs):
                start = time.process_time()
                run()
                best[i] = min(best[i], time.process_time() - start)
        windowed, full, decode = (n / b for b in best)
        print(
            f"{size:>4} px: windowed {windowed:.1f}, full {full:.1f}, decode alone {decode:.1f} img/CPU-s; "
            f"windowed/full {windowed / full:.2f}x, windowed/decode {windowed / decode:.2f}x"
        )
    print("\ntargets: windowed >= 1.25x full at 256 px, and faster than the full decode alone")


if __name__ == "__main__":
    main()
