"""The built-in quality score: a small CNN trained on the real digits of a built-in dataset judges samples.

A generated digit counts as right when the classifier recognises it as the class it was conditioned on; the
Fréchet distance (FD) in the classifier's penultimate features says whether the samples also *look* like real
digits — blurry class averages are recognised too, so accuracy alone proves nothing. Every score comes with its
yardsticks, measured on the same number of images: real held-out digits against the real training split
(the best a generator can do), and class-mean blobs (the same labels, each image its class's average digit).

The classifier is trained on first use (seeded, a few seconds on a CPU) on the first 80% of each class and
cached with its reference features in CACHE/<name>/classifier.safetensors; nothing is downloaded.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from jitrs.builtin import BUILTINS, builtin_dataset
from jitrs.errors import UserError
from jitrs.metrics import Stats, features_to_stats, frechet_distance

CLASSIFIER_FILE = "classifier.safetensors"
CLASSIFIER_VERSION = 2  # bump when the classifier or its training changes: cached ones are retrained
HELD_OUT = 0.2  # the last fifth of each class is held out
EPOCHS, BATCH, LR, SEED = 12, 32, 3e-3, 0
FEATURES = 128


class DigitNet(nn.Module):
    """Three 3×3 conv layers and two linear layers on a grey image in [-1, 1]; `features` is the 128-d layer."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(3), nn.Flatten(),
        )  # fmt: skip
        self.fc = nn.Linear(64 * 9, FEATURES)
        self.head = nn.Linear(FEATURES, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fc(self.conv(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@dataclass(frozen=True)
class Score:
    """Quality of n generated images, with the same measurements of real and blob images as yardsticks."""

    images: int
    accuracy: float  # fraction recognised as their conditioning class
    fd: float  # Fréchet distance to the real training split, in the classifier's features
    fd_real: float  # the same for n real held-out digits
    fd_blobs: float  # the same for n class-mean images with the samples' labels
    accuracy_blobs: float
    classifier_accuracy: float  # the classifier on every held-out real digit

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"{self.accuracy:.1%} recognised as their class, FD {self.fd:.2f} "
            f"(real digits: FD {self.fd_real:.2f}; class-mean blobs: FD {self.fd_blobs:.2f}, "
            f"{self.accuracy_blobs:.0%} recognised; the classifier scores {self.classifier_accuracy:.1%} on held-out "
            f"real digits; {self.images} images)"
        )


def split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the training split and of the held-out split: the last HELD_OUT of each class is held out."""
    train, held = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        cut = len(idx) - round(len(idx) * HELD_OUT)
        train.append(idx[:cut])
        held.append(idx[cut:])
    return np.concatenate(train), np.concatenate(held)


def to_input(images: np.ndarray, size: int) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 1, size, size) float32 grey in [-1, 1], resized (antialiased) when H != size."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float().mean(dim=3)[:, None] / 127.5 - 1.0
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x


def _shifted(x: torch.Tensor, g: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Each image moved by a random whole-pixel offset in [-max_shift, max_shift]² (background fill)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, value=float(x[:, :, 0, 0].median()))
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, n, 1), generator=g)
    rows, cols = (dy + torch.arange(h))[:, :, None], (dx + torch.arange(w))[:, None, :]
    return padded[torch.arange(n)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)


def train_classifier(x: torch.Tensor, y: torch.Tensor, num_classes: int) -> DigitNet:
    """Seeded AdamW with a cosine schedule and random shifts; deterministic up to float summation order."""
    torch.manual_seed(SEED)
    g = torch.Generator().manual_seed(SEED)
    net = DigitNet(num_classes)
    opt = torch.optim.AdamW(net.parameters(), lr=LR, weight_decay=1e-4)
    steps = EPOCHS * -(-len(x) // BATCH)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=steps, pct_start=0.15)
    for _ in range(EPOCHS):
        order = torch.randperm(len(x), generator=g)
        for start in range(0, len(x), BATCH):
            i = order[start : start + BATCH]
            loss = F.cross_entropy(net(_shifted(x[i], g)), y[i])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return net.eval()


@torch.no_grad()
def _features(net: DigitNet, x: torch.Tensor, batch: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (N, 128) float64, predicted classes (N,)) in batches."""
    feats, preds = [], []
    for start in range(0, len(x), batch):
        f = net.features(x[start : start + batch])
        feats.append(f.double())
        preds.append(net.head(f).argmax(dim=1))
    return torch.cat(feats), torch.cat(preds)


def frechet(features: torch.Tensor, stats: Stats) -> float:
    """FD between the Gaussian fitted to `features` and `stats`, by torch-fidelity's formulas (jitrs.metrics)."""
    return float(frechet_distance(features_to_stats(features), stats))


class Judge:
    """The classifier of one built-in dataset with its real reference features (see the module docstring)."""

    def __init__(self, name: str, cache_dir: Path | None = None) -> None:
        if name not in BUILTINS:
            raise UserError(f"no built-in quality score for {name!r}; the built-ins are {', '.join(BUILTINS)}")
        self.name = name
        images, labels = BUILTINS[name]()
        self.size = images.shape[1]
        self.num_classes = int(labels.max()) + 1
        train_idx, held_idx = split(labels)
        x, y = to_input(images, self.size), torch.from_numpy(labels)
        path = builtin_dataset(name, cache_dir) / CLASSIFIER_FILE
        self.net = self._load(path) or self._train_and_save(path, x[train_idx], y[train_idx])
        train_feats, _ = _features(self.net, x[train_idx])
        self.train_stats = features_to_stats(train_feats)
        self.held_x, self.held_y = x[held_idx], y[held_idx]
        self.held_feats, held_pred = _features(self.net, self.held_x)
        self.classifier_accuracy = float((held_pred == self.held_y).double().mean())
        self.class_means = torch.stack([x[train_idx][y[train_idx] == c].mean(dim=0) for c in range(self.num_classes)])

    def _load(self, path: Path) -> DigitNet | None:
        from safetensors import SafetensorError
        from safetensors.torch import load_file, safe_open

        try:
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
            if json.loads(meta.get("jitrs", "{}")).get("version") != CLASSIFIER_VERSION:
                return None
            net = DigitNet(self.num_classes)
            net.load_state_dict(load_file(str(path)), strict=True)
            return net.eval()
        except (OSError, SafetensorError, ValueError, RuntimeError):
            return None  # missing, torn or from another version: train again

    def _train_and_save(self, path: Path, x: torch.Tensor, y: torch.Tensor) -> DigitNet:
        from safetensors.torch import save_file

        from jitrs.atomic import atomic_path

        net = train_classifier(x, y, self.num_classes)
        with atomic_path(path) as tmp:
            save_file(net.state_dict(), str(tmp), metadata={"jitrs": json.dumps({"version": CLASSIFIER_VERSION})})
        return net

    def score(self, images: np.ndarray, labels: np.ndarray) -> Score:
        """Score (N, H, W, 3) uint8 samples conditioned on `labels` (N,)."""
        if len(images) != len(labels):
            raise UserError(f"{len(images)} images but {len(labels)} labels")
        if len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise UserError(f"labels must be classes 0..{self.num_classes - 1} of builtin:{self.name}")
        y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        feats, pred = _features(self.net, to_input(images, self.size))
        blob_feats, blob_pred = _features(self.net, self.class_means[y])
        real = self._real_subset(y)
        return Score(
            images=len(images),
            accuracy=float((pred == y).double().mean()),
            fd=frechet(feats, self.train_stats),
            fd_real=frechet(self.held_feats[real], self.train_stats),
            fd_blobs=frechet(blob_feats, self.train_stats),
            accuracy_blobs=float((blob_pred == y).double().mean()),
            classifier_accuracy=self.classifier_accuracy,
        )

    def _real_subset(self, y: torch.Tensor) -> torch.Tensor:
        """Held-out digits with the same class counts as y (as many as there are), so FDs compare like with like."""
        picked = []
        for c in range(self.num_classes):
            pool = torch.nonzero(self.held_y == c).flatten()
            picked.append(pool[: int((y == c).sum())])
        return torch.cat(picked)


def read_samples(path: Path, param: str = "samples") -> tuple[np.ndarray, np.ndarray]:
    """(images (N, H, W, 3) uint8, conditioning labels (N,)) of `jitrs sample` output: an npz with arr_0 and
    arr_1, or a PNG folder whose manifest.json gives the labels (the n and classes it was sampled with)."""
    import jitrs
    from jitrs import adm_npz
    from jitrs.metrics import image_files
    from jitrs.sample import MANIFEST, balanced_labels

    if path.is_dir():
        files = image_files(path, recursive=False)
        manifest = path / MANIFEST
        if not files or not manifest.is_file():
            raise UserError(f"not a `jitrs sample` folder (numbered PNGs and {MANIFEST})", param=param, value=path)
        try:
            settings = json.loads(manifest.read_text())["settings"]
            labels = balanced_labels(int(settings["n"]), [int(c) for c in settings["classes"]])
        except (OSError, ValueError, KeyError, TypeError):
            raise UserError("unreadable; sample again into a new folder", param=param, value=manifest) from None
        if len(files) != len(labels):
            raise UserError(
                f"holds {len(files)} of the {len(labels)} images; finish the sampling", param=param, value=path
            )
        size = jitrs.decode(str(files[0])).shape[0]
        return jitrs.load_batch([str(f) for f in files], size), labels
    if not path.is_file():
        raise UserError("no such file or directory", param=param, value=path)
    names = adm_npz.keys(path)
    if "arr_0" not in names or "arr_1" not in names:
        raise UserError("the npz needs images (arr_0) and their labels (arr_1)", param=param, value=path)
    images = np.concatenate(list(adm_npz.read_images(path, 1000)))
    with np.load(path) as f:
        labels = np.asarray(f["arr_1"])
    if labels.shape != (len(images),) or labels.dtype.kind not in "iu":
        raise UserError("arr_1 must hold one integer label per image", param=param, value=path)
    return images, labels.astype(np.int64)
