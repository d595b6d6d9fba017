"""What the bench scripts share: the machine line, the build check, the real sample photos, the ImageNet-like
JPEG set made from them, the reference (Pillow ADM) center crop and the timing helpers.

Bench scripts run as `python benches/X.py`, which puts this folder on sys.path: they `from common import ...`.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image
from sklearn.datasets import load_sample_image

import jitrs

# ----------------------------------------------------------------------------------------------------
# the machine and the build


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (platform.processor() is often just 'x86_64' on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask), which on a shared machine is less than the total."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def machine() -> str:
    return f"{cpu_model()}; {os.cpu_count()} logical cores, {usable_cores()} usable; Python {platform.python_version()}"


def warn_if_debug_build() -> None:
    """Say so loudly when jitrs._native is a debug build: its timings would be meaningless."""
    if jitrs._native.BUILD_PROFILE != "release":
        print(
            f"WARNING: jitrs._native is a {jitrs._native.BUILD_PROFILE} build; these timings mean nothing "
            "(build it with --release).",
            file=sys.stderr,
        )


# ----------------------------------------------------------------------------------------------------
# the real photographs and the ImageNet-like JPEG set made from them


def photos() -> list[np.ndarray]:
    """scikit-learn's china.jpg and flower.jpg and matplotlib's grace_hopper.jpg, each (H, W, 3) uint8 RGB."""
    grace = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    with Image.open(grace) as im:
        hopper = np.asarray(im.convert("RGB"))
    return [load_sample_image("china.jpg"), load_sample_image("flower.jpg"), hopper]


SET_VERSION = 3  # bump when the generated set changes, so stale caches are not reused


@dataclass(frozen=True)
class ImageSet:
    root: Path  # ImageFolder layout: root/train/<class>/<index>.JPEG
    paths: list[Path]  # every file, in generation order

    def describe(self) -> str:
        sizes, progressive, gray = [], 0, 0
        for p in self.paths:
            with Image.open(p) as im:
                sizes.append(im.size)
                progressive += bool(im.info.get("progressive"))
                gray += im.mode == "L"
        s = np.array(sizes)
        return (
            f"{len(self.paths)} JPEGs, mean {s[:, 0].mean():.0f}x{s[:, 1].mean():.0f}, "
            f"largest {s.max(axis=0)[0]}x{s.max(axis=0)[1]}, {progressive} progressive, {gray} grayscale"
        )


def make_image_set(n: int, classes: int = 10, seed: int = 0) -> ImageSet:
    """`n` ImageNet-like JPEGs cut from the real photographs, generated once and cached in the temp folder.

    Like ImageNet train: mostly 500 px on the long side and landscape 4:3 (about 500x375 on average), a tail
    up to ~2500 px, quality 75-95, about 10% progressive and 5% grayscale; file i is in class i % classes.
    """
    root = Path(tempfile.gettempdir()) / f"jitrs-bench-images-v{SET_VERSION}-n{n}-c{classes}-s{seed}"
    paths = [root / "train" / f"n{i % classes:08d}" / f"{i:05d}.JPEG" for i in range(n)]
    if root.is_dir():
        return ImageSet(root, paths)
    # Written next to the cache and renamed into place, so an interrupted run never leaves a partial set.
    partial = Path(tempfile.mkdtemp(prefix=root.name + ".partial-", dir=root.parent))
    rng = np.random.default_rng(seed)
    sources = [Image.fromarray(p) for p in photos()]
    for c in range(classes):
        (partial / "train" / f"n{c:08d}").mkdir(parents=True)
    for path in paths:
        photo = sources[rng.integers(len(sources))]
        draw = rng.random()
        if draw < 0.8:
            long_side = 500
        elif draw < 0.97:
            long_side = int(rng.integers(200, 700))
        else:
            long_side = int(rng.integers(700, 2500))
        aspect = float(rng.choice([4 / 3] * 5 + [3 / 2, 1.0, 3 / 4, 2 / 3]))
        w, h = (long_side, round(long_side / aspect)) if aspect >= 1 else (round(long_side * aspect), long_side)
        # A random crop of the photo with that aspect ratio, 50-100% of the largest one that fits.
        cw = min(photo.width, round(photo.height * aspect)) * rng.uniform(0.5, 1.0)
        ch = cw / aspect
        x0 = rng.uniform(0, photo.width - cw)
        y0 = rng.uniform(0, photo.height - ch)
        im = photo.resize((w, h), Image.Resampling.BICUBIC, box=(x0, y0, x0 + cw, y0 + ch))
        if rng.random() < 0.05:
            im = im.convert("L")
        out = partial / path.relative_to(root)
        im.save(out, "JPEG", quality=int(rng.integers(75, 96)), progressive=bool(rng.random() < 0.1))
    try:
        partial.rename(root)
    except OSError:  # another run finished the same set first
        shutil.rmtree(partial)
    return ImageSet(root, paths)


# ----------------------------------------------------------------------------------------------------
# the reference pipeline


def adm_center_crop(img: Image.Image, size: int) -> np.ndarray:
    """The official JiT / ADM center crop with Pillow: halve with BOX while the short side is >= 2*size,
    BICUBIC to a short side of `size`, then the centred (size, size, C) uint8 window (a view)."""
    while min(img.size) >= 2 * size:
        img = img.resize(tuple(x // 2 for x in img.size), resample=Image.Resampling.BOX)
    scale = size / min(img.size)
    img = img.resize(tuple(round(x * scale) for x in img.size), resample=Image.Resampling.BICUBIC)
    arr = np.asarray(img)
    top, left = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    return arr[top : top + size, left : left + size]


# ----------------------------------------------------------------------------------------------------
# timing


def best_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Fastest of `repeats` timed calls of fn, after one untimed warm-up call (page cache, thread pools)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def best_seconds_interleaved(fns: list[Callable[[], object]], repeats: int) -> list[float]:
    """Fastest of `repeats` timed calls of each fn, the calls taken round-robin after one untimed warm-up
    round: a slow spell of the machine (or of the kernel's page allocator) then hits every fn alike instead
    of whichever one happened to run during it."""
    for fn in fns:
        fn()
    times = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            times[i] = min(times[i], time.perf_counter() - start)
    return times


def timed(fn: Callable[[], object], repeats: int = 1, sync: Callable[[], object] = lambda: None) -> float:
    """Mean seconds per call over `repeats` back-to-back calls (the caller warms up). `sync` runs before the
    clock starts and before it stops, e.g. torch.cuda.synchronize so queued GPU work is counted."""
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync()
    return (time.perf_counter() - start) / repeats
