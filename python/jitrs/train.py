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
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
import torch.distributed as dist
from rich.console import Console
from rich.markup import escape
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor

import jitrs
from jitrs import rundir
from jitrs.atomic import atomic_write_text, writable_dir
from jitrs.builtin import builtin_name, data_root
from jitrs.checkpoint import StateDict, checkpoint_payload
from jitrs.dataset import ImageIndex, build_index, image_root
from jitrs.device import Dist, decode_threads, setup_distributed
from jitrs.ema import EMAs
from jitrs.ema_keys import ema_key
from jitrs.errors import UserError, WriteFailure
from jitrs.flow import Flow
from jitrs.grid import write_labelled_grid
from jitrs.loader import Loader, Plan
from jitrs.model import JiT, JiT_models
from jitrs.paper import CFG_INTERVAL
from jitrs.runlog import RunLog, plot_loss, plot_quality
from jitrs.sample import OFFICIAL_CFG, to_pixels
from jitrs.train_config import TrainConfig

if TYPE_CHECKING:
    from jitrs.online_eval import OnlineEval

DROPOUT_KEYS = ("attn_drop", "proj_drop")  # model args that leave the architecture as it is
# The step_seed stream of online evaluation's noise: far from the sub-batch streams (>= 0) and the dropout ones
# (-1 - sub-batch), so an evaluation never shares a seed with training.
EVAL_STREAM = -(2**19)
GRID_CLASSES, GRID_SEEDS = 10, 10  # sample grids: one row per class (spread over the label range), 10 seeds each


class DivergedError(UserError):
    """The loss became NaN or inf; the run stops and keeps its last good checkpoint."""


#################################################################################
#                                   Helpers                                     #
#################################################################################


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
    name: str | None
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
        named = JiT_models[name].to_dict()
        model_config = {**named, **cfg.model_args, "input_size": cfg.res, "num_classes": n_classes}
        if any(model_config[k] != named[k] for k in cfg.model_args if k not in DROPOUT_KEYS):
            name = None  # another architecture: the named model's settings (its CFG scale) do not apply
        patch = model_config["patch_size"]
        if cfg.res % patch:
            raise UserError(f"--res {cfg.res} is not divisible by the patch size {patch} of {cfg.model or name}")
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
    assert cfg.data is not None  # check_options
    return build_index(data_root(cfg.data), cache=run_dir / "index.json", threads=cfg.threads)


def load_resume(path: str) -> tuple[Path, Any]:
    """The checkpoint named by --resume (a file or a run directory), which must hold training state."""
    file = rundir.resolve_checkpoint(path, "resume")
    ckpt = jitrs.load_checkpoint(file)
    if "optimizer" not in ckpt.raw or "train_config" not in ckpt.raw:
        raise UserError(
            f"--resume {file}: the checkpoint holds weights but no training state; use --init to start from it"
        )
    return file, ckpt


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


def train(cfg: TrainConfig, resume: tuple[Path, Any] | None = None) -> int:
    """Run (or resume) training as configured; see the module docstring. Raises UserError on bad input.

    Returns the exit code: 0 when the run finished, 128 + the signal's number when SIGINT/SIGTERM stopped it
    (after it saved a checkpoint)."""
    cfg.validate()
    if cfg.init and cfg.resume:
        raise UserError(REFUSE_INIT_WITH_RESUME)
    resume = resume or (load_resume(cfg.resume) if cfg.resume else None)
    if resume is not None:
        check_resumed_emas(cfg, *resume)
    d = setup_distributed(cfg.device)
    if cfg.fsdp and d.world == 1:
        raise UserError("--fsdp shards over several processes: launch with torchrun --nproc_per_node=N")
    assert cfg.data is not None  # TrainConfig.validate
    image_root(data_root(cfg.data))  # a missing --data is reported before --out is created or locked
    evaluator = None
    if cfg.eval_every:  # a bad reference or weights are refused now (the scorer's imports take seconds: only then)
        from jitrs.online_eval import OnlineEval

        evaluator = OnlineEval.prepare(cfg, d)
    try:
        with claim_run_dir(cfg, d, resume):
            run: Run | None = None
            try:
                run = Run(cfg, d, resume, evaluator)
                resume = None  # the checkpoint's tensors are in the model and optimiser now: let the host copy go
                try:
                    done = run.loop()
                    score = run.final_score(done)
                finally:
                    run.close()
            except OSError as e:  # a full disk, a read-only or vanished --out: whichever writer met it first
                raise write_failure(e, Path(cfg.out), run.last_ckpt if run else None) from None
            run.summary(done, score)
            return 128 + run.stop_signal if run.stop_signal is not None else 0
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def write_failure(e: OSError, run_dir: Path, last_ckpt: Path | None) -> WriteFailure:
    """The one-line error of a failed write: the file, the reason, and what survives of the run."""
    last = f"the last good checkpoint is {last_ckpt}" if last_ckpt else "no checkpoint was saved"
    return WriteFailure(f"cannot write {e.filename or run_dir}: {e.strerror or e}; {last}")


def check_resumed_emas(cfg: TrainConfig, file: Path, ckpt: Any) -> None:
    """A resumed run keeps its EMAs: --ema must list the checkpoint's decays (all restored, strictly)."""
    stored = ckpt.ema_sets()
    wanted = {ema_key(i): d for i, d in enumerate(cfg.ema)}
    if list(stored) != list(wanted) or any(d is not None and d != wanted[k] for k, d in stored.items()):
        held = ",".join("?" if d is None else f"{d:g}" for d in stored.values()) or "none"
        raise UserError(
            f"--ema {','.join(f'{d:g}' for d in cfg.ema)}: the run in {file} keeps the EMAs {held}; resume with "
            "those (the default), or start a new run from its weights with --init"
        )


REFUSE_INIT_WITH_RESUME = (
    "--init and --resume exclude each other: --resume continues a run with its own weights and state, --init "
    "starts a new run from weights"
)


@contextlib.contextmanager
def claim_run_dir(cfg: TrainConfig, d: Dist, resume: tuple[Path, Any] | None) -> Iterator[None]:
    """Rank 0 locks --out for the whole job, refuses to train over another run in it (unless --overwrite, or a
    --resume of that run), and removes temp files that a killed writer left there."""
    if not d.main:
        yield
        return
    out = Path(cfg.out)
    created = not out.exists()
    writable_dir(out)
    try:
        with _claimed(out, cfg, resume):
            yield
    except BaseException:
        if created:
            rundir.remove_if_unused(out)
        raise


@contextlib.contextmanager
def _claimed(out: Path, cfg: TrainConfig, resume: tuple[Path, Any] | None) -> Iterator[None]:
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    with rundir.DirLock(out) as lock:
        if lock.took_over:
            console.print(f"took over the lock of {escape(lock.took_over)}, which is no longer running")
        continuing = resume is not None and resume[0].parent.resolve() == out.resolve()
        if rundir.holds_run(out) and not continuing:
            if not cfg.overwrite:
                newest = rundir.list_checkpoints(out)
                what = f"a run (newest checkpoint: step {newest[-1][0]})" if newest else "a run's files"
                raise UserError(
                    f"already holds {what}; continue it with --resume {out}, start over with --overwrite, or "
                    "choose another --out",
                    param="out",
                    value=out,
                )
            rundir.clear_run(out)
            console.print(f"--overwrite: deleted the previous run's checkpoints and logs in {escape(str(out))}")
        for stale in rundir.remove_stale_temps(out):
            console.print(f"removed {escape(stale.name)}, the temp file of a write that was interrupted")
        yield


class Run:
    """One training job: the model, its EMAs and optimiser, the data, the log, and what the loop has done."""

    def __init__(
        self, cfg: TrainConfig, d: Dist, resume: tuple[Path, Any] | None, evaluator: OnlineEval | None = None
    ) -> None:
        self.cfg, self.d, self.evaluator = cfg, d, evaluator
        self.run_dir = Path(cfg.out)
        if d.main:
            writable_dir(self.run_dir)
            index = open_index(cfg, self.run_dir)
        if d.world > 1:
            dist.barrier()  # rank 0 has written the index cache (and the built-in dataset): the others read them
        if not d.main:
            index = open_index(cfg, self.run_dir)
        self.index: ImageIndex = index
        init = jitrs.load_checkpoint(rundir.resolve_checkpoint(cfg.init, "init")) if cfg.init else None
        self.base = resume[1] if resume else init
        self.s = resolve(
            cfg,
            len(index),
            len(index.classes),
            d.world,
            self.base.config if self.base else None,
            self.base.noise_scale if self.base else None,
        )
        self.plan = Plan(len(index), cfg.batch_size, self.s.accum, d.world, d.rank, cfg.seed, cfg.flip)
        self.start_step = int(resume[1].step) if resume else 0
        saved_batch = resume[1].raw.get("global_batch") if resume else None
        if resume is not None and saved_batch is not None and saved_batch != self.plan.global_batch:
            raise UserError(
                f"{resume[0]} was trained with {saved_batch} images per step and this run would take "
                f"{self.plan.global_batch}: the data order and the schedule count those steps, so keep --batch-size × "
                f"processes × accumulation (or --global-batch) at {saved_batch}",
                param="resume",
            )
        if resume is not None and self.start_step >= self.s.total_steps:
            raise UserError(
                f"the checkpoint {resume[0]} is at step {self.start_step} and the run's length is "
                f"{self.s.total_steps} steps: give a longer --steps (or --epochs) to train on",
                param="resume",
            )
        cuda = d.device.type == "cuda"
        if cuda:  # TF32 for what runs outside bf16 autocast, as DiT does
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.bf16 = cuda if cfg.bf16 is None else cfg.bf16
        try:
            self.flow = Flow(cfg.p_mean, cfg.p_std, self.s.noise_scale, cfg.t_eps, cfg.label_drop)
        except ValueError as e:
            raise UserError(f"--noise-scale/--p-std/--t-eps/--label-drop: {e}") from None
        self._build_model(cuda)
        self.log = RunLog(self.run_dir, self.start_step, self.s.total_steps, d.main)
        if d.device.type == "cpu":
            self.log.print("[yellow]warning:[/] training on the CPU; this is only practical for tiny models (--demo)")
        if resume is not None:
            set_optimizer_state_dict(
                self.model, self.opt, optim_state_dict=resume[1].raw["optimizer"], options=self.full
            )
            self.log.print(f"resumed from {escape(str(resume[0]))} at step {self.start_step}")
        self.loader = Loader(
            index,
            cfg.res,
            self.plan,
            d.device,
            start_step=self.start_step,
            threads=cfg.threads or decode_threads(),
            workers=cfg.loader_workers,
            bad_log=self.run_dir / "bad_images.log",
        )
        self.batches = iter(self.loader)
        self.gen = torch.Generator(d.device)
        spread = np.linspace(0, len(index.classes) - 1, min(GRID_CLASSES, len(index.classes))).round().astype(np.int64)
        self.grid_classes = spread.tolist()
        self.grid_labels = torch.tensor(spread, device=d.device).repeat_interleave(GRID_SEEDS)
        self.judge = self._judge()
        self.pending: list[torch.Tensor] = []  # per-step mean losses not yet read back (reading one syncs)
        self.grad_norms: list[torch.Tensor] = []
        self.data_wait_s = 0.0  # data waits not yet logged: seconds (CPU), event pairs (CUDA)
        self.data_waits: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        self.last_loss = float("nan")
        self.t_log, self.images_since = time.perf_counter(), 0
        self.t_start = time.perf_counter()
        self.last_ckpt: Path | None = resume[0] if resume else None
        self.last_samples: Path | None = None
        self.stopped = False
        self.stop_signal: int | None = None
        self.base_name = self.base.name if self.base else None
        self.base = None  # as in train(): no reference to the loaded checkpoint outlives the setup

    def _build_model(self, cuda: bool) -> None:
        cfg, d, base = self.cfg, self.d, self.base
        torch.manual_seed(cfg.seed)
        try:
            model = JiT(**self.s.model_config)
        except (ValueError, TypeError) as e:
            raise UserError(f"--model-arg: cannot build the model ({e})") from None
        if base is not None:
            model.load_state_dict(base.weights["model"], strict=True)
        model.to(d.device)
        self.emas = EMAs(model, cfg.ema)
        if base is not None:  # by key: --init's ema1 continues as ema1 (an EMA it lacks starts from its weights)
            for key, module in self.emas.modules().items():
                if key in base.weights:
                    module.load_state_dict(base.weights[key], strict=True)
        net: nn.Module = model
        self.ddp: torch.nn.parallel.DistributedDataParallel | None = None
        if cfg.fsdp:
            # Each block, then the rest, sharded over all ranks; the EMAs the same way, so they cost 1/world each.
            mesh = init_device_mesh(d.device.type, (d.world,))
            for module in (model, *self.emas.modules().values()):
                for block in cast(nn.ModuleList, module.blocks):
                    fully_shard(block, mesh=mesh)
                fully_shard(module, mesh=mesh)
        elif d.world > 1:
            self.ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[d.device.index] if cuda else None)
            net = self.ddp
        if cuda if cfg.compile is None else cfg.compile:
            net = cast(nn.Module, torch.compile(net))  # an OptimizedModule: the stubs say only Callable
        self.model, self.net = model, net
        self.params: list[torch.Tensor] = list(model.parameters())
        self.opt = torch.optim.AdamW(
            param_groups(model, cfg.weight_decay), lr=self.s.peak_lr, betas=(0.9, 0.95), fused=cuda or None
        )
        # Optimiser state is saved and loaded whole, keyed by parameter name, whatever the sharding (DDP, FSDP).
        self.full = StateDictOptions(full_state_dict=True, cpu_offload=cfg.fsdp)

    def _judge(self) -> Any:
        """The built-in quality classifier when training on a built-in dataset (rank 0), else None."""
        name = builtin_name(self.cfg.data or "")
        if name is None or not self.d.main or not (self.cfg.sample_every or self.cfg.quality_samples):
            return None
        from jitrs.quality import Judge

        return Judge(name)

    # ---------------------------------------------------------------- the loop
    def loop(self) -> int:
        """Train from the start step to the end or to a signal; returns the number of steps done."""
        cfg, s = self.cfg, self.s
        stop = StopFlag()
        done = self.start_step
        try:
            for step in range(self.start_step, s.total_steps):
                self.train_step(step)
                done = step + 1
                self.log.advance(done)
                if done % cfg.log_every == 0 or done == s.total_steps:
                    self.flush(done)
                if self.should_stop(stop, done):
                    break
                if done % cfg.ckpt_every == 0 and done < s.total_steps:
                    self.flush(done)
                    self.last_ckpt = self.checkpoint(done)
                if cfg.sample_every and done % cfg.sample_every == 0:
                    self.last_samples = self.sample_grid(done)
                    self.plot()
                if cfg.eval_every and done % cfg.eval_every == 0:
                    self.evaluate(done)
            # the end, or a signal
            self.flush(done)
            self.stopped = done < s.total_steps
            self.stop_signal = stop.signal if self.stopped else None
            self.last_ckpt = self.checkpoint(done)
            if cfg.sample_every and not self.stopped and done % cfg.sample_every:
                self.last_samples = self.sample_grid(done)
            if cfg.eval_every and not self.stopped and done % cfg.eval_every:
                self.evaluate(done)
            self.plot()
        finally:
            stop.restore()
        self.t_end = time.perf_counter()
        return done

    def train_step(self, step: int) -> None:
        """One optimiser step over the accumulation micro-batches; the loss stays on the device."""
        cfg, s, d, flow = self.cfg, self.s, self.d, self.flow
        lr = learning_rate(step, s.peak_lr, s.warmup_steps, s.total_steps, cfg.schedule, cfg.min_lr)
        for group in self.opt.param_groups:
            group["lr"] = lr
        step_loss = torch.zeros((), device=d.device)
        for a in range(s.accum):
            batch = self.next_batch()
            sub = self.plan.sub_batch(step, a)
            torch.manual_seed(step_seed(cfg.seed, step, -1 - sub))  # dropout masks: per sub-batch, like the data
            self.gen.manual_seed(step_seed(cfg.seed, step, sub))
            t = flow.sample_t(batch.x.shape[0], device=d.device, generator=self.gen)
            noise = torch.randn(batch.x.shape, device=d.device, generator=self.gen) * flow.noise_scale
            y = flow.drop_labels(batch.y, self.model.num_classes, generator=self.gen)
            last = a == s.accum - 1
            sync = contextlib.nullcontext() if self.ddp is None or last else self.ddp.no_sync()
            if cfg.fsdp:
                cast(FSDPModule, self.model).set_requires_gradient_sync(last)
            with sync:
                with torch.autocast(d.device.type, dtype=torch.bfloat16, enabled=self.bf16):  # forward and loss only
                    loss = flow.loss(self.net, batch.x, y, t=t, noise=noise)
                (loss / s.accum).backward()
            step_loss += loss.detach()
        if cfg.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
            # Under FSDP the norm is a DTensor whose local value is this rank's partial sum; the clipping itself
            # used the reduced one.
            self.grad_norms.append(norm.full_tensor() if isinstance(norm, DTensor) else norm)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.emas.update(self.params)
        self.pending.append(step_loss / s.accum)
        self.images_since += self.plan.global_batch

    def should_stop(self, stop: StopFlag, done: int) -> bool:
        """A signal was received (on any rank: under torchrun they agree at the next --log-every boundary)."""
        if self.d.world == 1:
            return stop.signal is not None
        if done % self.cfg.log_every:
            return False
        flag = torch.tensor(float(stop.signal is not None), device=self.d.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return flag.item() > 0

    def next_batch(self) -> Any:
        """The next micro-batch, timing how long the device waited for it: on CUDA the gap between two events on
        the stream around the wait (the host may block here while the GPU is still busy, which is no starvation),
        on the CPU the wall time."""
        if self.d.device.type != "cuda":
            start = time.perf_counter()
            batch = next(self.batches)
            self.data_wait_s += time.perf_counter() - start
            return batch
        before, after = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        before.record()
        batch = next(self.batches)
        after.record()
        self.data_waits.append((before, after))
        return batch

    def flush(self, step: int) -> None:
        """Read back the losses of the last steps, check them, log one row; raises DivergedError on NaN/inf."""
        if not self.pending:
            return
        loss = torch.stack(self.pending).mean()
        if self.d.world > 1:
            dist.all_reduce(loss, op=dist.ReduceOp.AVG)
        value = float(loss)
        self.pending.clear()
        if not math.isfinite(value):
            where = f"; the last good checkpoint is {self.last_ckpt}" if self.last_ckpt else ""
            raise DivergedError(f"the loss became {value} by step {step}; stopping without saving{where}")
        now = time.perf_counter()
        # float(loss) synchronised the stream: every event of the window has its time.
        wait = self.data_wait_s + sum(a.elapsed_time(b) for a, b in self.data_waits) / 1000
        self.data_wait_s, self.data_waits = 0.0, []
        row: dict[str, Any] = {
            "step": step,
            "epoch": step // self.plan.steps_per_epoch,
            "loss": value,
            "lr": self.opt.param_groups[0]["lr"],
            "images_per_s": self.images_since / max(now - self.t_log, 1e-9),
            "bad_images": len(self.loader.bad_files),
            "data_wait_s": wait,  # time the device waited for data in this window
            "data_wait_frac": wait / max(now - self.t_log, 1e-9),
        }
        if self.grad_norms:
            row["grad_norm"] = float(torch.stack(self.grad_norms).mean())
            self.grad_norms.clear()
        self.last_loss = value
        self.log.row(row)
        self.t_log, self.images_since = now, 0

    # ---------------------------------------------------------------- outputs
    def checkpoint(self, step: int) -> Path:
        """Every rank calls this (FSDP gathers the full weights for rank 0); rank 0 writes."""
        full = self.full
        model_state = get_model_state_dict(self.model, options=full)
        emas = {key: get_model_state_dict(module, options=full) for key, module in self.emas.modules().items()}
        optimizer = get_optimizer_state_dict(self.model, self.opt, options=full)
        path = rundir.checkpoint_path(self.run_dir, step)
        if not self.d.main:
            return path
        payload = checkpoint_payload(
            self.model,
            # full_state_dict: plain tensors (the stubs allow DTensors and ShardedTensors too)
            model_state=cast(StateDict, model_state),
            name=self.s.model_name or self.base_name,
            flow=self.flow.to_dict(),
            emas=cast(dict[str, StateDict], emas),
            ema_decays=self.emas.decays(),
            class_names=self.index.classes,
            step=step,
            epoch=step // self.plan.steps_per_epoch,
            position=step % self.plan.steps_per_epoch,
            global_batch=self.plan.global_batch,
            optimizer=optimizer,
            # All randomness derives from this seed and the step (module docstring): no generator state to keep.
            rng={"seed": self.cfg.seed},
            train_config=self.cfg.to_dict(),
        )
        jitrs.save_checkpoint(path, payload)
        if self.cfg.keep_last:
            for _, old in rundir.list_checkpoints(self.run_dir)[: -self.cfg.keep_last]:
                old.unlink(missing_ok=True)
        return path

    def sample_grid(self, step: int) -> Path | None:
        """A labelled grid of EMA samples (one row per class) written by rank 0, scored when the data is built in;
        every rank samples under FSDP (the EMA is sharded)."""
        cfg, d = self.cfg, self.d
        if not (d.main or cfg.fsdp):
            return None
        g = torch.Generator(d.device).manual_seed(cfg.seed)
        shape = (self.grid_labels.shape[0], 3, cfg.res, cfg.res)
        ema = self.emas.sets[ema_key(0)]
        x = self.flow.sample(
            ema.module,
            self.grid_labels,
            steps=cfg.sample_steps,
            cfg=cfg.sample_cfg,
            interval=CFG_INTERVAL,
            generator=g,
            shape=shape,
            net_dtype=torch.bfloat16 if self.bf16 else None,
        )
        if cfg.fsdp:
            cast(FSDPModule, ema.module).reshard()  # FSDP leaves the root gathered after a forward
        if not d.main:
            return None
        images = to_pixels(x).cpu().numpy()
        title = f"step {step}: EMA {ema.decay} samples, Heun {cfg.sample_steps} steps, CFG {cfg.sample_cfg:g}"
        if self.judge is not None:
            score = self.judge.score(images, self.grid_labels.cpu().numpy())
            self.log.quality_row({"step": step, **score.to_dict()})
            title += f"\n{score.accuracy:.0%} recognised, FD {score.fd:.1f} (real {score.fd_real:.1f})"
        (self.run_dir / "samples").mkdir(exist_ok=True)
        path = self.run_dir / "samples" / f"step-{step:07d}.png"
        names = [self.index.classes[c] for c in self.grid_classes]
        write_labelled_grid(path, images, names, title)
        return path

    def evaluate(self, step: int) -> None:
        """FID/IS of the --eval-ema EMA (jitrs.online_eval) on every rank, logged by rank 0."""
        ev, cfg = self.evaluator, self.cfg
        assert ev is not None
        name = self.s.model_name or self.base_name or ""
        guidance = cfg.eval_cfg if cfg.eval_cfg is not None else OFFICIAL_CFG.get(name, cfg.sample_cfg)
        self.log.print(f"evaluating {ev.n} samples of {ev.ema} at step {step} ...")
        module = self.emas.sets[ev.ema].module
        seed = step_seed(cfg.seed, step, EVAL_STREAM)
        row = ev(step, seed, module, self.flow, guidance, self.model.num_classes, self.d, cfg.fsdp)
        self.log.eval_row(row)

    def plot(self) -> None:
        if self.d.main:
            plot_loss(self.log.rows(self.log.metrics), self.run_dir / "loss.png")
            plot_quality(self.log.rows(self.log.quality), self.run_dir / "quality.png")

    def final_score(self, done: int) -> Any:
        """On a built-in dataset with --quality-samples N: N class-balanced samples drawn by `jitrs sample` from the
        final checkpoint (its documented guidance and steps) into RUN/eval, scored; None otherwise."""
        if self.judge is None or not self.cfg.quality_samples or self.stopped or self.d.world > 1:
            return None
        from jitrs.sample import SampleOptions, sample

        assert self.last_ckpt is not None
        self.log.print(f"scoring {self.cfg.quality_samples} samples of the final checkpoint ...")
        opt = SampleOptions(
            ckpt=self.last_ckpt,
            out=self.run_dir / "eval",
            n=self.cfg.quality_samples,
            format="npz",
            device=self.cfg.device,
        )
        npz = sample(opt, console=self.log.console)
        assert npz is not None
        with np.load(npz) as f:
            score = self.judge.score(f["arr_0"], f["arr_1"])

        atomic_write_text(self.run_dir / "quality.json", json.dumps({"samples": str(npz), **score.to_dict()}, indent=2))
        return score

    def close(self) -> None:
        self.loader.close()
        self.log.close()

    def summary(self, done: int, score: Any) -> None:
        log, run_dir, plan = self.log, self.run_dir, self.plan
        elapsed = self.t_end - self.t_start  # the training, not the final scoring
        images = (done - self.start_step) * plan.global_batch
        if self.stopped:
            log.print(
                f"stopped by signal at step {done}/{self.s.total_steps}; continue with --resume {escape(str(run_dir))}"
            )
        log.print(
            f"[bold]trained[/] steps {self.start_step}→{done} (epoch {done / plan.steps_per_epoch:.2f}), {images:,} "
            f"images in {elapsed:.0f} s ({images / max(elapsed, 1e-9):.0f} img/s), final loss {self.last_loss:.4f}"
        )
        log.print(f"checkpoint:  {escape(str(self.last_ckpt))}")
        if self.last_samples is not None:
            log.print(f"samples:     {escape(str(self.last_samples))}")
        log.print(f"loss curve:  {escape(str(run_dir / 'loss.png'))}")
        if self.judge is not None and (run_dir / "quality.png").exists():
            log.print(f"quality:     {escape(str(run_dir / 'quality.png'))}")
        tb = escape(str(run_dir / "tb"))
        log.print(f"metrics:     {escape(str(log.metrics))}  (TensorBoard: tensorboard --logdir {tb})")
        if self.loader.bad_files:
            log.print(
                f"[yellow]{len(self.loader.bad_files)} unreadable image(s) skipped[/], listed in "
                f"{escape(str(run_dir / 'bad_images.log'))}"
            )
        if score is not None:
            where = escape(str(run_dir / "quality.json"))
            log.print(f"[bold]quality[/] of {score.images} samples ({where}): {score.summary()}")
