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

import jitrs
from jitrs import adm_npz, dinov2
from jitrs.atomic import atomic_path
from jitrs.dataset import Files, ImageIndex, build_index, image_root, source_kind
from jitrs.errors import UserError

WEIGHTS_ENV = "JITRS_INCEPTION_WEIGHTS"
WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
DINOV2_WEIGHTS_ENV = "JITRS_DINOV2_WEIGHTS"
FEATURE_DIM = 2048
INCEPTION = "inception-v3-compat"  # torch-fidelity's name of the TF-compatible InceptionV3
DINOV2 = "dinov2-vit-l-14"  # the DINOv2 of FD_DINOv2 (Stein et al. 2023)
LOGITS = "logits"  # the Inception Score's features
STATS_KEYS = {INCEPTION: "", DINOV2: "dinov2_"}  # key prefix of each space's mu/sigma in a reference npz
# Precision/recall compare feature sets, not Gaussians: a reference file keeps the Inception features of this
# many of its images (an evenly spaced subset of the sorted files), 80 MB at most.
PRC_REF_IMAGES = 10_000
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


@dataclass
class Stats:
    """FID statistics: mu (2048,) float64 and sigma (2048, 2048) float64."""

    mu: np.ndarray
    sigma: np.ndarray


@dataclass
class Reference:
    """What a reference npz holds: Fréchet statistics per feature space, the Inception features of a subset
    for precision/recall, and the resolution and count of the images (None in files that predate them)."""

    path: Path | None
    stats: dict[str, Stats]
    prc_features: torch.Tensor | None  # (M, 2048) float32, M <= PRC_REF_IMAGES
    resolution: int | None
    count: int | None


# ---------------------------------------------------------------------------------------------- networks
def _weights_path(given: str | Path | None, param: str, env: str, file: str, url: str, purpose: str) -> Path:
    given = given if given is not None else os.environ.get(env)
    if not given:
        raise UserError(
            f"{purpose} need the weights file {file} (published at {url}): download it once and pass it here "
            f"or set {env}",
            param=param,
        )
    path = Path(given)
    if not path.is_file():
        raise UserError(f"no such file (expected {file}, published at {url})", param=param, value=path)
    return path


def inception_weights_path(inception_weights: str | Path | None) -> Path:
    """The weights file given, else $JITRS_INCEPTION_WEIGHTS; UserError naming what is needed."""
    return _weights_path(
        inception_weights, "inception_weights", WEIGHTS_ENV, WEIGHTS_FILE, URL_INCEPTION_V3, "FID/IS/precision/recall"
    )


def dinov2_weights_path(dinov2_weights: str | Path | None) -> Path:
    """The weights file given, else $JITRS_DINOV2_WEIGHTS; UserError naming what is needed."""
    return _weights_path(
        dinov2_weights, "dinov2_weights", DINOV2_WEIGHTS_ENV, dinov2.WEIGHTS_FILE, dinov2.WEIGHTS_URL, "FD_DINOv2"
    )


def _state_dict(weights: Path, param: str, file: str, key: str) -> dict[str, torch.Tensor]:
    try:
        # weights_only, so a bad or hostile file is refused before anything unpickles it.
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"not a PyTorch weights file ({e.__class__.__name__})", param=param, value=weights) from None
    if not isinstance(state, dict) or key not in state:
        raise UserError(f"not the state dict of {file}", param=param, value=weights)
    return state


def load_inception(weights: Path, device: torch.device | str = "cpu") -> FeatureExtractorInceptionV3:
    """torch-fidelity's InceptionV3 with weights from `weights` (never downloaded), in eval mode on `device`."""
    _state_dict(weights, "inception_weights", WEIGHTS_FILE, "fc.weight")
    try:
        net = FeatureExtractorInceptionV3(
            INCEPTION, ["2048", "logits_unbiased"], feature_extractor_weights_path=str(weights)
        )
    except RuntimeError as e:
        raise UserError(
            f"does not fit torch-fidelity's InceptionV3 ({e})", param="inception_weights", value=weights
        ) from None
    return net.to(device)


def load_dinov2(weights: Path, device: torch.device | str = "cpu") -> dinov2.DinoV2:
    """DINOv2 ViT-L/14 with weights from `weights` (never downloaded), in eval mode on `device`."""
    state = _state_dict(weights, "dinov2_weights", dinov2.WEIGHTS_FILE, "pos_embed")
    net = dinov2.DinoV2(*dinov2.DinoV2.shape_of(state))
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise UserError(f"is not DINOv2 ViT-L/14 weights ({first})", param="dinov2_weights", value=weights) from None
    return net.requires_grad_(False).eval().to(device)


class FeatureNets:
    """The networks of some feature spaces on one device; called on uint8 (B, 3, H, W) images (any size: each
    network resizes to its own input), they return float32 features by name: INCEPTION (B, 2048) pool3,
    LOGITS (B, 1008) unbiased Inception logits, DINOV2 (B, 1024)."""

    def __init__(
        self,
        spaces: set[str],
        device: torch.device,
        inception_weights: str | Path | None = None,
        dinov2_weights: str | Path | None = None,
    ) -> None:
        # Every path is checked before any network is built, so a missing second file is reported at once.
        paths = {INCEPTION: inception_weights_path(inception_weights)} if INCEPTION in spaces else {}
        if DINOV2 in spaces:
            paths[DINOV2] = dinov2_weights_path(dinov2_weights)
        self.inception = load_inception(paths[INCEPTION], device) if INCEPTION in paths else None
        self.dinov2 = load_dinov2(paths[DINOV2], device) if DINOV2 in paths else None
        self.dims = {INCEPTION: FEATURE_DIM} if self.inception is not None else {}
        if self.dinov2 is not None:
            self.dims[DINOV2] = self.dinov2.dim

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        if self.inception is not None:
            out[INCEPTION], out[LOGITS] = self.inception(images)
        if self.dinov2 is not None:
            out[DINOV2] = self.dinov2(images)
        return out


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


def reference_batches(
    index: ImageIndex, size: int, batch: int, skipped: list[tuple[str, str]]
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """As folder_batches, with each batch's positions in `index`, for a data set (files or shards): an unreadable
    image is skipped and appended to `skipped` (name, reason), as training skips it."""
    for start in range(0, len(index), batch):
        ids = range(start, min(start + batch, len(index)))
        names = index.names(ids)
        images, errors = jitrs.load_batch(index.sources(ids), size, on_error="skip", names=names)
        positions = np.arange(start, start + len(ids))
        if errors:
            skipped.extend((names[i], reason) for i, reason in errors)
            bad = [i for i, _ in errors]
            images, positions = np.delete(images, bad, axis=0), np.delete(positions, bad)
        if len(images):
            yield positions, images


def reference_index(data: Path) -> tuple[ImageIndex, list[tuple[str, str]]]:
    """The images of `data` for reference statistics: every image file under a folder (recursively), or every
    indexed image of tar/parquet shards (jitrs.dataset) with the members the index left out as (name, reason)."""
    if source_kind(image_root(data)) == "folder":
        files = [str(p) for p in image_files(data, recursive=True)]
        return ImageIndex(data, [], np.zeros(len(files), np.int64), Files(files)), []
    index = build_index(data)
    return index, list(index.skipped)


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


def _reference_keys(path: Path, param: str) -> set[str]:
    if not path.is_file():
        raise UserError("no such file", param=param, value=path)
    try:
        return set(adm_npz.keys(path))
    except (OSError, ValueError) as e:
        raise UserError(f"not an npz file ({e.__class__.__name__})", param=param, value=path) from None


def load_reference(path: Path, param: str = "ref") -> Reference | None:
    """The statistics of a reference npz; None when it holds none (an image npz).

    A file written by `jitrs eval --make-ref` records its feature spaces and resolution; an older one (official
    JiT fid_stats, ADM reference batch: only mu/sigma) is read as Inception statistics of unknown resolution,
    so it works for FID and the resolution is not checked."""
    keys = _reference_keys(path, param)
    if not keys & {"mu", "sigma", *STATS_KEYS.values()}:
        return None
    stats: dict[str, Stats] = {}
    with np.load(path, allow_pickle=False) as f:
        for space, prefix in STATS_KEYS.items():
            mu_key, sigma_key = f"{prefix}mu", f"{prefix}sigma"
            if (mu_key in f) != (sigma_key in f):
                raise UserError(f"holds only one of {mu_key} and {sigma_key}", param=param, value=path)
            if mu_key not in f:
                continue
            mu, sigma = f[mu_key], f[sigma_key]
            # DINOv2's width is that of the weights (1024 for ViT-L/14); the Scorer matches it to the network.
            dim = FEATURE_DIM if space == INCEPTION else mu.shape[0] if mu.ndim == 1 else -1
            if mu.shape != (dim,) or sigma.shape != (dim, dim):
                expected = f"({dim},) and ({dim}, {dim})" if space == INCEPTION else "(D,) and (D, D)"
                raise UserError(
                    f"{mu_key} {mu.shape} and {sigma_key} {sigma.shape} are not {space} statistics "
                    f"(expected {expected})",
                    param=param,
                    value=path,
                )
            stats[space] = Stats(mu.astype(np.float64), sigma.astype(np.float64))
        prc = torch.from_numpy(f["prc_features"].astype(np.float32)) if "prc_features" in f else None
        resolution = int(f["resolution"]) if "resolution" in f else None
        count = int(f["count"]) if "count" in f else None
    return Reference(path, stats, prc, resolution, count)


def save_reference(path: Path, ref: Reference) -> None:
    """Write `ref` as an npz (see load_reference), atomically."""
    arrays: dict[str, np.ndarray] = {}
    for space, s in ref.stats.items():
        arrays[f"{STATS_KEYS[space]}mu"], arrays[f"{STATS_KEYS[space]}sigma"] = s.mu, s.sigma
    if ref.prc_features is not None:
        arrays["prc_features"] = ref.prc_features.numpy().astype(np.float32)
    arrays["feature_spaces"] = np.array(sorted(ref.stats), dtype=np.str_)
    if ref.resolution is not None:
        arrays["resolution"] = np.array(ref.resolution, dtype=np.int64)
    if ref.count is not None:
        arrays["count"] = np.array(ref.count, dtype=np.int64)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, allow_pickle=False, **arrays)  # as load_reference reads it


def frechet_distance(a: Stats, b: Stats) -> float:
    """FID between two Gaussians, by torch-fidelity's formula."""
    return fid_statistics_to_metric({"mu": a.mu, "sigma": a.sigma}, {"mu": b.mu, "sigma": b.sigma}, False)[
        KEY_METRIC_FID
    ]
