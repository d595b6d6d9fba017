"""jitrs.write_pngs vs Pillow's Image.save in a loop: images/s and file sizes, side by side.

    python benches/bench_png.py [--repeats 3]

Images are crops of the real sample photos shipped with scikit-learn and matplotlib (natural content:
PNG compression on random noise says nothing). Target: >= 3x Pillow's default save on 2 cores.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from common import best_seconds, machine, photos, warn_if_debug_build
from PIL import Image

import jitrs


def crops(size: int, count: int) -> np.ndarray:
    """`count` size×size crops at spread-out offsets; photos smaller than `size` are upscaled first."""
    rng = np.random.default_rng(size)
    sources = []
    for photo in photos():
        h, w = photo.shape[:2]
        scale = max(1.0, 1.25 * size / min(h, w))
        if scale > 1:
            resized = Image.fromarray(photo).resize((round(w * scale), round(h * scale)), Image.Resampling.BICUBIC)
            photo = np.array(resized)
        sources.append(photo)
    out = []
    for i in range(count):
        photo = sources[i % len(sources)]
        y = rng.integers(0, photo.shape[0] - size + 1)
        x = rng.integers(0, photo.shape[1] - size + 1)
        out.append(photo[y : y + size, x : x + size])
    return np.stack(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    warn_if_debug_build()
    print(f"machine: {machine()}; jitrs build: {jitrs._native.BUILD_PROFILE}")

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for size, count in [(256, 64), (512, 32)]:
            images = crops(size, count)
            paths = [out / f"{size}_{i}.png" for i in range(count)]

            def pillow(level: int | None, images=images, paths=paths) -> None:
                options = {} if level is None else {"compress_level": level}
                for image, path in zip(images, paths, strict=True):
                    Image.fromarray(image).save(path, **options)

            def ours(threads: int | None, images=images, paths=paths) -> None:
                jitrs.write_pngs(images, paths, threads=threads)

            runs = {
                "jitrs.write_pngs (all cores)": lambda: ours(None),
                "jitrs.write_pngs threads=1": lambda: ours(1),
                "Pillow save (default, level 6)": lambda: pillow(None),
                "Pillow save compress_level=1": lambda: pillow(1),
            }
            results = {}
            for name, fn in runs.items():
                seconds = best_seconds(fn, args.repeats)
                size_bytes = sum(p.stat().st_size for p in paths) / count
                for path in paths[:4]:  # every writer must produce the same pixels
                    with Image.open(path) as im:
                        assert np.array_equal(np.array(im), images[paths.index(path)])
                results[name] = (count / seconds, size_bytes)
            pillow_rate = results["Pillow save (default, level 6)"][0]
            pillow_size = results["Pillow save (default, level 6)"][1]
            for name, (rate, size_bytes) in results.items():
                rows.append((f"{size}x{size}", name, rate, rate / pillow_rate, size_bytes, size_bytes / pillow_size))

    print(f"{'size':8}  {'writer':32}  {'images/s':>9}  {'vs Pillow':>9}  ", end="")
    print(f"{'KiB/file':>9}  {'size vs Pillow':>14}")
    for size, name, rate, speedup, size_bytes, ratio in rows:
        print(f"{size:8}  {name:32}  {rate:9.1f}  {speedup:8.2f}x  {size_bytes / 1024:9.1f}  {ratio:13.2f}x")


if __name__ == "__main__":
    main()
