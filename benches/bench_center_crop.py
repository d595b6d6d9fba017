"""jitrs.center_crop vs Pillow's ADM center crop: images/s on one thread, same arrays, same run.

    python benches/bench_center_crop.py [--rounds 5] [--sizes 256 512]

The images are ImageNet-like: the three sample photographs (sklearn's china/flower, matplotlib's
grace_hopper) resized with Pillow to a mix of shapes around 500x375 plus some up to 2500 px. Pillow's side
is what ADM / DiT / the official JiT run after decoding (Image.fromarray, BOX halvings, BICUBIC, crop,
np.array); both sides start from the same uint8 arrays and return a (size, size, 3) array.
"""

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import matplotlib
import numpy as np
import PIL
from PIL import Image
from sklearn.datasets import load_sample_image

import jitrs
from jitrs import _native

# (width, height) of the generated images: ImageNet's common shapes, with a tail of large and tall ones.
SHAPES = [
    (500, 375),
    (500, 375),
    (500, 375),
    (375, 500),
    (500, 333),
    (500, 400),
    (640, 480),
    (333, 500),
    (800, 600),
    (1024, 768),
    (1600, 1200),
    (2500, 1875),
]


def pillow_adm_crop(arr: np.ndarray, size: int) -> np.ndarray:
    img = Image.fromarray(arr)
    while min(*img.size) >= 2 * size:
        img = img.resize(tuple(x // 2 for x in img.size), resample=Image.BOX)
    scale = size / min(*img.size)
    img = img.resize(tuple(round(x * scale) for x in img.size), resample=Image.BICUBIC)
    out = np.array(img)
    top = (out.shape[0] - size) // 2
    left = (out.shape[1] - size) // 2
    return out[top : top + size, left : left + size]


def sample_images() -> list[np.ndarray]:
    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    with Image.open(path) as img:
        photos = [
            load_sample_image("china.jpg"),
            load_sample_image("flower.jpg"),
            np.asarray(img.convert("RGB")),
        ]
    return [
        np.asarray(Image.fromarray(photos[i % len(photos)]).resize(shape, Image.BICUBIC))
        for i, shape in enumerate(SHAPES)
    ]


def images_per_second(
    crop: Callable[[np.ndarray, int], np.ndarray], images: list[np.ndarray], size: int, rounds: int
) -> float:
    """Median over rounds of images/s for one pass over all images, after one warm-up pass."""
    for arr in images:
        crop(arr, size)
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        for arr in images:
            crop(arr, size)
        rates.append(len(images) / (time.perf_counter() - start))
    return statistics.median(rates)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    args = parser.parse_args()

    if _native.BUILD_PROFILE != "release":
        print(f"WARNING: jitrs._native is a {_native.BUILD_PROFILE} build; these timings mean nothing.")
    print(f"machine: {cpu_model()}, {os.cpu_count()} logical cores; Pillow {PIL.__version__}; one thread each")
    images = sample_images()
    print(f"{len(images)} images: " + ", ".join(f"{a.shape[1]}x{a.shape[0]}" for a in images))

    columns = ["size", "Pillow img/s", "jitrs img/s", "ratio", "equal values", "max diff"]
    widths = [5, 13, 12, 6, 13, 9]
    header = " ".join(f"{name:>{width}}" for name, width in zip(columns, widths, strict=True))
    print(header)
    print("-" * len(header))
    for size in args.sizes:
        equal = total = max_diff = 0
        for arr in images:
            diff = np.abs(jitrs.center_crop(arr, size).astype(np.int16) - pillow_adm_crop(arr, size))
            equal += int(np.count_nonzero(diff == 0))
            total += diff.size
            max_diff = max(max_diff, int(diff.max()))
        pillow = images_per_second(pillow_adm_crop, images, size, args.rounds)
        ours = images_per_second(jitrs.center_crop, images, size, args.rounds)
        ratio = f"{ours / pillow:.2f}x"
        print(f"{size:>5} {pillow:>13.1f} {ours:>12.1f} {ratio:>6} {equal / total:>13.4%} {max_diff:>9}")


if __name__ == "__main__":
    main()
