"""Streaming image metrics: FID, Inception Score, precision/recall and FD_DINOv2 of images as they are made.

A `Scorer` takes uint8 image batches where they are (a GPU batch straight from the sampler, or images read from
disk), runs the feature networks there and keeps only what the metrics need: for each feature space the count,
the sum and the sum of outer products of the features in float64 (the Fréchet statistics), the Inception logits
(the Inception Score splits them in image order) and, for precision/recall, the Inception features. Under
torch.distributed each rank adds its own images and `result()` combines them.

The same Scorer backs `jitrs eval` (from files), `jitrs sample --eval-ref` (the pixels it writes), `jitrs sweep`
and online evaluation in training (`score_model`), so all four give the same number for the same pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric
from torch_fidelity.metric_prc import KEY_METRIC_PRECISION, KEY_METRIC_RECALL, prc_features_to_metric

from jitrs import adm_npz
from jitrs.atomic import writable_dir
from jitrs.device import pick_device
from jitrs.errors import UserError
from jitrs.flow import Flow
from jitrs.metrics import (
    DINOV2,
    INCEPTION,
    LOGITS,
    PRC_REF_IMAGES,
    FeatureNets,
    Reference,
    Stats,
    frechet_distance,
    image_files,
    image_source,
    load_reference,
    reference_batches,
    reference_index,
    save_reference,
)

# Each metric and the feature space it is measured in.
METRICS = {"fid": INCEPTION, "is": INCEPTION, "prc": INCEPTION, "fd-dinov2": DINOV2}
DEFAULT_METRICS = ("fid", "is")
IS_SPLITS = 10  # torch-fidelity's (and the published numbers') number of Inception Score splits


def parse_metrics(metrics: str | Sequence[str]) -> tuple[str, ...]:
    """'fid,is,prc' or a sequence of names -> the names in METRICS order; UserError naming --metrics otherwise."""
    names = [m.strip() for m in (metrics.split(",") if isinstance(metrics, str) else metrics) if m.strip()]
    unknown = [m for m in names if m not in METRICS]
    if unknown or not names:
        raise UserError(
            f"{unknown[0]!r} is not a metric; choose from {', '.join(METRICS)}" if unknown else "name no metric",
            param="metrics",
            value=",".join(names) if names else None,
        )
    return tuple(m for m in METRICS if m in names)


# ---------------------------------------------------------------------------------------------- accumulation
class FeatureSums:
    """Features of a set of images: float64 moments per Fréchet space, and the rows of the `keep` features with
    their image indices (for the Inception Score and precision/recall, which need more than moments)."""

    def __init__(self, dims: dict[str, int], keep: set[str], device: torch.device) -> None:
        self.dims, self.spaces, self.keep, self.device = dims, set(dims), keep, device
        self.count = 0
        self.sums = {s: torch.zeros(d, dtype=torch.float64, device=device) for s, d in dims.items()}
        self.outer = {s: torch.zeros(d, d, dtype=torch.float64, device=device) for s, d in dims.items()}
        self.rows: dict[str, list[torch.Tensor]] = {k: [] for k in keep}
        self.indices: list[np.ndarray] = []

    def add(self, features: dict[str, torch.Tensor], indices: np.ndarray) -> None:
        for s in self.spaces:
            f = features[s].double()
            self.sums[s] += f.sum(dim=0)
            self.outer[s] += f.T @ f
        for k in self.keep:
            self.rows[k].append(features[k].float().cpu())
        self.indices.append(indices)
        self.count += len(indices)

    def combined(self) -> FeatureSums:
        """The sums over every rank (a copy when not distributed), with the kept rows in image-index order."""
        out = FeatureSums(self.dims, self.keep, self.device)
        out.count = self.count
        out.sums = {s: v.clone() for s, v in self.sums.items()}
        out.outer = {s: v.clone() for s, v in self.outer.items()}
        parts = [(self._indices(), {k: self.kept(k) for k in self.keep})]
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            on = self.device if dist.get_backend() == "nccl" else torch.device("cpu")  # gloo reduces host tensors
            count = torch.tensor([float(self.count)], dtype=torch.float64, device=on)
            dist.all_reduce(count)
            out.count = int(count.item())
            for s in self.spaces:
                d = self.dims[s]
                flat = torch.cat([out.sums[s], out.outer[s].flatten()]).to(on)
                dist.all_reduce(flat)
                out.sums[s], out.outer[s] = flat[:d].to(self.device), flat[d:].reshape(d, d).to(self.device)
            gathered: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, parts[0])
            parts = [g for g in gathered if len(g[0])]
        if parts:
            indices = np.concatenate([i for i, _ in parts])
            order = torch.from_numpy(np.argsort(indices, kind="stable"))
            out.indices = [indices[order.numpy()]]
            out.rows = {k: [torch.cat([r[k] for _, r in parts])[order]] for k in self.keep}
        return out

    def _indices(self) -> np.ndarray:
        return np.concatenate(self.indices) if self.indices else np.zeros(0, dtype=np.int64)

    def stats(self, space: str) -> Stats:
        """mu and the unbiased covariance (as numpy.cov) of the features of `space`."""
        if self.count < 2:
            raise UserError(f"Fréchet distances need at least 2 images, got {self.count}")
        n = self.count
        mu = self.sums[space] / n
        sigma = (self.outer[space] - n * torch.outer(mu, mu)) / (n - 1)
        return Stats(mu.cpu().numpy(), sigma.cpu().numpy())

    def kept(self, key: str) -> torch.Tensor:
        """The kept rows of `key`, (N, D) float32 on the CPU, in the order added (combined(): index order)."""
        return torch.cat(self.rows[key]) if self.rows[key] else torch.zeros(0, 0)


def as_nchw(images: torch.Tensor | np.ndarray, param: str = "images") -> torch.Tensor:
    """A (B, H, W, 3) uint8 batch (numpy or torch, any device) as the (B, 3, H, W) view the networks take."""
    x = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise UserError(f"expected a (B, H, W, 3) uint8 batch, got {tuple(x.shape)} {x.dtype}", param=param)
    return x.permute(0, 3, 1, 2)


# ---------------------------------------------------------------------------------------------- the scorer
class Scorer:
    """Metrics of images added batch by batch, against a reference statistics file.

    `metrics` from METRICS ("fid,is,prc,fd-dinov2"); `ref` a stats npz written by `jitrs eval --make-ref` (or an
    official/ADM mu/sigma file, FID only) or a Reference; the networks run on `device` with weights from the
    given files or $JITRS_INCEPTION_WEIGHTS / $JITRS_DINOV2_WEIGHTS (or `nets`, already loaded). With
    `resolution`, a reference of another resolution is refused here; otherwise at the first batch of another
    size. Every problem with the reference
    or the weights is a UserError raised by the constructor, before any image is made.
    """

    def __init__(
        self,
        metrics: str | Sequence[str],
        ref: Path | Reference,
        device: torch.device | str | None = None,
        *,
        inception_weights: str | Path | None = None,
        dinov2_weights: str | Path | None = None,
        resolution: int | None = None,
        batch_size: int = 100,
        nets: FeatureNets | None = None,
    ) -> None:
        self.metrics = parse_metrics(metrics)
        self.reference = ref if isinstance(ref, Reference) else _read_reference(ref)
        check_reference(self.reference, self.metrics, resolution)
        self.resolution = resolution
        self.device = device if isinstance(device, torch.device) else pick_device(device)
        self.batch_size = batch_size
        spaces = {METRICS[m] for m in self.metrics}
        self.nets = nets or FeatureNets(spaces, self.device, inception_weights, dinov2_weights)
        for space, stats in self.reference.stats.items():
            if space in spaces and space in self.nets.dims and stats.mu.shape[0] != self.nets.dims[space]:
                raise UserError(
                    f"holds {stats.mu.shape[0]}-dimensional {space} statistics, the network of the weights "
                    f"gives {self.nets.dims[space]}",
                    param="ref",
                    value=self.reference.path,
                )
        self.reset()

    def reset(self) -> None:
        """Forget the images added so far (the networks and the reference stay loaded)."""
        spaces = {METRICS[m] for m in self.metrics if m not in ("is", "prc")}
        keep = ({LOGITS} if "is" in self.metrics else set()) | ({INCEPTION} if "prc" in self.metrics else set())
        self.sums = FeatureSums({s: self.nets.dims[s] for s in spaces}, keep, self.device)
        self._next = 0

    @torch.no_grad()
    def add(self, images: torch.Tensor | np.ndarray, indices: Sequence[int] | None = None) -> None:
        """Add a (B, H, W, 3) uint8 batch (NHWC, as `jitrs sample` and the image loaders produce it) from any
        device. `indices` are the images' numbers (default: the order of addition); the Inception Score takes
        the images in this order, so pass them when the batches come out of order or from several ranks."""
        x = as_nchw(images)
        size = x.shape[-1]
        ref_res = self.reference.resolution
        if ref_res is not None and (x.shape[-2], size) != (ref_res, ref_res):
            raise UserError(
                f"holds statistics of {ref_res} px images but the images are {x.shape[-2]}x{size}",
                param="ref",
                value=self.reference.path,
            )
        idx = np.arange(self._next, self._next + len(x)) if indices is None else np.asarray(indices, dtype=np.int64)
        self._next += len(x)
        for start in range(0, len(x), self.batch_size):
            chunk = x[start : start + self.batch_size].to(self.device, non_blocking=True)
            self.sums.add(self.nets(chunk), idx[start : start + self.batch_size])

    @property
    def count(self) -> int:
        """Images added on this rank."""
        return self.sums.count

    def result(self) -> dict[str, float]:
        """The metrics of every image added (on every rank, when torch.distributed is initialised: every rank
        must call it). Keys: images, fid, inception_score, inception_score_std, precision, recall, fd_dinov2."""
        return metric_values(self.sums.combined(), self.reference, self.metrics, self.device)


def _read_reference(path: Path) -> Reference:
    if not path.exists():
        raise UserError("no such file", param="ref", value=path)
    ref = load_reference(path) if path.is_file() else None
    if ref is None:
        raise UserError(
            "holds no reference statistics; make them with `jitrs eval --make-ref DATA --out STATS.npz`",
            param="ref",
            value=path,
        )
    return ref


def check_reference(ref: Reference, metrics: Sequence[str], resolution: int | None) -> None:
    """UserError unless `ref` has what each metric needs, at `resolution` when both are known."""
    remake = f"make one with `jitrs eval --make-ref DATA --metrics {','.join(metrics)}`"
    for m in metrics:
        if m == "is":
            continue  # needs no reference
        if m == "prc" and ref.prc_features is None:
            raise UserError(f"holds no reference features for precision/recall; {remake}", param="ref", value=ref.path)
        space = METRICS[m]
        if m != "prc" and space not in ref.stats:
            held = ", ".join(sorted(ref.stats)) or "none"
            raise UserError(
                f"holds no {space} statistics for {m} (it holds: {held}); {remake}", param="ref", value=ref.path
            )
    if resolution is not None and ref.resolution is not None and ref.resolution != resolution:
        raise UserError(
            f"holds statistics of {ref.resolution} px images but the samples are {resolution} px; "
            f"make one with `jitrs eval --make-ref DATA --res {resolution}`",
            param="ref",
            value=ref.path,
        )


def metric_values(sums: FeatureSums, ref: Reference, metrics: Sequence[str], device: torch.device) -> dict[str, float]:
    """The metrics of accumulated (combined) sums against `ref`, by torch-fidelity's formulas."""
    if sums.count == 0:
        raise UserError("no images to evaluate")
    out: dict[str, float] = {"images": float(sums.count)}
    if "fid" in metrics:
        out["fid"] = frechet_distance(sums.stats(INCEPTION), ref.stats[INCEPTION])
    if "is" in metrics:
        logits = sums.kept(LOGITS)
        isc = isc_features_to_metric(logits, splits=min(IS_SPLITS, len(logits)))
        out["inception_score"], out["inception_score_std"] = isc[KEY_METRIC_ISC_MEAN], isc[KEY_METRIC_ISC_STD]
    if "prc" in metrics:
        assert ref.prc_features is not None  # check_reference
        fake, real = sums.kept(INCEPTION).to(device), ref.prc_features.to(device)
        prc = prc_features_to_metric(fake, real, save_cpu_ram=True, verbose=False)
        out["precision"], out["recall"] = prc[KEY_METRIC_PRECISION], prc[KEY_METRIC_RECALL]
    if "fd-dinov2" in metrics:
        out["fd_dinov2"] = frechet_distance(sums.stats(DINOV2), ref.stats[DINOV2])
    return out


# ---------------------------------------------------------------------------------------------- a model's samples
def score_model(
    model: Any,
    flow: Flow,
    scorer: Scorer,
    n: int,
    classes: Sequence[int],
    *,
    steps: int,
    method: str = "heun",
    cfg: float = 1.0,
    interval: tuple[float, float] = (0.1, 1.0),
    seed: int = 0,
    batch_size: int = 64,
    device: torch.device | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """Generate n class-balanced images of `classes` exactly as `jitrs sample` does with these settings (the
    same labels, the same per-image noise of (seed, i): the same pixels), score them and return
    `scorer.result()`. Under torch.distributed each rank makes its share. The noise comes from generators seeded
    per image, so the global RNG is not touched; `model` must be in eval mode. `progress(k)` after each batch."""
    from jitrs.sample import balanced_labels, generate, my_batches

    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)
    device = device or next(model.parameters()).device
    scorer.reset()
    batches = my_batches(list(range(n)), batch_size, rank, world)
    labels = balanced_labels(n, classes)
    for idx, pixels in generate(
        model, flow, batches, labels, seed=seed, steps=steps, method=method, cfg=cfg, interval=interval, device=device
    ):
        scorer.add(pixels, idx)
        if progress is not None:
            progress(len(idx))
    return scorer.result()


# ---------------------------------------------------------------------------------------------- files
def _reference_from_images(
    batches: Iterator[tuple[np.ndarray, np.ndarray]],
    total: int,
    spaces: set[str],
    prc: bool,
    nets: FeatureNets,
    device: torch.device,
) -> tuple[FeatureSums, torch.Tensor | None]:
    """Moments of (positions, images) batches, and the Inception features of an evenly spaced subset of at
    most PRC_REF_IMAGES of the `total` positions (for precision/recall) when `prc`."""
    sums = FeatureSums({s: nets.dims[s] for s in spaces}, set(), device)
    subset = np.unique(np.linspace(0, total - 1, min(total, PRC_REF_IMAGES)).round().astype(np.int64))
    kept: list[torch.Tensor] = []
    with torch.no_grad():
        for positions, images in batches:
            feats = nets(as_nchw(images).to(device))
            sums.add(feats, positions)
            if prc:
                take = np.isin(positions, subset)
                kept.append(feats[INCEPTION][torch.from_numpy(take).to(device)].float().cpu())
    return sums, torch.cat(kept) if prc and kept else None


def evaluate(
    samples: Path,
    ref: Path,
    metrics: str | Sequence[str] = DEFAULT_METRICS,
    inception_weights: str | Path | None = None,
    dinov2_weights: str | Path | None = None,
    batch_size: int = 100,
    device: str | None = None,
) -> dict[str, float]:
    """Metrics of `samples` (folder of PNGs or npz arr_0) against `ref`: a stats npz, or reference images (an
    image npz or folder, or the arr_0 of an ADM reference batch for what its statistics lack)."""
    names = parse_metrics(metrics)
    if not ref.exists():
        raise UserError("no such file or directory", param="ref", value=ref)
    stored = load_reference(ref) if ref.is_file() else None
    has_images = ref.is_dir() or "arr_0" in adm_npz.keys(ref)
    if stored is None and not has_images:
        raise UserError("the npz holds neither reference statistics nor images (arr_0)", param="ref", value=ref)
    sample_batches, size = image_source(samples, "samples", None, batch_size)
    dev = pick_device(device)
    spaces = {METRICS[m] for m in names}
    nets = FeatureNets(spaces, dev, inception_weights, dinov2_weights)
    reference = stored or Reference(ref, {}, None, size, None)
    missing = {METRICS[m] for m in names if m not in ("is", "prc") and METRICS[m] not in reference.stats}
    need_prc = "prc" in names and reference.prc_features is None
    if (missing or need_prc) and has_images:
        ref_batches, _ = image_source(ref, "ref", size, batch_size)
        positions = _numbered(ref_batches)
        total = len(image_files(ref, recursive=False)) if ref.is_dir() else adm_npz.image_shape(ref)[0]
        sums, prc = _reference_from_images(positions, total, missing, need_prc, nets, dev)
        reference.stats |= {s: sums.stats(s) for s in missing}
        reference.prc_features = prc if need_prc else reference.prc_features
    scorer = Scorer(names, reference, dev, resolution=size, batch_size=batch_size, nets=nets)
    for images in sample_batches:
        scorer.add(images)
    return scorer.result()


def _numbered(batches: Iterator[np.ndarray]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    start = 0
    for images in batches:
        yield np.arange(start, start + len(images)), images
        start += len(images)


def make_reference(
    data: Path,
    res: int,
    out: Path,
    metrics: str | Sequence[str] = ("fid",),
    inception_weights: str | Path | None = None,
    dinov2_weights: str | Path | None = None,
    batch_size: int = 100,
    device: str | None = None,
) -> tuple[int, list[tuple[str, str]]]:
    """Write the reference statistics of every readable image under `data` (recursively, ADM center crop to
    res) to `out`: Inception mu/sigma and the precision/recall subset's features, and DINOv2 mu/sigma when
    `metrics` has fd-dinov2; with the resolution, the count and the feature spaces.

    Returns (N, the skipped images as (path, reason))."""
    names = parse_metrics(metrics)
    spaces = {INCEPTION} | {METRICS[m] for m in names}
    if not data.is_dir():
        raise UserError("not a directory of images", param="make_ref", value=data)
    if res <= 0:
        raise UserError("must be a positive image size", param="res", value=res)
    index, skipped = reference_index(data)
    if len(index) < 2:
        raise UserError(f"found {len(index)} image(s), need at least 2", param="make_ref", value=data)
    writable_dir(out.parent, value=out)  # fail now rather than after a pass over the whole data set
    dev = pick_device(device)
    nets = FeatureNets(spaces, dev, inception_weights, dinov2_weights)
    batches = reference_batches(index, res, batch_size, skipped)
    sums, prc = _reference_from_images(batches, len(index), spaces, True, nets, dev)
    if sums.count < 2:
        raise UserError(f"only {sums.count} of {len(index)} images could be read", param="make_ref", value=data)
    save_reference(out, Reference(out, {s: sums.stats(s) for s in spaces}, prc, res, sums.count))
    return sums.count, skipped
