"""The training loader vs the official pipeline: sustained images/s delivered to the training loop.

    python benches/bench_loader.py [--images 1536] [--batch 64] [--threads N] [--batches 12]

jitrs: jitrs.loader.Loader (jitrs.load_batch on background threads -> pinned ring buffers -> device, scaled to
[-1, 1] there). Baseline: torchvision ImageFolder + Pillow ADM center crop + random flip + torch DataLoader with
as many worker processes as jitrs has decode threads, pin_memory on CUDA, the same files, the same final tensor on
the same device. Files: ImageNet-like JPEGs cut from the real sample photos shipped with scikit-learn and
matplotlib (about 500×375 on average, up to ~2500 px, quality 75-95, some progressive, some grayscale; 10 class
folders), cached in the temp directory. Each side is timed over `--batches` batches after one warm-up batch (which
absorbs worker start-up). Target: >= 2.5× at 256 and 512 px.

Also timed: indexing an ImageNet-shaped tree (1000 class folders of empty *.JPEG files, `--index-files` in all)
with jitrs.dataset.build_index (a thread per class folder) vs torchvision's ImageFolder scan, then the cached
index. Target: 1.28M files in seconds.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Generator
from pathlib import Path

import torch
from common import adm_center_crop, make_image_set, usable_cores, warn_if_debug_build
from PIL import Image

from jitrs.dataset import build_index
from jitrs.loader import Loader, Plan


def baseline_batches(
    root: Path, res: int, batch: int, workers: int, device: torch.device
) -> Generator[torch.Tensor, None, None]:
    from torchvision import datasets, transforms

    transform = transforms.Compose(
        [
            transforms.Lambda(lambda img: Image.fromarray(adm_center_crop(img, res))),
            transforms.RandomHorizontalFlip(),
            transforms.PILToTensor(),
        ]
    )
    data = datasets.ImageFolder(str(root / "train"), transform=transform)
    loader = torch.utils.data.DataLoader(
        data, batch_size=batch, shuffle=True, num_workers=workers, pin_memory=device.type == "cuda", drop_last=True
    )
    while True:
        for x, _ in loader:
            yield x.to(device, non_blocking=True).float().div_(255).mul_(2).sub_(1)


def jitrs_batches(
    root: Path, res: int, batch: int, threads: int, device: torch.device
) -> Generator[torch.Tensor, None, None]:
    index = build_index(root)
    with Loader(index, res, Plan(len(index), batch), device, threads=threads) as loader:
        for b in loader:
            yield b.x


def images_per_s(batches: Generator[torch.Tensor, None, None], count: int, device: torch.device) -> float:
    first = next(batches)  # warm-up: thread/process start-up, first decode
    start = time.perf_counter()
    total = 0
    for _ in range(count):
        x = next(batches)
        total += x.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    del first
    batches.close()  # stops the loader threads / DataLoader workers now
    return total / elapsed


def index_speed(root: Path, files: int, classes: int = 1000) -> None:
    from torchvision import datasets

    for c in range(classes):
        d = root / f"n{c:08d}"
        d.mkdir(parents=True)
        for i in range(c, files, classes):
            (d / f"n{c:08d}_{i}.JPEG").touch()
    cache = root.parent / "index.json"
    for _ in os.walk(root):  # warm the kernel's directory cache, so neither side pays for the first walk
        pass
    timings = {}
    for name, scan in [
        ("jitrs build_index", lambda: len(build_index(root, cache=cache))),
        ("jitrs build_index, cached", lambda: len(build_index(root, cache=cache))),
        ("torchvision ImageFolder", lambda: len(datasets.ImageFolder(str(root)).samples)),
    ]:
        start = time.perf_counter()
        found = scan()
        timings[name] = time.perf_counter() - start
        assert found == files, (name, found)
    base = timings["torchvision ImageFolder"]
    print(f"\nindexing {files:,} files in {classes} class folders")
    print(f"{'':>26} {'seconds':>8} {'files/s':>10} {'vs ImageFolder':>15}")
    for name, t in timings.items():
        print(f"{name:>26} {t:>8.2f} {files / t:>10,.0f} {base / t:>14.1f}×")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1536)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--threads", type=int, default=usable_cores())
    parser.add_argument("--res", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--index-files", type=int, default=128_000, help="files in the indexing test (0: skip)")
    args = parser.parse_args()
    warn_if_debug_build()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    root = make_image_set(args.images).root
    print(f"{args.images} JPEGs, batch {args.batch}, {args.threads} decode threads / DataLoader workers, {device}")
    print(f"{'res':>5} {'jitrs img/s':>12} {'DataLoader img/s':>17} {'ratio':>7}")
    for res in args.res:
        ours = images_per_s(jitrs_batches(root, res, args.batch, args.threads, device), args.batches, device)
        base = images_per_s(baseline_batches(root, res, args.batch, args.threads, device), args.batches, device)
        print(f"{res:>5} {ours:>12.0f} {base:>17.0f} {ours / base:>6.2f}×", flush=True)
    if args.index_files:
        with tempfile.TemporaryDirectory() as tmp:
            index_speed(Path(tmp) / "train", args.index_files)


if __name__ == "__main__":
    main()
