"""What a training run depends on: `TrainConfig` (saved into every checkpoint), its validation, the `--demo`
preset and the layering of config files and flags. The CLI (jitrs.train_cli) only maps flags onto it; the job
(jitrs.train) only reads it.

Precedence: flags given on the command line > the --config file (TOML or YAML, keys are option names with
dashes or underscores) > the --demo preset > the defaults below (the paper's recipe). `model_args` merge key by
key across the layers.

EMAs: `ema` lists the decays (`--ema 0.9999,0.9998,0.9996`), saved as the checkpoint's ema1, ema2, ... in that
order. Config files and checkpoints written before it name two decays `ema1` and `ema2`: they are read as
`ema = [ema1, ema2]` (a missing one takes its default).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jitrs.ema_keys import check_decays, check_ema_spec
from jitrs.errors import UserError
from jitrs.paper import LABEL_DROP, P_MEAN, P_STD, SAMPLE_STEPS, T_EPS

SCHEDULES = ("constant", "cosine")
EMA_DECAYS = (0.9999, 0.9996)  # the official code's two EMAs (the paper's three: 0.9999, 0.9998, 0.9996)
_LEGACY_EMA = ("ema1", "ema2")  # the option names of the two decays before `ema` listed any number


@dataclass
class TrainConfig:
    """Everything a training run depends on; saved into every checkpoint as a plain dict."""

    data: str | None = None  # DATA dir (ImageFolder layout) or builtin:mnist / builtin:digits
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
    overwrite: bool = False  # start over in an --out that holds a run, deleting that run's files
    blr: float = 5e-5
    warmup_epochs: float = 5.0
    schedule: str = "constant"
    min_lr: float = 0.0
    weight_decay: float = 0.0
    grad_clip: float = 0.0
    noise_scale: float | None = None  # None: 1.0 up to 256 px, res/256 above (2.0 at 512)
    p_mean: float = P_MEAN
    p_std: float = P_STD
    t_eps: float = T_EPS
    label_drop: float = LABEL_DROP
    flip: bool = True  # random horizontal flips of the training images (p = 0.5)
    ema: list[float] = field(default_factory=lambda: list(EMA_DECAYS))  # ema1, ema2, ... in this order
    seed: int = 0
    ckpt_every: int = 5000
    keep_last: int = 3
    sample_every: int = 5000
    sample_steps: int = SAMPLE_STEPS  # also what `jitrs sample` of this run uses by default
    sample_cfg: float = 3.0  # likewise, unless the model is an official one with its own published scale
    quality_samples: int = 0  # built-in datasets: score this many samples of the final checkpoint (0: off)
    eval_every: int = 0  # FID/IS of an EMA every N steps (0: off), against --eval-ref
    eval_ref: str | None = None  # reference statistics (jitrs eval --make-ref) at --res
    eval_n: int = 5000
    eval_cfg: float | None = None  # None: the official scale of a named model, else --sample-cfg
    eval_ema: str | None = None  # which EMA (as `jitrs sample --ema`); None: ema1
    inception_weights: str | None = None  # None: $JITRS_INCEPTION_WEIGHTS
    log_every: int = 100
    compile: bool | None = None  # None: on for CUDA
    bf16: bool | None = None  # None: on for CUDA
    fsdp: bool = False
    threads: int | None = None
    loader_workers: int = 2
    device: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def _check_types(self) -> None:
        """Each value has its field's type (a config file can hold anything); ints are accepted for floats."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            allowed = _TYPES[f.name]
            if value is None and type(None) in allowed:
                continue
            ok = isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed)
            if not ok:
                names = " or ".join(t.__name__ for t in allowed if t is not type(None))
                raise UserError(f"--{f.name.replace('_', '-')} must be {names}, got {value!r}")

    def validate(self) -> None:
        """Reject impossible values with one sentence naming the option."""
        self._check_types()
        if not 0 <= self.seed < 2**63:
            raise UserError(f"--seed must be in [0, 2^63), got {self.seed}")
        if self.sample_every < 0:
            raise UserError(f"--sample-every must be >= 0 (0: never), got {self.sample_every}")
        positive = ("res", "batch_size", "ckpt_every", "log_every", "sample_steps", "loader_workers")
        for name in positive:
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        for name in ("global_batch", "accum", "steps", "threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if self.epochs <= 0 and self.steps is None:
            raise UserError(f"--epochs must be positive, got {self.epochs}")
        if self.schedule not in SCHEDULES:
            raise UserError(f"--schedule {self.schedule!r}: choose one of {', '.join(SCHEDULES)}")
        try:
            check_decays(self.ema)
        except ValueError as e:
            raise UserError(str(e)) from None
        if self.blr <= 0 or self.warmup_epochs < 0 or self.weight_decay < 0 or self.grad_clip < 0 or self.keep_last < 0:
            raise UserError("--blr must be positive and --warmup-epochs, --weight-decay, --grad-clip, --keep-last >= 0")
        if self.quality_samples < 0:
            raise UserError(f"--quality-samples must be >= 0, got {self.quality_samples}")
        self._validate_eval()
        if self.data is None:
            raise UserError("--data is required: an image folder (DATA/train/<class>/*.jpg) or builtin:mnist")

    def _validate_eval(self) -> None:
        if self.eval_every < 0:
            raise UserError(f"--eval-every must be >= 0 (0: never), got {self.eval_every}")
        if self.eval_every and self.eval_ref is None:
            raise UserError("--eval-every needs --eval-ref: reference statistics made by `jitrs eval --make-ref`")
        if self.eval_n < 2:
            raise UserError(f"--eval-n must be at least 2 (a covariance needs two images), got {self.eval_n}")
        if self.eval_cfg is not None and self.eval_cfg < 0:
            raise UserError(f"--eval-cfg must be >= 0, got {self.eval_cfg}")
        check_ema_spec(self.eval_ema, "eval_ema")


def _field_types(annotation: str) -> tuple[type, ...]:
    """The runtime types a field annotation (a string, as `from __future__ import annotations` leaves it) allows."""
    names = {"int": (int,), "float": (float, int), "str": (str,), "bool": (bool,), "None": (type(None),)}
    containers = {"dict": (dict,), "list": (list,)}
    allowed: tuple[type, ...] = ()
    for part in annotation.split("|"):
        part = part.strip()
        allowed += names.get(part, containers.get(part.split("[")[0], ()))
    return allowed


_TYPES = {f.name: _field_types(str(f.type)) for f in dataclasses.fields(TrainConfig)}


# `--demo`: a small JiT on builtin:mnist, trained on a 2-core CPU in under 10 minutes to samples that a classifier
# recognises (README, "The demo": what was measured and why each setting). Digits are not mirror-symmetric, so no
# flips; small images need more noise than the 256 px recipe (P_mean -1.5); a short run needs a larger learning
# rate and faster EMAs than the 600-epoch one.
DEMO: dict[str, Any] = {
    "data": "builtin:mnist",
    "res": 28,
    "model": "JiT-S/4",
    "model_args": {
        "depth": 4,
        "hidden_size": 128,
        "num_heads": 4,
        "bottleneck_dim": 32,
        "in_context_len": 4,
        "in_context_start": 1,
        "patch_size": 4,
    },
    "batch_size": 64,
    "steps": 1800,
    "blr": 4e-3,
    "warmup_epochs": 2.0,
    "p_mean": -1.5,
    "flip": False,
    "ema": [0.995, 0.99],
    "ckpt_every": 900,
    "sample_every": 600,
    "sample_steps": 20,
    "sample_cfg": 1.5,
    "log_every": 10,
    "quality_samples": 1000,
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
            if sys.version_info >= (3, 11):
                import tomllib
            else:
                import tomli as tomllib

            raw = tomllib.loads(text)
        else:
            import yaml

            raw = yaml.safe_load(text) or {}
    except Exception as e:  # tomllib.TOMLDecodeError, yaml.YAMLError: any parse failure is the file's fault
        raise UserError(f"--config {path}: cannot parse it ({type(e).__name__}: {e})") from None
    if not isinstance(raw, dict):
        raise UserError(f"--config {path}: expected a table of options at the top level")
    options = legacy_ema({str(k).replace("-", "_"): v for k, v in raw.items()})
    if isinstance(options.get("ema"), str):
        options["ema"] = parse_decays(options["ema"])
    elif isinstance(options.get("ema"), (int, float)) and not isinstance(options["ema"], bool):
        options["ema"] = [options["ema"]]  # one EMA
    unknown = sorted(set(options) - set(_FIELDS) - {"config", "demo", "model_arg"})
    if unknown:
        raise UserError(f"--config {path}: unknown option(s) {', '.join(unknown)}")
    options.pop("config", None)
    if "model_arg" in options:  # the flag's own name, as a list of KEY=VALUE like the command line's
        items = options.pop("model_arg")
        items = [items] if isinstance(items, str) else items
        if not (isinstance(items, list) and all(isinstance(i, str) for i in items)):
            raise UserError(f'--config {path}: model-arg must be a list of KEY=VALUE strings, e.g. ["depth=4"]')
        table = options.get("model_args", {})
        if not isinstance(table, dict):
            raise UserError(f"--config {path}: model_args must be a table of KEY = VALUE")
        options["model_args"] = {**table, **parse_model_args(items)}
    return options


def parse_decays(text: str) -> list[float]:
    """ "0.9999,0.9998" -> [0.9999, 0.9998] (the value of --ema); each must be a number in (0, 1), all distinct."""
    try:
        decays = [float(part) for part in text.split(",")]
    except ValueError:
        raise UserError(f"--ema {text}: expected comma-separated EMA decays such as 0.9999,0.9996") from None
    try:
        check_decays(decays, f"--ema {text}")
    except ValueError as e:
        raise UserError(str(e)) from None
    return decays


def legacy_ema(options: dict[str, Any]) -> dict[str, Any]:
    """Options (a config file's, a checkpoint's saved ones) with the old `ema1`/`ema2` read as `ema`."""
    if not any(k in options for k in _LEGACY_EMA):
        return options
    if "ema" in options:
        raise UserError("give the EMA decays once: as `ema` (a list) or as the older `ema1`/`ema2`, not both")
    out = {k: v for k, v in options.items() if k not in _LEGACY_EMA}
    out["ema"] = [options.get(k, d) for k, d in zip(_LEGACY_EMA, EMA_DECAYS, strict=True)]
    return out


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
    file_options = dict(file_options)
    file_demo = file_options.pop("demo", False)
    if not isinstance(file_demo, bool):
        raise UserError(f"demo = {file_demo!r} in the config file: use true or false")
    layers = [DEMO] if demo or file_demo else []
    merged = dict(defaults)
    for layer in [*layers, file_options, explicit]:
        model_args = {**merged.get("model_args", {}), **layer.get("model_args", {})}
        merged.update(layer)
        merged["model_args"] = model_args
    return TrainConfig(**merged)


# The model a resumed run trains is the checkpoint's: options that would build another are refused, not ignored.
def refuse_changed_architecture(explicit: dict[str, Any], saved: dict[str, Any], checkpoint: Path) -> None:
    """UserError when a --resume command line asks for another architecture than the checkpoint's run (repeating
    the run's own values is fine)."""
    for key, value in (explicit.get("model_args") or {}).items():
        if saved.get("model_args", {}).get(key) != value:
            raise UserError(
                f"--model-arg {key}={value}: {checkpoint} was trained with {key}="
                f"{saved.get('model_args', {}).get(key, 'its model default')}; {_RESUME_KEEPS_THE_MODEL}"
            )
    for key in ("model", "res"):
        if key in explicit and key in saved and explicit[key] != saved[key]:
            raise UserError(
                f"--{key} {explicit[key]}: {checkpoint} was trained with --{key} {saved[key]}; "
                + _RESUME_KEEPS_THE_MODEL
            )


_RESUME_KEEPS_THE_MODEL = (
    "--resume continues that model (to train another architecture from these weights, start a new run with --init)"
)


def resumed_defaults(resume: str, saved: dict[str, Any], checkpoint: Path) -> dict[str, Any]:
    """The defaults of a resumed run: the run's own saved options, writing on into the checkpoint's directory (its
    weights come from the checkpoint, whatever --init started it)."""
    defaults = {k: v for k, v in legacy_ema(saved).items() if k in _FIELDS}
    defaults.update(resume=resume, out=str(checkpoint.parent), overwrite=False, init=None)
    return defaults
