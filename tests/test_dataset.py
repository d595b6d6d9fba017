"""The file index (layout, class order, extensions, cache) and the built-in digits dataset."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jitrs.builtin import builtin_dataset, digits_images
from jitrs.dataset import ImageIndex, build_index, image_root
from jitrs.errors import UserError


def paths(index: ImageIndex) -> list[str]:
    """An ImageFolder index's images: whole files, each source its path."""
    sources = index.sources(range(len(index)))
    assert sources == index.names(range(len(index))) and all(isinstance(s, str) for s in sources)
    return sources


def write_png(path: Path, value: int = 0, size: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(path)
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """DATA/train with classes in a non-sorted creation order, odd extensions, junk files and a nested dir."""
    root = tmp_path / "data"
    train = root / "train"
    for cls in ["n02", "n01", "B", "a"]:
        (train / cls).mkdir(parents=True)
    write_png(train / "n02" / "z.png")
    write_png(train / "n02" / "a.PNG")
    write_png(train / "n01" / "img.JPEG")
    write_png(train / "n01" / "deep" / "nested.jpg")
    write_png(train / "B" / "x.jpeg")
    write_png(train / "a" / "y.png")
    (train / "n01" / "notes.txt").write_text("not an image")
    (train / "a" / ".DS_Store").write_bytes(b"\0\1")
    (train / "a" / "data.npy").write_bytes(b"\0")
    (root / "stray.png").write_bytes(b"outside the class folders")
    return root


def test_index_layout_order_and_extensions(folder: Path) -> None:
    index = build_index(folder)
    train = (folder / "train").resolve()
    # sorted() like torchvision's ImageFolder: upper case before lower case, then files sorted within a class
    assert index.classes == ["B", "a", "n01", "n02"]
    rel = [os.path.relpath(p, train) for p in paths(index)]
    assert rel == ["B/x.jpeg", "a/y.png", "n01/deep/nested.jpg", "n01/img.JPEG", "n02/a.PNG", "n02/z.png"]
    assert index.labels.tolist() == [0, 1, 2, 2, 3, 3]
    assert index.labels.dtype == np.int64
    assert index.root == train


def test_without_train_dir_the_root_holds_the_classes(tmp_path: Path) -> None:
    write_png(tmp_path / "cat" / "1.png")
    write_png(tmp_path / "dog" / "2.png")
    index = build_index(tmp_path)
    assert index.classes == ["cat", "dog"] and len(index) == 2
    assert image_root(tmp_path) == tmp_path


def only_text(root: Path) -> Path:
    (root / "cls").mkdir()
    (root / "cls" / "a.txt").write_text("x")
    return root


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: root / "missing", "no such directory"),
        (lambda root: write_png(root / "file.png"), "not a directory"),
        (lambda root: root, "no class sub-directories"),
        (only_text, "no image files"),
    ],
)
def test_bad_data_dirs(tmp_path: Path, make, message: str) -> None:
    data = make(tmp_path)
    with pytest.raises(UserError, match=message) as caught:
        build_index(data)
    # The library names its parameter; the CLI writes it as the flag of the same name.
    assert str(caught.value).startswith(f"data={data}: ")
    assert caught.value.for_cli().startswith(f"--data {data}: ")


def test_cache_is_used_while_fresh_and_rebuilt_when_a_folder_changes(folder: Path, tmp_path: Path) -> None:
    cache = tmp_path / "run" / "index.json"
    first = build_index(folder, cache=cache)
    assert cache.is_file()
    # Tamper with the cached file list: a fresh cache is trusted as is, which proves it is read.
    payload = json.loads(cache.read_text())
    payload["files"][0] = "B/renamed-in-cache.jpeg"
    cache.write_text(json.dumps(payload))
    assert paths(build_index(folder, cache=cache))[0].endswith("renamed-in-cache.jpeg")
    # Adding an image changes its directory's mtime: the index is rebuilt from disk.
    new = write_png(folder / "train" / "a" / "new.png")
    os.utime(new.parent, ns=(1, 1))
    rebuilt = build_index(folder, cache=cache)
    assert str(new.resolve()) in paths(rebuilt) and len(rebuilt) == len(first) + 1
    assert not paths(rebuilt)[0].endswith("renamed-in-cache.jpeg")


def test_digits_images_follow_sklearn_digits() -> None:
    from sklearn.datasets import load_digits

    images, labels = digits_images()
    ref = load_digits()
    assert images.shape == (1797, 32, 32, 3) and images.dtype == np.uint8
    assert np.array_equal(labels, ref.target)
    assert (images[..., 0] == images[..., 1]).all() and (images[..., 0] == images[..., 2]).all()
    # Averaging each 4×4 block gives back (approximately) the 8×8 scan, inverted to dark ink on white.
    blocks = images[..., 0].reshape(-1, 8, 4, 8, 4).mean(axis=(2, 4))
    expected = 255 - ref.images * 255 / 16
    assert np.corrcoef(blocks.ravel(), expected.ravel())[0, 1] > 0.97
    assert np.abs(blocks - expected).mean() < 12


def test_digits_dataset_written_once_as_png_folders(tmp_path: Path) -> None:
    root = builtin_dataset("digits", tmp_path)
    assert root == tmp_path / "digits"
    assert sorted(os.listdir(tmp_path)) == ["digits"]  # no temporary directory left behind
    index = build_index(root)
    assert index.classes == [str(c) for c in range(10)] and len(index) == 1797
    images, labels = digits_images()
    for i in (0, 500, 1796):
        path = root / "train" / str(labels[i]) / f"{i:04d}.png"
        assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), images[i])
    mtime = path.stat().st_mtime_ns
    assert builtin_dataset("digits", tmp_path) == root and path.stat().st_mtime_ns == mtime  # reused, not rewritten
