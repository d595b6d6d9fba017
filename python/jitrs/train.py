"""Train a JiT: `jitrs train` (one process, or one per GPU under torchrun). Read `train()` top to bottom.

Defaults reproduce the paper's recipe (JiT-B/16 at 256 px: AdamW (0.9, 0.95), lr = 5e-5 · global batch / 256,
5 warmup epochs then constant, bf16 autocast, EMAs 0.9999 and 0.9996, label drop 0.1).

Reproducibility: every random draw of a step (time t, noise, label drop, dropout) comes from generators seeded
with (seed, step, sub-batch), and the data order from (seed, epoch) (see jitrs.loader). So a resumed run repeats
an uninterrupted one exactly, and a global batch is trained identically whether it is split over GPUs or over
accumulation micro-steps.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

import jitrs
from jitrs import rundir
from jitrs.dataset import DIGITS_NAME, ImageIndex, build_index, digits_dataset
from jitrs.ema import EMA
from jitrs.errors import UserError
from jitrs.flow import Flow
from jitrs.loader import Loader, Plan
from jitrs.model import JiT, JiT_models
from jitrs.sample import to_pixels
from jitrs.train_cli import SCHEDULES, TrainConfig

CHECKPOINT_FORMAT, CHECKPOINT_VERSION = "jitrs", 1
CFG_INTERVAL = (0.1, 1.0)  # the paper's guidance interval, used for the sample grids
SAMPLE_ROWS, SAMPLE_COLS = 4, 10


class DivergedError(UserError):
    """The loss became NaN or inf; the run stops and keeps its last good checkpoint."""


#################################################################################
#                                   Helpers                                     #
#################################################################################


@dataclass(frozen=True)
class Dist:
    """Where this process sits: rank, world size and its device."""

    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str | None) -> Dist:
    """One process, or torchrun's environment (WORLD_SIZE, RANK, LOCAL_RANK): NCCL on CUDA, gloo on CPU."""
    want = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if want.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available on this machine")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist(0, 1, want)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if want.type == "cuda":
        want = torch.device("cuda", local)
        torch.cuda.set_device(want)
        dist.init_process_group("nccl", device_id=want)
    else:
        dist.init_process_group("gloo")
    return Dist(rank, world, want)


def decode_threads() -> int:
    """The usable cores shared among the processes of this node (torchrun sets LOCAL_WORLD_SIZE)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def step_seed(seed: int, step: int, stream: int) -> int:
    """A 63-bit seed for one (step, stream) of a run; streams >= 0 are sub-batches, < 0 other uses."""
    return int(np.random.SeedSequence([seed, step, stream + 2**20]).generate_state(2, np.uint64)[0] >> 1)


def default_model(res: int) -> str:
    """The paper's 256-token choice: JiT-B/32 at 512 px, JiT-B/16 otherwise."""
    return "JiT-B/32" if res == 512 else "JiT-B/16"


def default_noise_scale(res: int) -> float:
    """1.0 up to 256 px, then proportional to the resolution (2.0 at 512, 4.0 at 1024) as in the paper."""
    return max(1.0, res / 256)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters; with weight decay, none on norms, biases (1-D) and embeddings."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or id(p) in embeddings or "pos" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def learning_rate(step: int, peak: float, warmup_steps: int, total: int, schedule: str, min_lr: float) -> float:
    """Linear warmup per iteration from 0 (as the official code), then constant or cosine down to min_lr."""
    if step < warmup_steps:
        return peak * step / warmup_steps
    if schedule == "constant" or total <= warmup_steps:
        return peak
    progress = (step - warmup_steps) / (total - warmup_steps)
    return min_lr + (peak - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def image_grid(images: np.ndarray, rows: int, cols: int, min_tile: int = 64, pad: int = 2) -> np.ndarray:
    """(rows·cols, S, S, 3) uint8 -> one (H, W, 3) grid, tiles upscaled (nearest) to at least min_tile px and
    separated by `pad` grey pixels (visible on white and on black backgrounds)."""
    s = images.shape[1]
    k = max(1, min_tile // s)
    tiles = images.reshape(rows, cols, s, s, 3).repeat(k, axis=2).repeat(k, axis=3)
    tiles = np.pad(tiles, ((0, 0), (0, 0), (0, pad), (0, pad), (0, 0)), constant_values=128)
    t = s * k + pad
    grid = tiles.transpose(0, 2, 1, 3, 4).reshape(rows * t, cols * t, 3)
    return np.ascontiguousarray(grid[: rows * t - pad, : cols * t - pad])


def atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def plot_loss(metrics: Path, out: Path) -> None:
    """The loss curve of a run (every row of metrics.jsonl) as a PNG, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    steps = [r["step"] for r in rows if "loss" in r]
    losses = [r["loss"] for r in rows if "loss" in r]
    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.subplots()
    ax.plot(steps, losses, lw=1)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss (v-space MSE)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=out.name, suffix=".tmp.png")
    os.close(fd)
    fig.savefig(tmp)
    os.replace(tmp, out)


#################################################################################
#                              Configuration                                    #
#################################################################################


@dataclass(frozen=True)
class Setup:
    """What the config resolves to for this dataset and world size."""

    model_name: str | None
    model_config: dict[str, Any]
    noise_scale: float
    accum: int
    plan: Plan
    total_steps: int
    warmup_steps: int
    peak_lr: float


def check_options(cfg: TrainConfig) -> None:
    """Reject impossible values with one sentence naming the option."""
    positive = ("res", "batch_size", "ckpt_every", "log_every", "sample_steps", "loader_workers")
    for name in positive:
        if getattr(cfg, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(cfg, name)}")
    for name in ("global_batch", "accum", "steps", "threads"):
        value = getattr(cfg, name)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if cfg.epochs <= 0 and cfg.steps is None:
        raise UserError(f"--epochs must be positive, got {cfg.epochs}")
    if cfg.schedule not in SCHEDULES:
        raise UserError(f"--schedule {cfg.schedule!r}: choose one of {', '.join(SCHEDULES)}")
    for name in ("ema1", "ema2"):
        if not 0.0 <= getattr(cfg, name) < 1.0:
            raise UserError(f"--{name} must be in [0, 1), got {getattr(cfg, name)}")
    if cfg.blr <= 0 or cfg.warmup_epochs < 0 or cfg.weight_decay < 0 or cfg.grad_clip < 0 or cfg.keep_last < 0:
        raise UserError("--blr must be positive and --warmup-epochs, --weight-decay, --grad-clip, --keep-last >= 0")
    if cfg.data is None:
        raise UserError("--data is required: an image folder (DATA/train/<class>/*.jpg) or 'digits'")


def resolve(
    cfg: TrainConfig,
    n_images: int,
    n_classes: int,
    world: int,
    ckpt_config: dict | None,
    ckpt_noise_scale: float | None = None,
) -> Setup:
    """Model config, noise scale, accumulation, data plan and schedule for this run.

    With a checkpoint (--init, --resume) the model is the checkpoint's and so, unless --noise-scale is given,
    is the noise scale it was trained with."""
    if ckpt_config is not None:
        name = None
        model_config = dict(ckpt_config)
        if model_config.get("num_classes") != n_classes:
            raise UserError(
                f"the checkpoint's model has {model_config.get('num_classes')} classes but --data has {n_classes}"
            )
        if model_config.get("input_size") != cfg.res:
            raise UserError(
                f"--res {cfg.res}: the checkpoint's model was built for {model_config.get('input_size')} px"
            )
    else:
        name = cfg.model or default_model(cfg.res)
        if name not in JiT_models:
            raise UserError(f"--model {name}: unknown model; choose one of {', '.join(JiT_models)}")
        model_config = {**JiT_models[name], **cfg.model_args, "input_size": cfg.res, "num_classes": n_classes}
        patch = model_config["patch_size"]
        if cfg.res % patch:
            raise UserError(f"--res {cfg.res} is not divisible by the patch size {patch} of {name}")
    micro = cfg.batch_size * world
    if cfg.global_batch is not None:
        if cfg.global_batch % micro:
            raise UserError(
                f"--global-batch {cfg.global_batch} is not a multiple of --batch-size {cfg.batch_size} × {world} "
                f"process(es)"
            )
        accum = cfg.global_batch // micro
        if cfg.accum is not None and cfg.accum != accum:
            raise UserError(f"--accum {cfg.accum} contradicts --global-batch {cfg.global_batch}")
    else:
        accum = cfg.accum or 1
    plan = Plan(n_images, cfg.batch_size, accum, world, 0, cfg.seed)
    if plan.steps_per_epoch < 1:
        raise UserError(
            f"--batch-size: a global batch of {plan.global_batch} images is larger than the dataset ({n_images} images)"
        )
    total = cfg.steps if cfg.steps is not None else max(1, round(cfg.epochs * plan.steps_per_epoch))
    return Setup(
        model_name=name,
        model_config=model_config,
        noise_scale=cfg.noise_scale or ckpt_noise_scale or default_noise_scale(cfg.res),
        accum=accum,
        plan=plan,
        total_steps=total,
        warmup_steps=round(cfg.warmup_epochs * plan.steps_per_epoch),
        peak_lr=cfg.blr * plan.global_batch / 256,
    )


def open_index(cfg: TrainConfig, run_dir: Path) -> ImageIndex:
    data = digits_dataset() if cfg.data == DIGITS_NAME else Path(cfg.data)  # type: ignore[arg-type]
    return build_index(data, cache=run_dir / "index.json", threads=cfg.threads)


def load_resume(path: str) -> tuple[Path, Any]:
    """The checkpoint named by --resume (a file or a run directory), which must hold training state."""
    file = rundir.resolve_checkpoint(path, "--resume")
    ckpt = jitrs.load_checkpoint(file)
    if "optimizer" not in ckpt.raw or "train_config" not in ckpt.raw:
        raise UserError(
            f"--resume {file}: the checkpoint holds weights but no training state; use --init to start from it"
        )
    return file, ckpt


#################################################################################
#                               Run logging                                     #
#################################################################################


class RunLog:
    """Rank 0's view: metrics.jsonl, TensorBoard, the progress bar and plain lines when not on a terminal."""

    def __init__(self, run_dir: Path, start_step: int, total: int, enabled: bool) -> None:
        self.enabled = enabled
        self.console = Console(stderr=True)
        self.metrics = run_dir / "metrics.jsonl"
        self.progress: Progress | None = None
        self.writer = None
        if not enabled:
            return
        # A resumed run rewinds the log to its checkpoint, so re-run steps are not logged twice.
        if self.metrics.exists():
            kept = [
                line
                for line in self.metrics.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= start_step
            ]
            atomic_write_text(self.metrics, "".join(line + "\n" for line in kept))
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=start_step + 1)
        if self.console.is_terminal:
            self.progress = Progress(
                TextColumn("step {task.completed}/{task.total}"),
                BarColumn(),
                TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self.task = self.progress.add_task("train", total=total, completed=start_step, info="")
            self.progress.start()

    def print(self, msg: str) -> None:
        if self.enabled:
            self.console.print(msg, highlight=False, soft_wrap=True)

    def row(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.metrics, "a") as f:
            f.write(json.dumps(row) + "\n")
        assert self.writer is not None
        for key in ("loss", "lr", "images_per_s", "grad_norm"):
            if key in row:
                self.writer.add_scalar(f"train/{key}", row[key], row["step"])
        info = f"epoch {row['epoch']}  loss {row['loss']:.4f}  lr {row['lr']:.2e}  {row['images_per_s']:.0f} img/s"
        if self.progress is not None:
            self.progress.update(self.task, completed=row["step"], info=info)
        else:
            self.console.print(f"step {row['step']}  {info}", highlight=False)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
        if self.writer is not None:
            self.writer.close()


class StopFlag:
    """Set by SIGTERM/SIGINT; the loop checkpoints and stops at the next step boundary. A second signal aborts."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
        for s in self._old:
            signal.signal(s, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        self.signal = signum
        self.restore()

    def restore(self) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)


#################################################################################
#                                 Training                                      #
#################################################################################


def train(cfg: TrainConfig, resume: tuple[Path, Any] | None = None) -> None:
    """Run (or resume) training as configured; see the module docstring. Raises UserError on bad input."""
    check_options(cfg)
    resume = resume or (load_resume(cfg.resume) if cfg.resume else None)
    d = setup_distributed(cfg.device)
    if cfg.fsdp and d.world == 1:
        raise UserError("--fsdp shards over several processes: launch with torchrun --nproc_per_node=N")
    try:
        _train(cfg, d, resume)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _train(cfg: TrainConfig, d: Dist, resume: tuple[Path, Any] | None) -> None:
    # ---------------------------------------------------------------- setup
    run_dir = Path(cfg.out)
    if d.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        index = open_index(cfg, run_dir)
    if d.world > 1:
        dist.barrier()  # rank 0 has written the index cache (and the digits files): the others read them
    if not d.main:
        index = open_index(cfg, run_dir)
    init = jitrs.load_checkpoint(cfg.init) if cfg.init and resume is None else None
    base = resume[1] if resume else init
    s = resolve(
        cfg, len(index), len(index.classes), d.world, base.config if base else None, base.noise_scale if base else None
    )
    plan = Plan(len(index), cfg.batch_size, s.accum, d.world, d.rank, cfg.seed)
    cuda = d.device.type == "cuda"
    if cuda:  # TF32 for what runs outside bf16 autocast, as DiT does
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    use_bf16 = cuda if cfg.bf16 is None else cfg.bf16
    use_compile = cuda if cfg.compile is None else cfg.compile
    try:
        flow = Flow(cfg.p_mean, cfg.p_std, s.noise_scale, cfg.t_eps, cfg.label_drop)
    except ValueError as e:
        raise UserError(f"--noise-scale/--p-std/--t-eps/--label-drop: {e}") from None

    # ---------------------------------------------------------------- model, EMAs, optimiser
    torch.manual_seed(cfg.seed)
    try:
        model = JiT(**s.model_config)
    except (ValueError, TypeError) as e:
        raise UserError(f"--model-arg: cannot build the model ({e})") from None
    if base is not None:
        model.load_state_dict(base.weights["model"], strict=True)
    model.to(d.device)
    log = RunLog(run_dir, resume[1].step if resume else 0, s.total_steps, d.main)
    if d.device.type == "cpu":
        log.print("[yellow]warning:[/] training on the CPU; this is only practical for tiny models (--demo)")
    ema1, ema2 = EMA(model, cfg.ema1), EMA(model, cfg.ema2)
    if base is not None:
        for ema, key in ((ema1, "ema1"), (ema2, "ema2")):
            if key in base.weights:
                ema.module.load_state_dict(base.weights[key], strict=True)
    net: nn.Module = model
    ddp = None
    if cfg.fsdp:
        # Each block, then the rest, sharded over all ranks; the EMAs the same way, so they cost 1/world each.
        mesh = init_device_mesh(d.device.type, (d.world,))
        for module in (model, ema1.module, ema2.module):
            for block in module.blocks:
                fully_shard(block, mesh=mesh)
            fully_shard(module, mesh=mesh)
    elif d.world > 1:
        ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[d.device.index] if cuda else None)
        net = ddp
    if use_compile:
        net = torch.compile(net)  # type: ignore[assignment]
    params = list(model.parameters())
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=s.peak_lr, betas=(0.9, 0.95), fused=cuda or None)
    # Optimiser state is saved and loaded whole, keyed by parameter name, whatever the sharding (DDP, FSDP, none).
    full = StateDictOptions(full_state_dict=True, cpu_offload=cfg.fsdp)
    start_step = 0
    if resume is not None:
        set_optimizer_state_dict(model, opt, optim_state_dict=resume[1].raw["optimizer"], options=full)
        start_step = int(resume[1].step)
        log.print(f"resumed from {resume[0]} at step {start_step}")

    # ---------------------------------------------------------------- data
    loader = Loader(
        index,
        cfg.res,
        plan,
        d.device,
        start_step=start_step,
        threads=cfg.threads or decode_threads(),
        workers=cfg.loader_workers,
        bad_log=run_dir / "bad_images.log",
    )
    batches = iter(loader)
    gen = torch.Generator(d.device)
    sample_labels = torch.tensor(
        np.linspace(0, len(index.classes) - 1, SAMPLE_COLS).round().astype(np.int64), device=d.device
    ).repeat(SAMPLE_ROWS)

    def checkpoint(step: int) -> Path:
        """Every rank calls this (FSDP gathers the full weights for rank 0); rank 0 writes."""
        weights = {
            "model": get_model_state_dict(model, options=full),
            "ema1": get_model_state_dict(ema1.module, options=full),
            "ema2": get_model_state_dict(ema2.module, options=full),
        }
        optimizer = get_optimizer_state_dict(model, opt, options=full)
        path = rundir.checkpoint_path(run_dir, step)
        if not d.main:
            return path
        payload = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "config": model.config,
            "name": s.model_name or (base.name if base else None),
            "flow": {
                "noise_scale": flow.noise_scale,
                "P_mean": flow.P_mean,
                "P_std": flow.P_std,
                "t_eps": flow.t_eps,
                "label_drop": flow.label_drop,
                "pred": flow.pred,
                "loss_space": flow.loss_space,
            },
            **weights,
            "class_names": index.classes,
            "step": step,
            "epoch": step // plan.steps_per_epoch,
            "position": step % plan.steps_per_epoch,
            "optimizer": optimizer,
            # All randomness derives from this seed and the step (module docstring): no generator state to keep.
            "rng": {"seed": cfg.seed},
            "train_config": cfg.to_dict(),
        }
        jitrs.save_checkpoint(path, payload)
        if cfg.keep_last:
            for _, old in rundir.list_checkpoints(run_dir)[: -cfg.keep_last]:
                old.unlink(missing_ok=True)
        return path

    def sample_grid(step: int) -> Path | None:
        """A grid of EMA samples, written by rank 0; every rank samples under FSDP (the EMA is sharded)."""
        if not (d.main or cfg.fsdp):
            return None
        samples_dir = run_dir / "samples"
        if d.main:
            samples_dir.mkdir(exist_ok=True)
        g = torch.Generator(d.device).manual_seed(cfg.seed)
        shape = (sample_labels.shape[0], 3, cfg.res, cfg.res)
        with torch.autocast(d.device.type, dtype=torch.bfloat16, enabled=use_bf16):
            x = flow.sample(
                ema1.module,
                sample_labels,
                steps=cfg.sample_steps,
                cfg=cfg.sample_cfg,
                interval=CFG_INTERVAL,
                generator=g,
                shape=shape,
            )
        if cfg.fsdp:
            ema1.module.reshard()  # type: ignore[operator]  # FSDP leaves the root gathered after a forward
        path = samples_dir / f"step-{step:07d}.png"
        if not d.main:
            return None
        jitrs.write_pngs(image_grid(to_pixels(x).cpu().numpy(), SAMPLE_ROWS, SAMPLE_COLS)[None], [str(path)])
        return path

    # ---------------------------------------------------------------- loop
    stop = StopFlag()
    pending: list[torch.Tensor] = []  # per-step mean losses not yet read back (reading one syncs the device)
    grad_norms: list[torch.Tensor] = []
    last_loss = float("nan")
    t_log, images_since = time.perf_counter(), 0
    t_start, start = time.perf_counter(), start_step
    step = start_step
    last_ckpt: Path | None = resume[0] if resume else None
    last_samples: Path | None = None

    def flush(step: int) -> None:
        """Read back the losses of the last steps, check them, log one row; raises DivergedError on NaN/inf."""
        nonlocal t_log, images_since, last_loss
        if not pending:
            return
        loss = torch.stack(pending).mean()
        if d.world > 1:
            dist.all_reduce(loss, op=dist.ReduceOp.AVG)
        value = float(loss)
        pending.clear()
        if not math.isfinite(value):
            where = f"; the last good checkpoint is {last_ckpt}" if last_ckpt else ""
            raise DivergedError(f"the loss became {value} by step {step}; stopping without saving{where}")
        now = time.perf_counter()
        row = {
            "step": step,
            "epoch": step // plan.steps_per_epoch,
            "loss": value,
            "lr": opt.param_groups[0]["lr"],
            "images_per_s": images_since / max(now - t_log, 1e-9),
            "bad_images": len(loader.bad_files),
        }
        if grad_norms:
            row["grad_norm"] = float(torch.stack(grad_norms).mean())
            grad_norms.clear()
        last_loss = value
        log.row(row)
        t_log, images_since = now, 0

    try:
        for step in range(start_step, s.total_steps):
            lr = learning_rate(step, s.peak_lr, s.warmup_steps, s.total_steps, cfg.schedule, cfg.min_lr)
            for group in opt.param_groups:
                group["lr"] = lr
            torch.manual_seed(step_seed(cfg.seed, step, -1 - d.rank))  # dropout masks
            step_loss = torch.zeros((), device=d.device)
            for a in range(s.accum):
                batch = next(batches)
                gen.manual_seed(step_seed(cfg.seed, step, plan.sub_batch(step, a)))
                t = flow.sample_t(batch.x.shape[0], device=d.device, generator=gen)
                noise = torch.randn(batch.x.shape, device=d.device, generator=gen) * flow.noise_scale
                y = flow.drop_labels(batch.y, model.num_classes, generator=gen)
                last = a == s.accum - 1
                sync = contextlib.nullcontext() if ddp is None or last else ddp.no_sync()
                if cfg.fsdp:
                    model.set_requires_gradient_sync(last)  # type: ignore[operator]
                with sync, torch.autocast(d.device.type, dtype=torch.bfloat16, enabled=use_bf16):
                    loss = flow.loss(net, batch.x, y, t=t, noise=noise)
                    (loss / s.accum).backward()
                step_loss += loss.detach()
            if cfg.grad_clip > 0:
                grad_norms.append(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip))
            opt.step()
            opt.zero_grad(set_to_none=True)
            ema1.update(params)
            ema2.update(params)
            pending.append(step_loss / s.accum)
            images_since += plan.global_batch
            done = step + 1
            if log.progress is not None:
                log.progress.update(log.task, completed=done)
            if done % cfg.log_every == 0 or done == s.total_steps:
                flush(done)
            if stop.signal is not None and d.world == 1:
                break
            if done % cfg.log_every == 0 and d.world > 1:
                flag = torch.tensor(float(stop.signal is not None), device=d.device)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                if flag.item() > 0:
                    break
            if done % cfg.ckpt_every == 0 and done < s.total_steps:
                flush(done)
                last_ckpt = checkpoint(done)
            if cfg.sample_every and done % cfg.sample_every == 0:
                last_samples = sample_grid(done)
                if d.main:
                    plot_loss(log.metrics, run_dir / "loss.png")
        else:
            step = s.total_steps - 1
        # ------------------------------------------------------------ the end (or a signal)
        done = step + 1
        flush(done)
        stopped = done < s.total_steps
        last_ckpt = checkpoint(done)
        if cfg.sample_every and not stopped:
            last_samples = sample_grid(done)
        if d.main:
            plot_loss(log.metrics, run_dir / "loss.png")
    finally:
        stop.restore()
        loader.close()
        log.close()

    # ---------------------------------------------------------------- summary
    elapsed = time.perf_counter() - t_start
    images = (done - start) * plan.global_batch
    if stopped:
        log.print(f"stopped by signal at step {done}/{s.total_steps}; continue with --resume {run_dir}")
    log.print(
        f"[bold]trained[/] steps {start}→{done} (epoch {done / plan.steps_per_epoch:.2f}), {images:,} images in "
        f"{elapsed:.0f} s ({images / max(elapsed, 1e-9):.0f} img/s), final loss {last_loss:.4f}"
    )
    log.print(f"checkpoint:  {last_ckpt}")
    if last_samples is not None:
        log.print(f"samples:     {last_samples}")
    log.print(f"loss curve:  {run_dir / 'loss.png'}")
    log.print(f"metrics:     {log.metrics}  (TensorBoard: tensorboard --logdir {run_dir / 'tb'})")
    if loader.bad_files:
        log.print(
            f"[yellow]{len(loader.bad_files)} unreadable image(s) skipped[/], listed in {run_dir / 'bad_images.log'}"
        )
