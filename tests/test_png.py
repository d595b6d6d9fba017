"""jitrs.write_pngs / jitrs.write_png: exact round trips through Pillow, atomic replacement, errors."""

import errno
import os
import re
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_sample_image

import jitrs
from jitrs.atomic import FILE_MODE


def read(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.array(im)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return load_sample_image("china.jpg")  # (427, 640, 3) uint8


def test_rgb_round_trip(tmp_path, photo):
    images = np.stack([photo[:256, :256], photo[100:356, 300:556], photo[-256:, -256:]])
    paths = [tmp_path / f"{i}.png" for i in range(len(images))]
    jitrs.write_pngs(images, paths)
    for path, image in zip(paths, images, strict=True):
        with Image.open(path) as im:
            assert im.format == "PNG" and im.mode == "RGB"
        np.testing.assert_array_equal(read(path), image)


@pytest.mark.parametrize("grey_shape", ["BHW", "BHW1"])
def test_grey_round_trip(tmp_path, photo, grey_shape):
    grey = photo[:64, :80].mean(axis=2).astype(np.uint8)[None].repeat(2, axis=0)
    images = grey if grey_shape == "BHW" else grey[..., None]
    paths = [str(tmp_path / f"g{i}.png") for i in range(2)]
    jitrs.write_pngs(images, paths)
    for path in paths:
        with Image.open(path) as im:
            assert im.mode == "L"
        np.testing.assert_array_equal(read(Path(path)), grey[0])


@pytest.mark.parametrize(("h", "w"), [(1, 1), (17, 513), (513, 17)])
def test_odd_sizes(tmp_path, h, w):
    rng = np.random.default_rng(h * w)
    images = rng.integers(0, 256, (2, h, w, 3), dtype=np.uint8)
    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    jitrs.write_pngs(images, paths)
    for path, image in zip(paths, images, strict=True):
        np.testing.assert_array_equal(read(path), image)
    jitrs.write_png(tmp_path / "one.png", images[0, :, :, 0])
    np.testing.assert_array_equal(read(tmp_path / "one.png"), images[0, :, :, 0])


@pytest.mark.parametrize("threads", [None, 1, 3])
def test_many_files_in_parallel(tmp_path, photo, threads):
    rng = np.random.default_rng(0)
    crops = []
    for _ in range(48):
        y, x = rng.integers(0, 427 - 64), rng.integers(0, 640 - 64)
        crops.append(photo[y : y + 64, x : x + 64])
    images = np.stack(crops)
    paths = [tmp_path / f"{i:03d}.png" for i in range(len(images))]
    jitrs.write_pngs(images, paths, threads=threads)
    assert sorted(os.listdir(tmp_path)) == [p.name for p in paths]  # no temporary files left behind
    for path, image in zip(paths, images, strict=True):
        np.testing.assert_array_equal(read(path), image)


def test_non_contiguous_images(tmp_path, photo):
    images = np.stack([photo[:32, :48], photo[32:64, :48]])[:, ::-1, ::-1]
    jitrs.write_pngs(images, [tmp_path / "a.png", tmp_path / "b.png"])
    np.testing.assert_array_equal(read(tmp_path / "a.png"), images[0])
    jitrs.write_png(tmp_path / "c.png", photo[::2, ::3])
    np.testing.assert_array_equal(read(tmp_path / "c.png"), photo[::2, ::3])


def test_existing_file_is_replaced_completely(tmp_path, photo):
    path = tmp_path / "x.png"
    path.write_bytes(b"\xff" * 2_000_000)  # larger than the new PNG: a non-truncating write would leave a tail
    jitrs.write_png(path, photo[:16, :16])
    np.testing.assert_array_equal(read(path), photo[:16, :16])
    assert path.stat().st_size < 2_000


def test_readers_never_see_a_partial_file(tmp_path, photo):
    """While a file is rewritten (GIL released), a reader only ever finds one complete version."""
    big = np.tile(photo, (3, 2, 1))  # ~2 MB of PNG: a wide window for a non-atomic writer to be caught
    versions = {"a": big, "b": np.ascontiguousarray(big[::-1])}
    encoded = {}
    for name, image in versions.items():
        jitrs.write_png(tmp_path / f"{name}.png", image)
        encoded[name] = (tmp_path / f"{name}.png").read_bytes()
    path = tmp_path / "live.png"
    jitrs.write_png(path, versions["a"])
    stop = threading.Event()
    seen: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            data = path.read_bytes()
            seen.append(next((name for name, b in encoded.items() if b == data), "torn"))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(30):
            jitrs.write_pngs(versions["ab"[i % 2]][None], [path])
    finally:
        stop.set()
        thread.join()
    assert len(seen) > 30 and "torn" not in seen
    np.testing.assert_array_equal(read(path), versions["b"])
    assert sorted(os.listdir(tmp_path)) == ["a.png", "b.png", "live.png"]


def test_missing_directory_names_the_path(tmp_path):
    target = tmp_path / "no" / "such" / "dir" / "x.png"
    with pytest.raises(FileNotFoundError, match=re.escape(str(target))):
        jitrs.write_pngs(np.zeros((1, 4, 4, 3), np.uint8), [target])


def test_failures_leave_no_temporary_file_and_report_the_first(tmp_path):
    (tmp_path / "taken").mkdir()  # a directory where a file should go: the rename fails after the write
    images = np.zeros((3, 4, 4, 3), np.uint8)
    paths = [tmp_path / "ok.png", tmp_path / "taken", tmp_path / "ok2.png"]
    with pytest.raises(OSError, match="taken"):
        jitrs.write_pngs(images, paths)
    # The other files are still written; the failed one's temporary file is gone.
    assert sorted(os.listdir(tmp_path)) == ["ok.png", "ok2.png", "taken"]
    assert os.listdir(tmp_path / "taken") == []


def test_a_path_in_a_missing_directory_mid_batch_leaves_no_partial_or_temporary_file(tmp_path):
    images = np.random.default_rng(2).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    paths = [tmp_path / "0.png", tmp_path / "1.png", tmp_path / "missing" / "2.png", tmp_path / "3.png"]
    paths.append(tmp_path / "4.png")
    with pytest.raises(FileNotFoundError) as info:
        jitrs.write_pngs(images, paths, threads=2)
    # As Python's own open() raises it: errno and filename set, the destination named, not a temporary file.
    assert info.value.errno == errno.ENOENT
    assert info.value.filename == str(paths[2])
    assert sorted(os.listdir(tmp_path)) == ["0.png", "1.png", "3.png", "4.png"]
    for path, image in zip(paths, images, strict=True):
        if path.parent == tmp_path:
            np.testing.assert_array_equal(read(path), image)


def test_files_get_the_mode_of_the_atomic_policy(tmp_path):
    jitrs.write_png(tmp_path / "one.png", np.zeros((2, 2), np.uint8))
    jitrs.write_pngs(np.zeros((1, 2, 2, 3), np.uint8), [tmp_path / "two.png"])
    for name in ["one.png", "two.png"]:
        assert (tmp_path / name).stat().st_mode & 0o777 == FILE_MODE


def test_parent_is_a_file(tmp_path):
    (tmp_path / "file").write_bytes(b"")
    target = tmp_path / "file" / "x.png"
    with pytest.raises(NotADirectoryError, match=re.escape(str(target))):
        jitrs.write_png(target, np.zeros((2, 2), np.uint8))


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores directory permissions")
def test_unwritable_directory(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        with pytest.raises(PermissionError, match="locked"):
            jitrs.write_pngs(np.zeros((1, 2, 2, 3), np.uint8), [locked / "x.png"])
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize(
    ("call", "exc", "parts"),
    [
        (
            lambda p: jitrs.write_pngs(np.zeros((2, 4, 4, 3), np.uint8), [p]),
            ValueError,
            ["2 images", "1 paths"],
        ),
        (lambda p: jitrs.write_pngs(np.zeros((1, 4, 4, 3), np.float32), [p]), TypeError, ["float32"]),
        (lambda p: jitrs.write_pngs(np.zeros((1, 4, 4, 4), np.uint8), [p]), ValueError, ["(1, 4, 4, 4)"]),
        (lambda p: jitrs.write_pngs(np.zeros((4, 4), np.uint8), [p]), ValueError, ["(4, 4)"]),
        (
            lambda p: jitrs.write_pngs(np.zeros((1, 0, 4), np.uint8), [p]),
            ValueError,
            ["(1, 0, 4)", "between 1"],
        ),
        (lambda p: jitrs.write_pngs(np.zeros((1, 4, 4), np.uint8), str(p)), TypeError, ["sequence", "str"]),
        (lambda p: jitrs.write_pngs(np.zeros((1, 4, 4), np.uint8), [3]), TypeError, ["paths[0]", "int"]),
        (lambda p: jitrs.write_pngs([[1]], [p]), TypeError, ["numpy array"]),
        (lambda p: jitrs.write_pngs(np.zeros((1, 4, 4), np.uint8), [p], threads=0), ValueError, ["threads"]),
        (lambda p: jitrs.write_png(p, np.zeros((2, 4, 4, 3), np.uint8)), ValueError, ["(2, 4, 4, 3)"]),
        (lambda p: jitrs.write_png(p, np.zeros((4, 4), np.int16)), TypeError, ["int16"]),
    ],
)
def test_bad_input(tmp_path, call, exc, parts):
    with pytest.raises(exc) as info:
        call(tmp_path / "x.png")
    for part in parts:
        assert part in str(info.value)
    assert os.listdir(tmp_path) == []
