"""`jitrs train`: maps the command-line flags onto a TrainConfig (jitrs.train_config), then runs jitrs.train."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from jitrs.errors import UserError
from jitrs.train_config import (
    TrainConfig,
    build_config,
    parse_decays,
    parse_model_args,
    read_config_file,
    refuse_changed_architecture,
    resumed_defaults,
)

Opt = typer.Option
D = TrainConfig()
DEFAULT_EMA = ",".join(map(str, D.ema))


# Options declared here, one line each in the signature below (which the layout test keeps under 120 lines).
EmaOption = Annotated[
    str,
    Opt(
        help="EMA decays, comma-separated, each EMA updated every step and saved as ema1, ema2, ... in this order "
        "(ema1 makes the sample grids); e.g. the paper's 0.9999,0.9998,0.9996."
    ),
]

InitOption = Annotated[
    str | None,
    Opt(
        help="Start a new run from these weights: official checkpoint-*.pth, jitrs .pt or .safetensors, or a run "
        "directory (its newest checkpoint)."
    ),
]
EvalEvery = Annotated[
    int,
    Opt(
        help="Every N steps (and at the end), FID and IS of an EMA's samples into metrics.jsonl and TensorBoard, "
        "the samples split over the processes; 0 = never."
    ),
]
EvalRef = Annotated[
    str | None, Opt(help="--eval-every: reference statistics at --res (`jitrs eval --make-ref DATA --out X.npz`).")
]
EvalCfg = Annotated[
    float | None,
    Opt(help="--eval-every: guidance scale (default: the official one of a named model, else --sample-cfg)."),
]
EvalEma = Annotated[str | None, Opt(help="--eval-every: the EMA evaluated, by position, key or decay (default: ema1).")]
InceptionWeights = Annotated[
    str | None,
    Opt(help="--eval-every: pt_inception-2015-12-05-6726825d.pth (default: $JITRS_INCEPTION_WEIGHTS)."),
]


def train_command(
    ctx: typer.Context,
    data: Annotated[
        str | None,
        Opt(
            help="Dataset: DIR with train/<class>/*.jpg (or <class>/*), *.tar or *.parquet shards; or builtin:mnist / "
            "builtin:digits."
        ),
    ] = D.data,
    out: Annotated[str, Opt(help="Run directory: checkpoints, metrics.jsonl, TensorBoard logs, samples.")] = D.out,
    res: Annotated[int, Opt(help="Image resolution in pixels (square, ADM center crop).")] = D.res,
    model: Annotated[
        str | None, Opt(help="Model config, e.g. JiT-L/16 (default: JiT-B/16 at 256 px, JiT-B/32 at 512 px).")
    ] = D.model,
    model_arg: Annotated[
        list[str] | None, Opt(help="Override a JiT constructor argument, KEY=VALUE (repeatable), e.g. depth=4.")
    ] = None,
    batch_size: Annotated[int, Opt(help="Images per GPU (per process) per micro-step.")] = D.batch_size,
    global_batch: Annotated[
        int | None, Opt(help="Images per optimiser step over all GPUs; sets --accum (default: batch × GPUs).")
    ] = D.global_batch,
    accum: Annotated[
        int | None, Opt(help="Gradient-accumulation micro-steps per optimiser step (default: 1).")
    ] = D.accum,
    epochs: Annotated[float, Opt(help="Training length in epochs (passes over the dataset).")] = D.epochs,
    steps: Annotated[int | None, Opt(help="Training length in optimiser steps; overrides --epochs.")] = D.steps,
    resume: Annotated[
        str | None, Opt(help="Continue a run: a checkpoint file, or a run directory (its newest checkpoint).")
    ] = D.resume,
    init: InitOption = D.init,
    overwrite: Annotated[
        bool, Opt(help="Start over in an --out that already holds a run, deleting that run's checkpoints and logs.")
    ] = D.overwrite,
    config: Annotated[Path | None, Opt(help="TOML or YAML file of options; command-line flags override it.")] = None,
    demo: Annotated[
        bool, Opt(help="Small JiT on builtin:mnist, under 10 minutes on a 2-core CPU, with a quality score.")
    ] = False,
    blr: Annotated[float, Opt(help="Base learning rate; lr = blr × global batch / 256.")] = D.blr,
    warmup_epochs: Annotated[float, Opt(help="Linear warmup length in epochs (per iteration).")] = D.warmup_epochs,
    schedule: Annotated[str, Opt(help="Learning-rate schedule after warmup: constant or cosine.")] = D.schedule,
    min_lr: Annotated[float, Opt(help="Final learning rate of the cosine schedule.")] = D.min_lr,
    weight_decay: Annotated[
        float, Opt(help="AdamW weight decay (never on norms, biases, embeddings).")
    ] = D.weight_decay,
    grad_clip: Annotated[float, Opt(help="Clip the global gradient norm to this value; 0 = off.")] = D.grad_clip,
    noise_scale: Annotated[
        float | None, Opt(help="Noise standard deviation (default: 1.0 up to 256 px, res/256 above).")
    ] = D.noise_scale,
    p_mean: Annotated[float, Opt(help="Mean of the logit-normal time distribution.")] = D.p_mean,
    p_std: Annotated[float, Opt(help="Std of the logit-normal time distribution.")] = D.p_std,
    t_eps: Annotated[float, Opt(help="Clamp of 1 − t in the velocity.")] = D.t_eps,
    label_drop: Annotated[
        float, Opt(help="Probability of the null class (for classifier-free guidance).")
    ] = D.label_drop,
    flip: Annotated[
        bool, Opt("--flip/--no-flip", help="Random horizontal flips (p = 0.5); off for data mirroring changes.")
    ] = D.flip,
    ema: EmaOption = DEFAULT_EMA,
    seed: Annotated[int, Opt(help="Seed of the data order, flips, noise and initialisation.")] = D.seed,
    ckpt_every: Annotated[int, Opt(help="Save a checkpoint every N optimiser steps (and at the end).")] = D.ckpt_every,
    keep_last: Annotated[int, Opt(help="Keep only the newest K checkpoints; 0 keeps all.")] = D.keep_last,
    sample_every: Annotated[int, Opt(help="Write a grid of EMA samples every N steps; 0 = never.")] = D.sample_every,
    sample_steps: Annotated[
        int, Opt(help="Heun steps of the sample grids (and of `jitrs sample` of this run).")
    ] = D.sample_steps,
    sample_cfg: Annotated[
        float, Opt(help="Guidance scale of the sample grids (interval 0.1–1; and of `jitrs sample` of this run).")
    ] = D.sample_cfg,
    quality_samples: Annotated[
        int, Opt(help="Built-in datasets: score N samples of the final checkpoint (recognised %, FD); 0 = off.")
    ] = D.quality_samples,
    eval_every: EvalEvery = D.eval_every,
    eval_ref: EvalRef = D.eval_ref,
    eval_n: Annotated[int, Opt(help="--eval-every: samples per evaluation, class-balanced.")] = D.eval_n,
    eval_cfg: EvalCfg = D.eval_cfg,
    eval_ema: EvalEma = D.eval_ema,
    inception_weights: InceptionWeights = D.inception_weights,
    log_every: Annotated[int, Opt(help="Read the loss back and log it every N steps.")] = D.log_every,
    compile: Annotated[
        bool | None, Opt("--compile/--no-compile", help="torch.compile the model (default: on CUDA).")
    ] = D.compile,
    bf16: Annotated[bool | None, Opt("--bf16/--no-bf16", help="bf16 autocast (default: on CUDA).")] = D.bf16,
    fsdp: Annotated[bool, Opt(help="Shard parameters and optimiser state (FSDP) instead of DDP.")] = D.fsdp,
    threads: Annotated[
        int | None, Opt(help="Decode threads per process (default: the cores divided among the processes of a node).")
    ] = D.threads,
    loader_workers: Annotated[
        int, Opt(help="Batches decoded concurrently (each into its own pinned buffers).")
    ] = D.loader_workers,
    device: Annotated[str | None, Opt(help="cuda, cpu, ... (default: cuda when available, else cpu).")] = D.device,
) -> int:
    """Train a JiT on an image folder (single GPU, or under torchrun for DDP/FSDP).

    Exit codes: 0 the run finished; 2 bad input (one line says what); 1 a file could not be written; 130 / 143
    stopped by SIGINT / SIGTERM after saving a checkpoint (continue with --resume RUN).
    """
    values = dict(locals())
    explicit: dict[str, Any] = {}
    for name, value in values.items():
        if name in ("ctx", "config", "demo"):
            continue
        source = ctx.get_parameter_source(name)
        if source is not None and source.name == "DEFAULT":
            continue
        if name == "model_arg":
            explicit["model_args"] = parse_model_args(value or [])
        elif name == "ema":
            explicit["ema"] = parse_decays(value)
        else:
            explicit[name] = value
    from jitrs.train import train

    file_options = read_config_file(config) if config is not None else {}
    resume_path = explicit.get("resume", file_options.get("resume"))
    if resume_path is None:
        return train(build_config(explicit, file_options, demo, D.to_dict()))
    return _resume(resume_path, explicit, file_options, demo)


def _resume(resume_path: str, explicit: dict[str, Any], file_options: dict[str, Any], demo: bool) -> int:
    """`jitrs train --resume RUN`: the run's saved options are the defaults the command line overrides."""
    from jitrs.train import REFUSE_INIT_WITH_RESUME, load_resume, train

    if explicit.get("init", file_options.get("init")) is not None:
        raise UserError(REFUSE_INIT_WITH_RESUME)
    checkpoint, ckpt = load_resume(resume_path)
    refuse_changed_architecture(explicit, ckpt.raw["train_config"], checkpoint)
    defaults = resumed_defaults(resume_path, ckpt.raw["train_config"], checkpoint)
    return train(build_config(explicit, file_options, demo, defaults), resume=(checkpoint, ckpt))
