"""jitrs.center_crop vs Pillow's ADM center crop: images/s on one thread, same arrays, same run.

    python benches/bench_center_crop.py [--rounds 5] [--sizes 256 512]

The images are ImageNet-like: the three sample photographs (sklearn's china/flower, matplotlib's
grace_hopper) resized with Pillow to a mix of shapes around 500x375 plus some up to 2500 px. Pillow's side
is what ADM / DiT / the official JiT run after decoding (Image.fromarray, BOX halvings, BICUBIC, crop,
np.array); both sides start from the same uint8 arrays and return a (size, size, 3) array. Each figure is
the best of --rounds passes over all images after one warm-up pass.
"""

import argparse

import numpy as np
import PIL
from common import adm_center_crop, best_seconds, machine, photos, warn_if_debug_build
from PIL import Image

import jitrs

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
    return adm_center_crop(Image.fromarray(arr), size)


def sample_images() -> list[np.ndarray]:
    sources = photos()
    return [
        np.asarray(Image.fromarray(sources[i % len(sources)]).resize(shape, Image.Resampling.BICUBIC))
        for i, shape in enumerate(SHAPES)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    args = parser.parse_args()

    warn_if_debug_build()
    print(f"machine: {machine()}; Pillow {PIL.__version__}; one thread each")
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
        pillow = len(images) / best_seconds(lambda s=size: [pillow_adm_crop(a, s) for a in images], args.rounds)
        ours = len(images) / best_seconds(lambda s=size: [jitrs.center_crop(a, s) for a in images], args.rounds)
        ratio = f"{ours / pillow:.2f}x"
        print(f"{size:>5} {pillow:>13.1f} {ours:>12.1f} {ratio:>6} {equal / total:>13.4%} {max_diff:>9}")


if __name__ == "__main__":
    main()
