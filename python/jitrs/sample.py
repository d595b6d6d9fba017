"""The sampling job behind `jitrs sample`: class-balanced labels, per-image noise, resumable PNG/NPZ output.

Image i is fully determined by (settings, i): its label comes from the class-balanced list and its initial
noise from a generator seeded with (seed, i), so the same N images come out whatever the batch size, the
number of processes, or how often the job was interrupted and resumed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import re
import shutil
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
import torch.distributed as dist
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.text import Text

import jitrs
from jitrs import adm_npz
from jitrs.atomic import atomic_path, atomic_write_text, writable_dir
from jitrs.device import setup_distributed
from jitrs.ema_keys import check_ema_spec
from jitrs.errors import UserError
from jitrs.flow import Flow, Method
from jitrs.grid import image_grid
from jitrs.paper import SAMPLE_STEPS
from jitrs.rundir import DirLock, resolve_checkpoint

if TYPE_CHECKING:
    from jitrs.scoring import Scorer

# CFG scales of the released official results (reference table); other models default to no guidance.
OFFICIAL_CFG = {"JiT-B/16": 3.0, "JiT-B/32": 3.0, "JiT-L/16": 2.4, "JiT-L/32": 2.5, "JiT-H/16": 2.2, "JiT-H/32": 2.3}
FORMATS = ("png", "npz", "both")
MANIFEST = "manifest.json"
PARTS_DIR = ".parts"  # npz output in progress: one file per finished batch, merged into one npz at the end
GRID_PATH = Path("preview") / "grid.png"  # in a subfolder so sample-folder evaluation never counts it
GRID_IMAGES = 64
# Bumped whenever a change to the sampler would change the pixels of an image with the same settings.
SAMPLER_VERSION = 1


@dataclass(frozen=True)
class SampleOptions:
    """What the user asked for; None means "take it from the checkpoint / the paper's default"."""

    ckpt: Path
    out: Path
    n: int
    ema: str | None = None
    method: str = "heun"
    steps: int | None = None
    cfg: float | None = None
    interval: tuple[float, float] = (0.1, 1.0)
    batch_size: int = 64
    seed: int = 0
    classes: tuple[int, ...] | None = None
    format: str = "png"
    compile: bool | None = None
    device: str | None = None


@dataclass(frozen=True)
class Settings:
    """Everything that decides the pixels of image i; its hash guards a directory against mixed runs."""

    checkpoint: str
    checkpoint_bytes: int
    checkpoint_mtime_ns: int
    ema: str
    n: int
    classes: list[int]
    method: str
    steps: int
    cfg: float
    interval: list[float]
    seed: int
    resolution: int
    noise_scale: float
    t_eps: float
    pred: str
    num_classes: int
    precision: str
    sampler_version: int = SAMPLER_VERSION
    formats: list[str] = field(default_factory=list, compare=False)

    def digest(self) -> str:
        d = asdict(self)
        d.pop("formats")  # the same images may be stored in more formats later
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------- pure helpers
def balanced_labels(n: int, classes: Sequence[int]) -> np.ndarray:
    """(n,) int64: class-sorted, n // C images per class and one more for the first n % C classes."""
    per, extra = divmod(n, len(classes))
    counts = [per + (1 if k < extra else 0) for k in range(len(classes))]
    return np.repeat(np.asarray(classes, dtype=np.int64), counts)


def image_seed(seed: int, index: int) -> int:
    """A 64-bit generator seed for image `index` of a run with `seed`, well mixed so runs never share noise."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0])


def image_noise(seed: int, indices: Sequence[int], shape: tuple[int, ...]) -> torch.Tensor:
    """(B, *shape) float32 N(0, I) on the CPU; row k depends only on (seed, indices[k])."""
    out = torch.empty((len(indices), *shape), dtype=torch.float32)
    g = torch.Generator()
    for k, i in enumerate(indices):
        g.manual_seed(image_seed(seed, i))
        torch.randn(shape, generator=g, out=out[k])
    return out


def to_pixels(z: torch.Tensor) -> torch.Tensor:
    """Sampler output (B, 3, H, W) float in [-1, 1] -> (B, H, W, 3) uint8, round(clip((z+1)/2, 0, 1)·255)."""
    return ((z.float() + 1) / 2).clamp_(0, 1).mul_(255).round_().to(torch.uint8).permute(0, 2, 3, 1)


PNG_RE = re.compile(r"^\d{6,}\.png$")


def png_name(index: int) -> str:
    return f"{index:06d}.png"


def npz_name(n: int, res: int) -> str:
    """ADM's naming of a sample batch: samples_50000x256x256x3.npz."""
    return f"samples_{n}x{res}x{res}x3.npz"


# ---------------------------------------------------------------------------------------------- output store
class SampleStore:
    """The output directory: which images are complete, and writing/merging them.

    PNGs are complete once they exist (each is written atomically). NPZ output goes through per-batch part files
    (also atomic) that `finish` streams into one ADM-format npz, so it survives interruption too.
    """

    def __init__(self, out: Path, settings: Settings) -> None:
        self.out, self.settings = out, settings
        self.png = "png" in settings.formats
        self.npz = "npz" in settings.formats
        self.parts = out / PARTS_DIR
        self.npz_path = out / npz_name(settings.n, settings.resolution)

    def missing(self) -> list[int]:
        """Indices of images not yet complete in every requested format, ascending."""
        n = self.settings.n
        done = np.ones(n, dtype=bool)
        if self.png:
            names = set(os.listdir(self.out))
            done &= np.fromiter((png_name(i) in names for i in range(n)), dtype=bool, count=n)
        if self.npz and not self.npz_path.exists():
            in_parts = np.zeros(n, dtype=bool)
            for part in self._part_files():
                in_parts[self._part_indices(part)] = True
            done &= in_parts
        return np.flatnonzero(~done).tolist()

    def remove_stale_temps(self) -> None:
        """Delete the temp files of writes that a killed run left behind (hidden, so never counted as images)."""
        stale = [*self.out.glob(".*.png.*.tmp"), *self.out.glob("*.tmp")]
        if self.parts.is_dir():
            stale += self.parts.glob("*.tmp")
        for path in stale:
            path.unlink(missing_ok=True)

    def _part_files(self) -> list[Path]:
        return sorted(self.parts.glob("*.npz")) if self.parts.is_dir() else []

    @staticmethod
    def _part_indices(part: Path) -> np.ndarray:
        with np.load(part) as f:
            return f["index"]

    def write(self, indices: Sequence[int], images: np.ndarray) -> None:
        """Store (B, H, W, 3) uint8 images for `indices`; each file appears whole or not at all."""
        if self.png:
            jitrs.write_pngs(images, [str(self.out / png_name(i)) for i in indices])
        if self.npz:
            self.parts.mkdir(exist_ok=True)
            final = self.parts / f"{indices[0]:06d}-{len(indices)}-{os.getpid()}.npz"
            with atomic_path(final) as tmp, open(tmp, "wb") as f:
                np.savez(f, index=np.asarray(indices, dtype=np.int64), images=images)

    def finish(self) -> None:
        """Merge the npz parts into one npz (arr_0 uint8 (N, H, W, 3) + labels) and write the preview grid."""
        first = self.first_images(min(self.settings.n, GRID_IMAGES))
        if self.npz and not self.npz_path.exists():
            s = self.settings
            shape = (s.n, s.resolution, s.resolution, 3)
            adm_npz.write(self.npz_path, shape, self._images_from_parts(), balanced_labels(s.n, s.classes))
            shutil.rmtree(self.parts)  # with any temp file of a write that was killed
        grid_path = self.out / GRID_PATH
        grid_path.parent.mkdir(exist_ok=True)
        jitrs.write_pngs(image_grid(first, cols=8)[None], [str(grid_path)])

    def read(self, indices: Sequence[int], batch: int) -> Iterator[tuple[list[int], np.ndarray]]:
        """(indices, (B, H, W, 3) uint8) batches of the stored images of `indices` (complete ones, ascending)."""
        if self.png:
            for start in range(0, len(indices), batch):
                idx = list(indices[start : start + batch])
                yield idx, jitrs.load_batch([str(self.out / png_name(i)) for i in idx], self.settings.resolution)
            return
        wanted = set(indices)
        stream = (
            (img[0] for img in adm_npz.read_images(self.npz_path, 1))
            if self.npz_path.exists()
            else (img[0] for img in self._images_from_parts())
        )
        idx, images = [], []
        for i, image in enumerate(stream):
            if i in wanted:
                idx.append(i)
                images.append(image)
            if len(idx) == batch or (idx and i == indices[-1]):
                yield idx, np.stack(images)
                idx, images = [], []
            if i == indices[-1]:
                return

    def first_images(self, count: int) -> np.ndarray:
        """(count, H, W, 3) uint8: images 0..count-1, from the PNGs, the finished npz or the npz parts."""
        if self.png:
            return np.stack([jitrs.decode(str(self.out / png_name(i))) for i in range(count)])
        if self.npz_path.exists():
            return next(adm_npz.read_images(self.npz_path, count, limit=count))
        return np.concatenate([img for img, _ in zip(self._images_from_parts(), range(count), strict=False)])

    def _images_from_parts(self) -> Iterator[np.ndarray]:
        """Images 0..N-1 in order, one (1, H, W, 3) uint8 array at a time, loading one part file at a time."""
        location: dict[int, tuple[Path, int]] = {}
        for part in self._part_files():
            for row, i in enumerate(self._part_indices(part).tolist()):
                location[i] = (part, row)
        loaded: Path | None = None
        images = np.empty(0, dtype=np.uint8)
        for i in range(self.settings.n):
            part, row = location[i]
            if part != loaded:
                with np.load(part) as f:
                    loaded, images = part, f["images"]
            yield images[row : row + 1]


class _Writer:
    """A background thread that stores finished batches; the bounded queue stops sampling running far ahead."""

    def __init__(self, store: SampleStore, depth: int = 2) -> None:
        self.store = store
        self.queue: queue.Queue[tuple[list[int], torch.Tensor, Any] | None] = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="jitrs-sample-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (item := self.queue.get()) is not None:
            if self.error is not None:
                continue  # drain so the producer never blocks on a dead writer
            indices, images, ready = item
            try:
                if ready is not None:
                    ready.synchronize()  # the device-to-host copy was queued asynchronously
                self.store.write(indices, images.numpy())
            except BaseException as e:
                self.error = e

    def put(self, indices: list[int], images: torch.Tensor, ready: Any) -> None:
        self._check()
        self.queue.put((indices, images, ready))

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        self._check()

    def _check(self) -> None:
        if self.error is not None:
            raise self.error


class _Speed(ProgressColumn):
    def render(self, task: Any) -> Text:
        return Text(f"{task.speed:.2f} img/s" if task.speed else "-- img/s", style="cyan")


# ---------------------------------------------------------------------------------------------- the job
def check_options(opt: SampleOptions) -> None:
    if opt.n <= 0:
        raise UserError(f"--n must be a positive number of images, got {opt.n}")
    check_ema_spec(opt.ema)
    if opt.method not in ("heun", "euler"):
        raise UserError(f"--method must be heun or euler, got {opt.method!r}")
    if opt.steps is not None and opt.steps < 1:
        raise UserError(f"--steps must be >= 1, got {opt.steps}")
    if opt.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {opt.batch_size}")
    if opt.format not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {opt.format!r}")
    lo, hi = opt.interval
    if not 0.0 <= lo < hi <= 1.0:
        raise UserError(f"--interval-min/--interval-max must satisfy 0 <= min < max <= 1, got ({lo}, {hi})")
    if opt.cfg is not None and opt.cfg < 0:
        raise UserError(f"--cfg must be >= 0, got {opt.cfg}")
    if opt.classes is not None and len(opt.classes) == 0:
        raise UserError("--classes is empty: give class indices such as 0,1,207")
    if not 0 <= opt.seed < 2**63:
        raise UserError(f"--seed must be in [0, 2^63), got {opt.seed}")


def _check_manifest(out: Path, settings: Settings) -> None:
    """Refuse to add images to a directory that holds images of different settings."""
    path = out / MANIFEST
    if not path.exists():
        strays = sorted(p.name for p in out.iterdir() if PNG_RE.match(p.name) or p.name == PARTS_DIR)
        if strays:  # images no manifest vouches for would be adopted into the set (and into its FID)
            raise UserError(
                f"holds {strays[0]} and {len(strays) - 1} other sample file(s) but no {MANIFEST}: they may come from "
                "another job; use an empty directory",
                param="out",
                value=out,
            )
        return
    try:
        old = json.loads(path.read_text())
        old_settings = old["settings"]
        old_digest = old["digest"]
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"--out {out}: {MANIFEST} is unreadable; use a new directory") from None
    if old_digest != settings.digest():
        new = asdict(settings)
        changed = sorted(k for k in new if k != "formats" and old_settings.get(k) != new[k])
        what = ", ".join(f"{k} {old_settings.get(k)!r} -> {new[k]!r}" for k in changed) or "sampler version"
        raise UserError(
            f"--out {out} holds samples made with other settings ({what}); use a new directory or the same settings"
        )


def _write_manifest(out: Path, settings: Settings) -> None:
    path = out / MANIFEST
    atomic_write_text(path, json.dumps({"digest": settings.digest(), "settings": asdict(settings)}, indent=2) + "\n")


def _barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def sampler_defaults(opt: SampleOptions, ckpt: jitrs.Checkpoint) -> tuple[float, int]:
    """(guidance scale, steps): the options given, else the published scale of an official model and the paper's
    steps, else what the run's own sample grids used (its --sample-cfg and --sample-steps), else no guidance."""
    run = ckpt.raw.get("train_config") or {}
    official = OFFICIAL_CFG.get(ckpt.name or "")
    cfg = opt.cfg if opt.cfg is not None else official if official is not None else run.get("sample_cfg", 1.0)
    steps = opt.steps if opt.steps is not None else SAMPLE_STEPS if official is not None else run.get("sample_steps")
    return float(cfg), int(steps or SAMPLE_STEPS)


def checkpoint_flow(path: Path, stored: dict[str, Any], noise_scale: float) -> Flow:
    """The sampler of the checkpoint's training: its noise scale, t_eps and prediction target."""
    try:
        return Flow.from_dict(stored, noise_scale=noise_scale)
    except ValueError as e:
        raise UserError(f"--ckpt {path}: its flow settings cannot sample ({e})") from None


def my_batches(missing: Sequence[int], batch_size: int, rank: int, world: int) -> Iterator[list[int]]:
    """Batches of this rank: the missing indices cut into batches, dealt round-robin to the ranks."""
    for b, start in enumerate(range(0, len(missing), batch_size)):
        if b % world == rank:
            yield list(missing[start : start + batch_size])


def sample(opt: SampleOptions, console: Console | None = None, scorer: Scorer | None = None) -> Path | None:
    """Run the whole job (every rank calls this under torchrun).

    With a `scorer`, every image is also added to it: each new one from the very pixels written, each one a
    resumed job finds already done as read back from its file (the same uint8 pixels). Returns, on rank 0, what
    to evaluate: the PNG folder, or the npz file when only npz was asked; None elsewhere.
    """
    check_options(opt)
    ckpt_path = resolve_checkpoint(opt.ckpt, "ckpt")
    writable_dir(opt.out)
    # The ranks only ever wait for each other (barriers), never exchange tensors: gloo does it on any device.
    d = setup_distributed(opt.device, backend="gloo")
    rank, world, device = d.rank, d.world, d.device
    console = console or Console(stderr=True, quiet=rank != 0)

    def say(text: str) -> None:
        console.print(text, markup=False, highlight=False, soft_wrap=True)  # paths and names are text, never markup

    ckpt = jitrs.load_checkpoint(ckpt_path)
    config = ckpt.config
    num_classes, res = int(config["num_classes"]), int(config["input_size"])
    classes = list(range(num_classes)) if opt.classes is None else sorted(set(opt.classes))
    bad = [c for c in classes if not 0 <= c < num_classes]
    if bad:
        raise UserError(f"--classes {bad[0]} is out of range: {ckpt_path} has classes 0..{num_classes - 1}")
    if scorer is not None:
        from jitrs.scoring import check_reference

        check_reference(scorer.reference, scorer.metrics, res)  # before any image is made
    weights = ckpt.select(opt.ema)
    cfg, steps = sampler_defaults(opt, ckpt)
    flow = checkpoint_flow(ckpt_path, ckpt.flow, ckpt.noise_scale)
    # Built before anything is written, so a checkpoint whose weights do not fit its config leaves no trace.
    net = ckpt.build(ema=weights, device=device).eval()
    stat = ckpt_path.stat()
    settings = Settings(
        checkpoint=str(ckpt_path.resolve()),
        checkpoint_bytes=stat.st_size,
        checkpoint_mtime_ns=stat.st_mtime_ns,
        ema=weights,
        n=opt.n,
        classes=classes,
        method=opt.method,
        steps=steps,
        cfg=float(cfg),
        interval=[float(v) for v in opt.interval],
        seed=opt.seed,
        resolution=res,
        noise_scale=flow.noise_scale,
        t_eps=flow.t_eps,
        pred=flow.pred,
        num_classes=num_classes,
        precision="bf16" if device.type == "cuda" else "fp32",
        formats=["png", "npz"] if opt.format == "both" else [opt.format],
    )
    # Rank 0 holds the output directory for the whole job: a second job on it is refused.
    with DirLock(opt.out) if rank == 0 else contextlib.nullcontext() as lock:
        if lock is not None and lock.took_over:
            say(f"took over the lock of {lock.took_over}, which is no longer running")
        _check_manifest(opt.out, settings)
        store = SampleStore(opt.out, settings)
        if rank == 0:
            store.remove_stale_temps()
        missing = store.missing()
        _barrier(world)  # every rank has listed the directory before anyone writes to it
        if rank == 0:
            _write_manifest(opt.out, settings)
            per, extra = divmod(opt.n, len(classes))
            say(
                f"{ckpt.name or 'JiT'} at {res} px from {ckpt_path} ({weights}), {len(classes)} classes, "
                f"{opt.method} {steps} steps, cfg {cfg:g} on ({opt.interval[0]:g}, {opt.interval[1]:g}), "
                f"seed {opt.seed}, {world} process(es) on {device.type}"
            )
            if extra:
                say(
                    f"{opt.n} is not a multiple of {len(classes)} classes: the first {extra} classes get {per + 1} "
                    f"image{'s' * (per > 0)}, the others {per}"
                )
            say(f"{opt.n - len(missing)} of {opt.n} images already in {opt.out}; sampling {len(missing)}")

        if scorer is not None:
            done = sorted(set(range(opt.n)) - set(missing))
            mine = [i for idx in my_batches(done, opt.batch_size, rank, world) for i in idx]
            for idx, images in store.read(mine, opt.batch_size) if mine else ():
                scorer.add(images, idx)
        if missing:
            use_compile = opt.compile if opt.compile is not None else device.type == "cuda"
            model = torch.compile(net) if use_compile else net
            _sample_missing(model, flow, store, settings, missing, opt.batch_size, device, rank, world, console, scorer)
        _barrier(world)
        if rank == 0:
            store.finish()
            say(f"wrote {opt.n} images to {opt.out} (preview: {opt.out / GRID_PATH})")
            return opt.out if store.png else store.npz_path
    return None


def generate(
    model: Any,
    flow: Flow,
    batches: Iterable[list[int]],
    labels: np.ndarray,
    *,
    seed: int,
    steps: int,
    method: str = "heun",
    cfg: float = 1.0,
    interval: tuple[float, float] = (0.1, 1.0),
    device: torch.device,
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """(indices, (B, H, W, 3) uint8 pixels on `device`) for each batch of image indices: image i from labels[i]
    and the noise of (seed, i), so the pixels do not depend on the batching. Draws nothing from the global RNG.
    `model` is the network (or its torch.compile); it must be in eval mode."""
    all_labels = torch.from_numpy(labels)
    shape = (model.in_channels, model.input_size, model.input_size)
    net_dtype = torch.bfloat16 if device.type == "cuda" else None
    solver = cast(Method, method)  # a user's string: Flow.sample refuses any other
    for idx in batches:
        noise = image_noise(seed, idx, shape).to(device, non_blocking=True)
        y = all_labels[idx].to(device, non_blocking=True)
        z = flow.sample(
            model, y, steps=steps, method=solver, cfg=cfg, interval=interval, noise=noise, net_dtype=net_dtype
        )
        yield idx, to_pixels(z)


def _sample_missing(
    model: Any,
    flow: Flow,
    store: SampleStore,
    s: Settings,
    missing: list[int],
    batch_size: int,
    device: torch.device,
    rank: int,
    world: int,
    console: Console,
    scorer: Scorer | None,
) -> None:
    batches = list(my_batches(missing, batch_size, rank, world))
    writer = _Writer(store)
    progress = Progress(
        TextColumn(f"sampling{f' (rank 0 of {world})' if world > 1 else ''}"),
        BarColumn(),
        MofNCompleteColumn(),
        _Speed(),
        TimeRemainingColumn(),
        console=console,
        disable=rank != 0,
    )
    try:
        with progress:
            task = progress.add_task("sample", total=sum(len(b) for b in batches))
            pixel_batches = generate(
                model,
                flow,
                batches,
                balanced_labels(s.n, s.classes),
                seed=s.seed,
                steps=s.steps,
                method=s.method,
                cfg=s.cfg,
                interval=(s.interval[0], s.interval[1]),
                device=device,
            )
            for idx, pixels in pixel_batches:
                if scorer is not None:
                    scorer.add(pixels, idx)  # the very pixels written below
                if device.type == "cuda":
                    host = torch.empty(pixels.shape, dtype=torch.uint8, pin_memory=True)
                    host.copy_(pixels, non_blocking=True)
                    ready = torch.cuda.Event()
                    ready.record(torch.cuda.current_stream(device))  # the stream the copy was queued on
                else:
                    host, ready = pixels.contiguous(), None
                writer.put(idx, host, ready)
                progress.advance(task, len(idx))
    finally:
        writer.close()
