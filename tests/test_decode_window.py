"""load_batch's partial JPEG decode (only the window the ADM crop reads) is bit-exact: every crop equals the
crop of the full decode, `center_crop(decode(...))`, on every value, and equals `partial_decode=False`.

The window-level check (every pixel the crop reads equals the full decode's, for every subsampling libjpeg-turbo
writes, including 4:4:0, 4:1:1 and 4:4:1, and every 1-pixel band near the edges) is `cargo test`'s
`decode::tests::a_window_holds_the_full_decodes_pixels_where_needed`; here whole crops, as users get them.
"""

from __future__ import annotations

import io
import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import jitrs


def jpeg(im: Image.Image, **options: object) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, "JPEG", **options)
    return buffer.getvalue()


def assert_windowed_crops_exact(sources: list[bytes | Path], size: int, labels: list[str]) -> None:
    """load_batch (windowed, flipped every other image) equals the crops of the full decode exactly."""
    flips = [i % 2 == 1 for i in range(len(sources))]
    windowed = jitrs.load_batch(sources, size, flip=flips, threads=2)
    full = jitrs.load_batch(sources, size, flip=flips, threads=2, partial_decode=False)
    for got, source, flip, label, whole in zip(windowed, sources, flips, labels, full, strict=True):
        expected = jitrs.center_crop(jitrs.decode(source), size, flip=flip)
        np.testing.assert_array_equal(got, expected, err_msg=f"{label} at {size} px, flip {flip}")
        np.testing.assert_array_equal(whole, expected, err_msg=f"{label} full decode at {size} px")


@pytest.fixture(scope="module")
def photo(real_photos: list[Path]) -> Image.Image:
    with Image.open(real_photos[0]) as im:  # china.jpg, 640x427: detail and colour everywhere
        return im.convert("RGB")


@pytest.mark.parametrize("size", [32, 100, 213, 256, 426, 427])
def test_real_photos(real_photos: list[Path], size: int) -> None:
    assert_windowed_crops_exact(list(real_photos), size, [p.name for p in real_photos])


# Landscape and portrait ImageNet shapes, 16:9, odd sizes, tiny and extreme aspect ratios.
SHAPES = [(500, 375), (375, 500), (333, 500), (1024, 683), (1280, 720), (97, 61), (61, 97), (2000, 300), (300, 2000)]


@pytest.mark.parametrize(
    ("subsampling", "progressive"), list(itertools.product(["4:4:4", "4:2:2", "4:2:0"], [False, True]))
)
def test_generated_shapes_of_every_subsampling(photo: Image.Image, subsampling: str, progressive: bool) -> None:
    images = [jpeg(photo.resize(s), quality=92, subsampling=subsampling, progressive=progressive) for s in SHAPES]
    labels = [f"{w}x{h} {subsampling} progressive={progressive}" for w, h in SHAPES]
    for size in (48, 256):
        assert_windowed_crops_exact(images, size, labels)


@pytest.mark.parametrize("subsampling", ["4:4:4", "4:2:0"])
def test_tight_windows_around_the_crop(photo: Image.Image, subsampling: str) -> None:
    # The short side equal to the crop (no resize: the window is the crop's own columns), one more, one
    # less, and 2*size and 2*size - 1 (one BOX halving or none): windows one pixel from the crop's edges.
    im = photo.resize((301, 200))
    data = [jpeg(im, quality=90, subsampling=subsampling), jpeg(im.transpose(Image.Transpose.TRANSPOSE), quality=90)]
    for size in (200, 199, 100, 101, 67, 1):
        assert_windowed_crops_exact(data, size, [f"301x200 {subsampling}", "200x301"])


def test_restart_intervals_optimized_huffman_gray_and_cmyk(photo: Image.Image) -> None:
    im = photo.resize((500, 333))
    cases = {
        "restart every 3 blocks": jpeg(im, quality=90, restart_marker_blocks=3),
        "restart every row": jpeg(im, quality=90, restart_marker_rows=1, subsampling="4:2:2"),
        "optimized Huffman": jpeg(im, quality=95, optimize=True),
        "grayscale": jpeg(im.convert("L"), quality=90),
        "grayscale progressive": jpeg(im.convert("L").transpose(Image.Transpose.TRANSPOSE), progressive=True),
        "CMYK": jpeg(im.convert("CMYK"), quality=90),
        "CMYK portrait": jpeg(im.convert("CMYK").transpose(Image.Transpose.TRANSPOSE), quality=90),
    }
    for size in (64, 256):
        assert_windowed_crops_exact(list(cases.values()), size, list(cases))
