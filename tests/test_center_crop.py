"""jitrs.center_crop against Pillow's ADM center crop, on real photographs and generated arrays."""

from pathlib import Path

import matplotlib
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from sklearn.datasets import load_sample_image

import jitrs


def pillow_adm_crop(arr: np.ndarray, size: int) -> np.ndarray:
    """The ADM center crop as ADM / DiT / the official JiT write it, on a (H, W, 3) uint8 array."""
    img = Image.fromarray(arr)
    while min(*img.size) >= 2 * size:
        img = img.resize(tuple(x // 2 for x in img.size), resample=Image.BOX)
    scale = size / min(*img.size)
    img = img.resize(tuple(round(x * scale) for x in img.size), resample=Image.BICUBIC)
    out = np.array(img)
    top = (out.shape[0] - size) // 2
    left = (out.shape[1] - size) // 2
    return out[top : top + size, left : left + size]


def assert_matches_pillow(arr: np.ndarray, size: int) -> None:
    want = pillow_adm_crop(np.ascontiguousarray(arr), size)
    got = jitrs.center_crop(arr, size)
    assert got.shape == (size, size, 3) and got.dtype == np.uint8
    diff = np.abs(got.astype(np.int16) - want.astype(np.int16))
    assert diff.max() == 0, f"{arr.shape} -> {size}: {np.count_nonzero(diff)} values differ, max {diff.max()}"
    flipped = jitrs.center_crop(arr, size, flip=True)
    np.testing.assert_array_equal(flipped, want[:, ::-1])


def photo(name: str) -> np.ndarray:
    if name == "grace_hopper.jpg":
        path = Path(matplotlib.get_data_path()) / "sample_data" / name
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    return load_sample_image(name)


PHOTOS = ["china.jpg", "flower.jpg", "grace_hopper.jpg"]


@pytest.mark.parametrize("name", PHOTOS)
@pytest.mark.parametrize("size", [256, 512, 64, 32, 1])
def test_photographs_match_pillow(name: str, size: int) -> None:
    assert_matches_pillow(photo(name), size)


@pytest.mark.parametrize("name", PHOTOS)
@pytest.mark.parametrize(
    "shape",
    [
        (1875, 2500),  # ImageNet's large end: two BOX steps at 256
        (2500, 1001),  # tall, odd: BOX steps from odd sizes, vertical pass first
        (333, 1000),  # wide, aspect 3
        (900, 300),  # tall, aspect 3: Pillow 13 resizes vertically first
    ],
)
@pytest.mark.parametrize("size", [256, 128])
def test_resized_photographs_match_pillow(name: str, shape: tuple[int, int], size: int) -> None:
    height, width = shape
    arr = np.asarray(Image.fromarray(photo(name)).resize((width, height), Image.BICUBIC))
    assert_matches_pillow(arr, size)


def noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def gradient(height: int, width: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], -1).astype(np.uint8)


ODD_SHAPES = [
    ((1, 1), 1),
    ((1, 1), 16),  # upscaled from a single pixel
    ((17, 513), 32),
    ((513, 17), 32),
    ((17, 513), 8),
    ((513, 17), 8),
    ((3, 2000), 2),  # very wide
    ((2000, 3), 2),  # very tall
    ((64, 64), 32),  # exactly 2*size: one BOX step, no BICUBIC
    ((64, 90), 32),
    ((63, 90), 32),  # 2*size - 1: BICUBIC only
    ((131, 140), 32),  # 4*size + 3: two BOX steps, the second from odd sizes
    ((131, 200), 32),
    ((20, 30), 64),  # smaller than size: upscaling
    ((32, 32), 32),  # already size x size
    ((32, 77), 32),  # short side already size: crop only
    ((375, 500), 256),
    ((500, 375), 256),
    ((375, 500), 512),
]


@pytest.mark.parametrize(("shape", "size"), ODD_SHAPES)
@pytest.mark.parametrize("make", [noise, gradient])
def test_generated_odd_shapes_match_pillow(shape: tuple[int, int], size: int, make) -> None:
    assert_matches_pillow(make(*shape), size)


@settings(max_examples=150, deadline=None)
@given(
    height=st.integers(1, 300),
    width=st.integers(1, 300),
    size=st.integers(1, 160),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_shapes_match_pillow(height: int, width: int, size: int, seed: int) -> None:
    assert_matches_pillow(noise(height, width, seed), size)


@pytest.mark.parametrize(
    "view",
    [
        lambda a: a[:, ::-1],
        lambda a: a[::2, 1::3],
        lambda a: a.transpose(1, 0, 2),
        lambda a: np.asfortranarray(a),
        lambda a: a[..., ::-1],
    ],
)
def test_any_strides(view) -> None:
    arr = view(photo("flower.jpg"))
    assert not arr.flags.c_contiguous
    assert_matches_pillow(arr, 100)


def test_output_is_a_new_contiguous_array_and_input_untouched() -> None:
    arr = noise(50, 70)
    before = arr.copy()
    out = jitrs.center_crop(arr, 20)
    assert out.flags.c_contiguous and out.flags.writeable
    np.testing.assert_array_equal(arr, before)
    assert not np.shares_memory(out, arr)


@pytest.mark.parametrize(
    ("img", "size", "error", "words"),
    [
        (np.zeros((10, 10), np.uint8), 4, ValueError, r"\(10, 10\)"),
        (np.zeros((10, 10, 4), np.uint8), 4, ValueError, r"\(10, 10, 4\)"),
        (np.zeros((1, 10, 10, 3), np.uint8), 4, ValueError, r"\(1, 10, 10, 3\)"),
        (np.zeros((0, 10, 3), np.uint8), 4, ValueError, r"\(0, 10, 3\)"),
        (np.zeros((10, 10, 3), np.float32), 4, TypeError, "uint8.*float32|float32.*uint8"),
        (np.zeros((10, 10, 3), np.int64), 4, TypeError, "int64"),
        ([[[0, 0, 0]]], 4, TypeError, "numpy array.*list"),
        (np.zeros((10, 10, 3), np.uint8), 0, ValueError, r"size.*0.*\(10, 10, 3\)"),
        (np.zeros((10, 10, 3), np.uint8), -3, ValueError, r"size.*-3"),
        (np.zeros((10, 10, 3), np.uint8), 8193, ValueError, "size.*8192"),
    ],
)
def test_bad_input_names_the_problem(img, size: int, error: type, words: str) -> None:
    with pytest.raises(error, match=words):
        jitrs.center_crop(img, size)


def test_size_must_be_an_integer() -> None:
    with pytest.raises(TypeError):
        jitrs.center_crop(noise(10, 10), 4.0)
