"""FID, Inception Score and precision/recall of generated images, on torch-fidelity's Inception network.

torch-fidelity supplies the feature extractor (the TF-compatible InceptionV3 used for published FIDs) and the
metric formulas; this module only feeds it images from our formats and loads reference statistics. The weights
come from a local file only: nothing is downloaded.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3, FeatureExtractorInceptionV3
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric
from torch_fidelity.metric_prc import KEY_METRIC_PRECISION, KEY_METRIC_RECALL, prc_features_to_metric

import jitrs
from jitrs import adm_npz
from jitrs.atomic import atomic_path, writable_dir
from jitrs.dataset import Files, ImageIndex, build_index, image_root, source_kind
from jitrs.device import pick_device
from jitrs.errors import UserError

WEIGHTS_ENV = "JITRS_INCEPTION_WEIGHTS"
WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
FEATURE_DIM = 2048
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


@dataclass
class Features:
    """Inception outputs for a set of images: pool3 (N, 2048) float32 and unbiased logits (N, 1008) float32."""

    pool: torch.Tensor
    logits: torch.Tensor


@dataclass
class Stats:
    """FID statistics: mu (2048,) float64 and sigma (2048, 2048) float64."""

    mu: np.ndarray
    sigma: np.ndarray


# ---------------------------------------------------------------------------------------------- Inception
def inception_weights_path(inception_weights: str | Path | None) -> Path:
    """The weights file given, else $JITRS_INCEPTION_WEIGHTS; UserError naming what is needed."""
    given = inception_weights if inception_weights is not None else os.environ.get(WEIGHTS_ENV)
    if not given:
        raise UserError(
            f"FID/IS need the Inception weights file {WEIGHTS_FILE} (published at {URL_INCEPTION_V3}): "
            f"download it once and pass it here or set {WEIGHTS_ENV}",
            param="inception_weights",
        )
    path = Path(given)
    if not path.is_file():
        raise UserError(f"no such file (expected {WEIGHTS_FILE})", param="inception_weights", value=path)
    return path


def load_inception(weights: Path, device: torch.device | str = "cpu") -> FeatureExtractorInceptionV3:
    """torch-fidelity's InceptionV3 with weights from `weights` (never downloaded), in eval mode on `device`."""
    try:
        # Read once with weights_only so a bad or hostile file is refused before torch-fidelity unpickles it.
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(
            f"not a PyTorch weights file ({e.__class__.__name__})", param="inception_weights", value=weights
        ) from None
    if not isinstance(state, dict) or "fc.weight" not in state:
        raise UserError(f"not the Inception state dict {WEIGHTS_FILE}", param="inception_weights", value=weights)
    try:
        net = FeatureExtractorInceptionV3(
            "inception-v3-compat", ["2048", "logits_unbiased"], feature_extractor_weights_path=str(weights)
        )
    except RuntimeError as e:
        raise UserError(
            f"does not fit torch-fidelity's InceptionV3 ({e})", param="inception_weights", value=weights
        ) from None
    return net.to(device)


@torch.no_grad()
def extract(net: FeatureExtractorInceptionV3, batches: Iterator[np.ndarray], device: torch.device) -> Features:
    """Run (B, H, W, 3) uint8 batches through Inception (which resizes to 299 itself) and gather the features."""
    pools, logits = [], []
    for images in batches:
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).to(device)
        pool, logit = net(x)
        pools.append(pool.cpu())
        logits.append(logit.cpu())
    if not pools:
        raise UserError("no images to evaluate")
    return Features(torch.cat(pools), torch.cat(logits))


# ---------------------------------------------------------------------------------------------- image sources
def image_files(folder: Path, recursive: bool) -> list[Path]:
    """Image files of a folder, sorted; a sample folder's numbered PNGs only, so previews are never counted."""
    pattern = "**/*" if recursive else "*"
    files = [p for p in folder.glob(pattern) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    numbered = [p for p in files if re.fullmatch(r"\d+\.png", p.name)]
    return sorted(numbered if numbered and not recursive else files)


def folder_batches(files: list[Path], size: int, batch: int) -> Iterator[np.ndarray]:
    """(B, size, size, 3) uint8 batches of the files, ADM center-cropped by the Rust loader."""
    for start in range(0, len(files), batch):
        try:
            yield jitrs.load_batch([str(p) for p in files[start : start + batch]], size)
        except jitrs.DecodeError as e:
            raise UserError(str(e)) from None  # it names the file; a skipped image would bias the statistics


def reference_batches(index: ImageIndex, size: int, batch: int, skipped: list[tuple[str, str]]) -> Iterator[np.ndarray]:
    """As folder_batches, for a data set (files or shards): an unreadable image is skipped and appended to `skipped`
    (name, reason), as training skips it."""
    for start in range(0, len(index), batch):
        ids = range(start, min(start + batch, len(index)))
        names = index.names(ids)
        images, errors = jitrs.load_batch(index.sources(ids), size, on_error="skip", names=names)
        if errors:
            skipped.extend((names[i], reason) for i, reason in errors)
            images = np.delete(images, [i for i, _ in errors], axis=0)
        if len(images):
            yield images


def image_source(path: Path, param: str, size: int | None, batch: int) -> tuple[Iterator[np.ndarray], int]:
    """Batches of images from a sample folder or an npz with arr_0, and their size (H = W)."""
    if path.is_dir():
        files = image_files(path, recursive=False)
        if not files:
            raise UserError("the folder holds no images", param=param, value=path)
        if size is None:
            h, w, _ = jitrs.decode(str(files[0])).shape
            size = min(h, w)
        return folder_batches(files, size, batch), size
    if not path.exists():
        raise UserError("no such file or directory", param=param, value=path)
    if "arr_0" not in adm_npz.keys(path):
        raise UserError("the npz holds no images (arr_0)", param=param, value=path)
    _, h, w, _ = adm_npz.image_shape(path)
    if size is not None and (h, w) != (size, size):
        raise UserError(f"images are {h}x{w}, expected {size}x{size}", param=param, value=path)
    return adm_npz.read_images(path, batch), h


# ---------------------------------------------------------------------------------------------- statistics
def features_to_stats(features: torch.Tensor) -> Stats:
    if features.shape[0] < 2:
        raise UserError("FID needs at least 2 images")
    s = fid_features_to_statistics(features)
    return Stats(s["mu"].astype(np.float64), s["sigma"].astype(np.float64))


def load_stats(path: Path, param: str = "ref") -> Stats | None:
    """mu/sigma of a reference npz (official JiT fid_stats, ADM reference batch); None when it holds none."""
    keys = adm_npz.keys(path)
    if "mu" not in keys and "sigma" not in keys:
        return None
    with np.load(path) as f:
        if "mu" not in f or "sigma" not in f:
            raise UserError("holds only one of mu and sigma", param=param, value=path)
        mu, sigma = f["mu"], f["sigma"]
    if mu.shape != (FEATURE_DIM,) or sigma.shape != (FEATURE_DIM, FEATURE_DIM):
        raise UserError(
            f"mu {mu.shape} and sigma {sigma.shape} are not Inception pool3 statistics "
            f"(expected ({FEATURE_DIM},) and ({FEATURE_DIM}, {FEATURE_DIM}))",
            param=param,
            value=path,
        )
    return Stats(mu.astype(np.float64), sigma.astype(np.float64))


def save_stats(path: Path, stats: Stats, count: int) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, mu=stats.mu, sigma=stats.sigma, count=np.int64(count))


def frechet_distance(a: Stats, b: Stats) -> float:
    """FID between two Gaussians, by torch-fidelity's formula."""
    return fid_statistics_to_metric({"mu": a.mu, "sigma": a.sigma}, {"mu": b.mu, "sigma": b.sigma}, False)[
        KEY_METRIC_FID
    ]


# ---------------------------------------------------------------------------------------------- the jobs
def evaluate(
    samples: Path,
    ref: Path,
    weights: str | Path | None = None,
    precision_recall: bool = False,
    batch_size: int = 100,
    device: str | None = None,
) -> dict[str, float]:
    """FID and IS of `samples` (folder of PNGs or npz arr_0) against `ref` (stats npz, image npz or folder)."""
    weights_path = inception_weights_path(weights)
    if not ref.exists():
        raise UserError("no such file or directory", param="ref", value=ref)
    ref_stats = load_stats(ref) if ref.is_file() else None
    if ref.is_file() and ref_stats is None and "arr_0" not in adm_npz.keys(ref):
        raise UserError("the npz holds neither mu/sigma statistics nor images (arr_0)", param="ref", value=ref)
    if precision_recall and ref.is_file() and "arr_0" not in adm_npz.keys(ref):
        raise UserError("precision/recall need reference images, the npz holds only statistics", param="ref", value=ref)
    sample_batches, size = image_source(samples, "samples", None, batch_size)
    dev = pick_device(device)
    net = load_inception(weights_path, dev)
    fake = extract(net, sample_batches, dev)
    results: dict[str, float] = {"images": float(fake.pool.shape[0])}
    real: Features | None = None
    if ref_stats is None or precision_recall:
        ref_batches, _ = image_source(ref, "ref", size, batch_size)
        real = extract(net, ref_batches, dev)
        if ref_stats is None:
            ref_stats = features_to_stats(real.pool)
    results["fid"] = frechet_distance(features_to_stats(fake.pool), ref_stats)
    splits = min(10, fake.logits.shape[0])
    isc = isc_features_to_metric(fake.logits, splits=splits)
    results["inception_score"] = isc[KEY_METRIC_ISC_MEAN]
    results["inception_score_std"] = isc[KEY_METRIC_ISC_STD]
    if precision_recall and real is not None:
        prc = prc_features_to_metric(fake.pool, real.pool, verbose=False)
        results["precision"] = prc[KEY_METRIC_PRECISION]
        results["recall"] = prc[KEY_METRIC_RECALL]
    return results


def make_reference(
    data: Path,
    res: int,
    out: Path,
    weights: str | Path | None = None,
    batch_size: int = 100,
    device: str | None = None,
) -> tuple[int, list[tuple[str, str]]]:
    """Write mu/sigma of every readable image under `data` (recursively, ADM center crop to res) to `out`; `data`
    may also be tar or parquet shards (jitrs.dataset), whose every indexed image is used.

    Returns (N, the skipped images as (name, reason))."""
    weights_path = inception_weights_path(weights)
    if not data.is_dir():
        raise UserError("not a directory of images", param="make_ref", value=data)
    if res <= 0:
        raise UserError("must be a positive image size", param="res", value=res)
    if source_kind(image_root(data)) == "folder":
        files = [str(p) for p in image_files(data, recursive=True)]
        index, skipped = ImageIndex(data, [], np.zeros(len(files), np.int64), Files(files)), []
    else:
        index = build_index(data)
        skipped = list(index.skipped)
    if len(index) < 2:
        raise UserError(f"found {len(index)} image(s), need at least 2", param="make_ref", value=data)
    writable_dir(out.parent, value=out)  # fail now rather than after a pass over the whole data set
    dev = pick_device(device)
    indexed = len(skipped)
    feats = extract(load_inception(weights_path, dev), reference_batches(index, res, batch_size, skipped), dev)
    count = len(index) - (len(skipped) - indexed)
    if count < 2:
        raise UserError(f"only {count} of {len(index)} images could be read", param="make_ref", value=data)
    save_stats(out, features_to_stats(feats.pool), count)
    return count, skipped
