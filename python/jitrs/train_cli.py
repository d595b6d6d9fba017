"""`jitrs train`: command-line options and config files -> a TrainConfig, then jitrs.train.train().

Precedence: flags given on the command line > the --config file (TOML or YAML, keys are option names with
dashes or underscores) > the --demo preset > the defaults below (the paper's recipe).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from jitrs.errors import UserError

SCHEDULES = ("constant", "cosine")


@dataclass
class TrainConfig:
    """Everything a training run depends on; saved into every checkpoint as a plain dict."""

    data: str | None = None  # DATA dir (ImageFolder layout) or "digits" (built in)
    out: str = "runs/jit"
    res: int = 256
    model: str | None = None  # None: JiT-B/16 at 256 px, JiT-B/32 at 512 px (256 tokens)
    model_args: dict[str, Any] = field(default_factory=dict)  # JiT constructor overrides (depth, hidden_size...)
    batch_size: int = 128  # per process and micro-step
    global_batch: int | None = None
    accum: int | None = None
    epochs: float = 600.0
    steps: int | None = None
    resume: str | None = None
    init: str | None = None
    blr: float = 5e-5
    warmup_epochs: float = 5.0
    schedule: str = "constant"
    min_lr: float = 0.0
    weight_decay: float = 0.0
    grad_clip: float = 0.0
    noise_scale: float | None = None  # None: 1.0 up to 256 px, res/256 above (2.0 at 512)
    p_mean: float = -0.8
    p_std: float = 0.8
    t_eps: float = 0.05
    label_drop: float = 0.1
    ema1: float = 0.9999
    ema2: float = 0.9996
    seed: int = 0
    ckpt_every: int = 5000
    keep_last: int = 3
    sample_every: int = 5000
    sample_steps: int = 50
    sample_cfg: float = 3.0
    log_every: int = 100
    compile: bool | None = None  # None: on for CUDA
    bf16: bool | None = None  # None: on for CUDA
    fsdp: bool = False
    threads: int | None = None
    loader_workers: int = 2
    device: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# `--demo`: a small JiT on the built-in digits on a CPU in a few minutes. Short runs need a larger learning
# rate and faster EMAs than the 600-epoch recipe.
DEMO: dict[str, Any] = {
    "data": "digits",
    "res": 16,
    "model": "JiT-S/4",
    "model_args": {"depth": 4, "hidden_size": 128, "num_heads": 4, "in_context_len": 4, "in_context_start": 1},
    "batch_size": 64,
    "steps": 1000,
    "blr": 4e-3,
    "warmup_epochs": 2.0,
    "ema1": 0.995,
    "ema2": 0.99,
    "ckpt_every": 500,
    "sample_every": 250,
    "sample_steps": 20,
    "sample_cfg": 2.0,
    "log_every": 10,
}

_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def read_config_file(path: Path) -> dict[str, Any]:
    """Options from a TOML (.toml) or YAML (.yaml/.yml) file, keys normalised to field names."""
    if not path.is_file():
        raise UserError(f"--config {path}: no such file")
    if path.suffix not in (".toml", ".yaml", ".yml"):
        raise UserError(f"--config {path}: use a .toml, .yaml or .yml file")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            try:
                import tomllib
            except ImportError:  # Python 3.10
                import tomli as tomllib

            raw = tomllib.loads(text)
        else:
            import yaml

            raw = yaml.safe_load(text) or {}
    except Exception as e:  # tomllib.TOMLDecodeError, yaml.YAMLError: any parse failure is the file's fault
        raise UserError(f"--config {path}: cannot parse it ({type(e).__name__}: {e})") from None
    if not isinstance(raw, dict):
        raise UserError(f"--config {path}: expected a table of options at the top level")
    options = {str(k).replace("-", "_"): v for k, v in raw.items()}
    unknown = sorted(set(options) - set(_FIELDS) - {"config", "demo"})
    if unknown:
        raise UserError(f"--config {path}: unknown option(s) {', '.join(unknown)}")
    options.pop("config", None)
    return options


def parse_model_args(items: list[str]) -> dict[str, Any]:
    """["depth=4", "proj_drop=0.1"] -> {"depth": 4, "proj_drop": 0.1} (values parsed as JSON when they can be)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--model-arg {item!r}: expected KEY=VALUE, e.g. depth=4")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def build_config(
    explicit: dict[str, Any], file_options: dict[str, Any], demo: bool, defaults: dict[str, Any]
) -> TrainConfig:
    """Merge the layers (see the module docstring). `explicit` holds only the flags given on the command line."""
    merged = dict(defaults)
    file_options = dict(file_options)
    if demo or file_options.pop("demo", False):
        merged.update(DEMO)
    merged.update(file_options)
    merged.update(explicit)
    return TrainConfig(**merged)


def resumed_defaults(resume: str, saved: dict[str, Any], checkpoint: Path) -> dict[str, Any]:
    """The defaults of a resumed run: the run's own saved options, writing on into the checkpoint's directory."""
    defaults = {k: v for k, v in saved.items() if k in _FIELDS}
    defaults.update(resume=resume, out=str(checkpoint.parent))
    return defaults


Opt = typer.Option
D = TrainConfig()


def train_command(
    ctx: typer.Context,
    data: Annotated[
        str | None, Opt(help="Dataset: DIR with train/<class>/*.jpg (or <class>/*), or 'digits' (built in).")
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
    init: Annotated[
        str | None, Opt(help="Start from these weights (official checkpoint-*.pth, jitrs .pt or safetensors).")
    ] = D.init,
    config: Annotated[Path | None, Opt(help="TOML or YAML file of options; command-line flags override it.")] = None,
    demo: Annotated[bool, Opt(help="Small JiT on the built-in digits, a few minutes on a CPU.")] = False,
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
    ema1: Annotated[float, Opt(help="Decay of the first EMA (used for samples and evaluation).")] = D.ema1,
    ema2: Annotated[float, Opt(help="Decay of the second EMA.")] = D.ema2,
    seed: Annotated[int, Opt(help="Seed of the data order, flips, noise and initialisation.")] = D.seed,
    ckpt_every: Annotated[int, Opt(help="Save a checkpoint every N optimiser steps (and at the end).")] = D.ckpt_every,
    keep_last: Annotated[int, Opt(help="Keep only the newest K checkpoints; 0 keeps all.")] = D.keep_last,
    sample_every: Annotated[int, Opt(help="Write a grid of EMA samples every N steps; 0 = never.")] = D.sample_every,
    sample_steps: Annotated[int, Opt(help="Heun steps of the sample grid.")] = D.sample_steps,
    sample_cfg: Annotated[float, Opt(help="Guidance scale of the sample grid (interval 0.1–1).")] = D.sample_cfg,
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
) -> None:
    """Train a JiT on an image folder (single GPU, or under torchrun for DDP/FSDP)."""
    values = dict(locals())
    explicit = {}
    for name, value in values.items():
        if name in ("ctx", "config", "demo"):
            continue
        source = ctx.get_parameter_source(name)
        if source is not None and source.name == "DEFAULT":
            continue
        if name == "model_arg":
            explicit["model_args"] = parse_model_args(value or [])
        else:
            explicit[name] = value
    from jitrs.train import load_resume, train

    file_options = read_config_file(config) if config is not None else {}
    resume_path = explicit.get("resume", file_options.get("resume"))
    if resume_path is None:
        train(build_config(explicit, file_options, demo, D.to_dict()))
        return
    checkpoint, ckpt = load_resume(resume_path)
    defaults = resumed_defaults(resume_path, ckpt.raw["train_config"], checkpoint)
    train(build_config(explicit, file_options, demo, defaults), resume=(checkpoint, ckpt))
