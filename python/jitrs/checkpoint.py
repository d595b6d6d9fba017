"""Read and write JiT checkpoints: official `checkpoint-*.pth`, jitrs's own `.pt`, and `.safetensors`.

Nothing is ever unpickled beyond tensors, plain containers and (for official files) `argparse.Namespace`:
`torch.load(weights_only=True)` refuses every other class, and we report that as a refusal for safety.

jitrs checkpoint format (a dict of plain containers and tensors, so `weights_only=True` loads it):
    {"format": "jitrs", "version": 1, "config": {JiT kwargs}, "name": "JiT-B/16" | None,
     "flow": {"noise_scale": ..., "P_mean": ..., ...}, "model": sd, "ema1": sd, ..., "emaK": sd,
     "ema_decays": {"ema1": 0.9999, ...}, "class_names": [...] | None, "step": int,
     ...training state (optimizer, rng, epoch, ...)}
State dicts are stored unprefixed, with the official parameter names. Files written before "ema_decays" existed
(and official ones) give their EMAs' decays through their training options when those hold them.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import pickle
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from jitrs.atomic import atomic_path
from jitrs.ema_keys import ema_index, select_weight_set
from jitrs.errors import UserError
from jitrs.model import JiT, JiT_models, JiTConfig

FORMAT_VERSION = 1
# Official checkpoints name the weight sets differently and prefix keys with the denoiser's attribute `net.`.
_OFFICIAL_KINDS = {"model": "model", "model_ema1": "ema1", "model_ema2": "ema2"}
_OFFICIAL_DECAYS = {"ema1": "ema_decay1", "ema2": "ema_decay2"}  # their argparse names
_PREFIXES = ("net.", "module.", "_orig_mod.")

StateDict = dict[str, torch.Tensor]


@dataclass
class Checkpoint:
    """What a checkpoint holds, whatever its format.

    config: JiT constructor keywords. name: the named config ("JiT-B/16") or None. noise_scale: the flow's
    noise scale. flow: every flow hyper-parameter stored (P_mean, P_std, t_eps, ...). weights: state dicts
    (unprefixed, official names, float tensors) keyed "model", "ema1", ..., "emaK". decays: each EMA key's
    decay where the file records it. raw: the rest of the file (training state: optimizer, epoch, ...).
    """

    path: Path
    config: dict[str, Any]
    name: str | None
    noise_scale: float
    weights: dict[str, StateDict]
    flow: dict[str, Any] = field(default_factory=dict)
    class_names: list[str] | None = None
    step: int | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    decays: dict[str, float] = field(default_factory=dict)

    def ema_sets(self) -> dict[str, float | None]:
        """The EMAs stored, key -> decay (None where the file does not record it), in key order."""
        keys = sorted((k for k in self.weights if ema_index(k) is not None), key=lambda k: ema_index(k) or 0)
        return {k: self.decays.get(k) for k in keys}

    def select(self, spec: str | None, param: str = "ema") -> str:
        """The key of the weight set a user's `--ema` value names: "1".."K" (position), "ema3" (key), "0.9998"
        (decay), "none" or "model" (the raw weights); None takes "ema1" when stored (the official evaluation's),
        else the only set (a .safetensors export holds one). Raises UserError naming the sets held otherwise."""
        sets: dict[str, float | None] = {k: None for k in self.weights if ema_index(k) is None}
        return select_weight_set(spec, {**sets, **self.ema_sets()}, str(self.path), param)

    def build(self, ema: str | None = None, device: torch.device | str = "cpu") -> JiT:
        """A JiT in eval mode with one weight set loaded strictly: `ema` as select() reads it ("ema2", "2",
        "0.9996", "model"; None: "ema1" when present, else the only set stored)."""
        kind = self.select(ema)
        with torch.device("meta"):
            model = JiT(**self.config)
        # Built on the meta device (no wasted random init), then a copy of the weights is assigned (the model
        # never shares storage with this Checkpoint) and the RoPE tables, not in the state dict, computed.
        weights = {k: v.to(device, copy=True) for k, v in self.weights[kind].items()}
        model.load_state_dict(weights, strict=True, assign=True)
        for key, table in model.rope_tables().items():
            setattr(model, key, table.to(device))
        return model.eval()


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read an official checkpoint-*.pth, a jitrs checkpoint or a jitrs .safetensors file.

    Raises FileNotFoundError for a missing file and UserError (one sentence naming the file) for anything else
    unusable: not a checkpoint, missing keys, weights of another architecture, a pickle holding other objects.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist or is not a file")
    with open(path, "rb") as f:
        head = f.read(9)
    if _looks_like_safetensors(head, path.stat().st_size):
        ckpt = _load_safetensors(path)
    else:
        obj = _torch_load(path, head)
        if not isinstance(obj, dict):
            raise UserError(f"{path}: not a checkpoint (it holds a {type(obj).__name__}, not a dict)")
        if obj.get("format") == "jitrs":
            ckpt = _from_jitrs(path, obj)
        elif "model" in obj and "args" in obj:
            ckpt = _from_official(path, obj)
        else:
            raise UserError(
                f"{path}: not a JiT checkpoint (expected a jitrs checkpoint, or an official one with 'model' "
                f"and 'args'; found keys {', '.join(map(str, list(obj)[:8]))})"
            )
    for kind, sd in ckpt.weights.items():
        _check_architecture(path, kind, ckpt.config, sd)
    return ckpt


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    """Write a jitrs checkpoint atomically: a temp file in the same folder, fsynced, then renamed."""
    if not isinstance(payload, dict):
        raise TypeError(f"save_checkpoint: payload must be a dict, got {type(payload).__name__}")
    _atomic_write(Path(path), lambda f: torch.save(payload, f))


def checkpoint_payload(
    model: JiT,
    *,
    model_state: StateDict | None = None,
    name: str | None = None,
    flow: dict[str, Any] | None = None,
    emas: dict[str, StateDict] | None = None,
    ema_decays: dict[str, float] | None = None,
    class_names: list[str] | None = None,
    step: int = 0,
    **training_state: Any,
) -> dict[str, Any]:
    """The jitrs checkpoint dict for `model`, ready for save_checkpoint: its config, as "model" its current
    weights or `model_state` (a gathered full state dict of a sharded model), and `emas` keyed "ema1".."emaK"
    with their `ema_decays`."""
    emas = dict(emas or {})
    ema_decays = dict(ema_decays or {})
    bad = [k for k in emas if ema_index(k) is None] + [k for k in ema_decays if k not in emas]
    if bad:
        raise ValueError(f"checkpoint_payload: {bad[0]!r} is not the key of a given EMA (ema1, ema2, ...)")
    misplaced = [k for k in training_state if ema_index(k) is not None or k == "ema_decays"]
    if misplaced:
        raise ValueError(f"checkpoint_payload: pass EMA weights as emas={{{misplaced[0]!r}: ...}}, not as keywords")
    payload: dict[str, Any] = {
        "format": "jitrs",
        "version": FORMAT_VERSION,
        "config": model.config,
        "name": name,
        "flow": dict(flow or {}),
        "model": _plain_state_dict(model.state_dict() if model_state is None else model_state),
        "class_names": class_names,
        "step": step,
    }
    for kind, sd in emas.items():
        payload[kind] = _plain_state_dict(sd)
    if ema_decays:
        payload["ema_decays"] = {k: float(d) for k, d in ema_decays.items()}
    return {**payload, **training_state}


def save_safetensors(
    path: str | os.PathLike[str],
    model: JiT | StateDict,
    *,
    config: dict[str, Any] | None = None,
    name: str | None = None,
    flow: dict[str, Any] | None = None,
    class_names: list[str] | None = None,
    step: int | None = None,
) -> None:
    """Write one weight set as .safetensors (atomically); config, name, flow, class names go in the metadata.

    `model` is a JiT (its config is used when `config` is None) or a state dict (then `config` is required).
    """
    if isinstance(model, JiT):
        config = model.config if config is None else config
        sd = model.state_dict()
    elif isinstance(model, dict):
        if config is None:
            raise ValueError("save_safetensors: config is required when model is a state dict")
        sd = model
    else:
        raise TypeError(f"save_safetensors: model must be a JiT or a state dict, got {type(model).__name__}")
    _check_config(Path(path), config)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in _plain_state_dict(sd).items()}
    metadata = {
        "format": "jitrs",
        "version": str(FORMAT_VERSION),
        "config": json.dumps(config),
        "name": json.dumps(name),
        "flow": json.dumps(dict(flow or {})),
        "class_names": json.dumps(class_names),
        "step": json.dumps(step),
    }
    _atomic_write(Path(path), lambda f: f.write(_safetensors_bytes(tensors, metadata)))


# ---------------------------------------------------------------- reading


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    # safetensors: an 8-byte little-endian header length, then a JSON object.
    return len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < size


def _torch_load(path: Path, head: bytes) -> Any:
    if not (head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")):  # zip (torch.save) or a legacy pickle
        raise UserError(f"{path}: not a checkpoint (neither a torch.save file nor .safetensors)")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        culprit = re.search(r"GLOBAL ([\w.]+)", str(e), flags=re.IGNORECASE)
        if culprit or "WeightsUnpickler" in str(e):
            what = f" ({culprit.group(1)})" if culprit else ""
            raise UserError(
                f"{path}: refused for safety: its pickle holds objects other than tensors, plain containers "
                f"and argparse.Namespace{what}, and loading them could run arbitrary code"
            ) from None
        raise UserError(f"{path}: not a readable checkpoint ({_first_line(e)})") from None
    except (RuntimeError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as e:
        raise UserError(f"{path}: not a readable checkpoint (truncated or corrupt: {_first_line(e)})") from None


def _from_official(path: Path, obj: dict[str, Any]) -> Checkpoint:
    args = obj["args"]
    if not isinstance(args, argparse.Namespace):
        raise UserError(f"{path}: 'args' is a {type(args).__name__}, not the argparse.Namespace official files hold")
    missing = [a for a in ("model", "img_size", "class_num") if not hasattr(args, a)]
    if missing:
        raise UserError(f"{path}: its 'args' lacks {', '.join(missing)}, needed to rebuild the model")
    if args.model not in JiT_models:
        raise UserError(f"{path}: unknown model {args.model!r} in its args (known: {', '.join(JiT_models)})")
    config = {
        **JiT_models[args.model].to_dict(),
        "input_size": int(args.img_size),
        "num_classes": int(args.class_num),
        "attn_drop": float(getattr(args, "attn_dropout", 0.0)),
        "proj_drop": float(getattr(args, "proj_dropout", 0.0)),
    }
    flow_keys = (
        "noise_scale",
        "P_mean",
        "P_std",
        "t_eps",
        "label_drop_prob",
        "cfg",
        "interval_min",
        "interval_max",
    )
    flow = {k: getattr(args, k) for k in flow_keys if hasattr(args, k)}
    if "label_drop_prob" in flow:
        flow["label_drop"] = flow.pop("label_drop_prob")
    weights = {kind: _strip_prefix(path, key, obj[key]) for key, kind in _OFFICIAL_KINDS.items() if key in obj}
    decays = {k: getattr(args, a) for k, a in _OFFICIAL_DECAYS.items() if k in weights and hasattr(args, a)}
    epoch = obj.get("epoch")
    raw = {k: v for k, v in obj.items() if k not in _OFFICIAL_KINDS and k != "args"}
    return Checkpoint(
        path=path,
        config=_full_config(config),
        name=args.model,
        noise_scale=float(flow.get("noise_scale", 1.0)),
        weights=weights,
        flow=flow,
        step=None,
        raw={**raw, "epoch": epoch} if epoch is not None else raw,
        decays=_decays(path, decays),
    )


def _from_jitrs(path: Path, obj: dict[str, Any]) -> Checkpoint:
    version = obj.get("version")
    if version != FORMAT_VERSION:
        raise UserError(f"{path}: jitrs checkpoint version {version!r} is not supported (this jitrs reads 1)")
    if "config" not in obj:
        raise UserError(f"{path}: jitrs checkpoint lacks its 'config'")
    config = _check_config(path, obj["config"])
    kinds = ["model"] * ("model" in obj) + sorted(
        (k for k in obj if isinstance(k, str) and ema_index(k) is not None), key=lambda k: ema_index(k) or 0
    )
    weights = {kind: _strip_prefix(path, kind, obj[kind]) for kind in kinds if obj.get(kind) is not None}
    if not weights:
        raise UserError(f"{path}: jitrs checkpoint holds no weights (no 'model', 'ema1', ...)")
    flow = dict(obj.get("flow") or {})
    known = {"format", "version", "config", "name", "flow", "class_names", "step", "ema_decays", *kinds}
    decays = obj.get("ema_decays")
    if decays is None:  # written before "ema_decays": the run's options say which decays its EMAs had
        run = obj.get("train_config") or {}
        ema = run.get("ema")
        listed = ema if isinstance(ema, list) else [run.get("ema1"), run.get("ema2")]
        decays = {f"ema{i + 1}": d for i, d in enumerate(listed) if d is not None}
    if not isinstance(decays, dict):
        raise UserError(f"{path}: its 'ema_decays' is a {type(decays).__name__}, not a dict")
    return Checkpoint(
        path=path,
        config=config,
        name=obj.get("name"),
        noise_scale=float(flow.get("noise_scale", 1.0)),
        weights=weights,
        flow=flow,
        class_names=obj.get("class_names"),
        step=obj.get("step"),
        raw={k: v for k, v in obj.items() if k not in known},
        decays=_decays(path, {k: d for k, d in decays.items() if k in weights}),
    )


def _load_safetensors(path: Path) -> Checkpoint:
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            sd = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable .safetensors file ({_first_line(e)})") from None
    if meta.get("format") != "jitrs" or "config" not in meta:
        raise UserError(f"{path}: .safetensors without jitrs metadata (no model config): save it with save_safetensors")
    try:
        config = json.loads(meta["config"])
        name, flow, class_names, step = (
            json.loads(meta.get(k, "null")) for k in ("name", "flow", "class_names", "step")
        )
    except json.JSONDecodeError:
        raise UserError(f"{path}: its jitrs metadata is not valid JSON") from None
    flow = dict(flow or {})
    return Checkpoint(
        path=path,
        config=_check_config(path, config),
        name=name,
        noise_scale=float(flow.get("noise_scale", 1.0)),
        weights={"model": sd},
        flow=flow,
        class_names=class_names,
        step=step,
    )


def _decays(path: Path, decays: dict[str, Any]) -> dict[str, float]:
    for key, d in decays.items():
        if isinstance(d, bool) or not isinstance(d, (int, float)):
            raise UserError(f"{path}: the decay of its {key!r} weights is {d!r}, not a number")
    return {k: float(d) for k, d in decays.items()}


def _strip_prefix(path: Path, what: str, sd: Any) -> StateDict:
    """Drop the `net.` / `module.` / `_orig_mod.` prefixes; keep only the network's keys."""
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise UserError(f"{path}: {what!r} is not a state dict of tensors")
    for prefix in _PREFIXES:
        if any(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
    return sd


def _full_config(config: dict[str, Any]) -> dict[str, Any]:
    return JiTConfig(**config).to_dict()


def _check_config(path: Path, config: Any) -> dict[str, Any]:
    if not isinstance(config, dict):
        raise UserError(f"{path}: its model config is a {type(config).__name__}, not a dict")
    unknown = sorted(set(config) - set(JiTConfig.keys()))
    if unknown:
        raise UserError(f"{path}: unknown model config keys {', '.join(unknown)}")
    try:
        return _full_config(config)
    except (ValueError, TypeError) as e:
        raise UserError(f"{path}: its model config cannot build a JiT ({e})") from None


def _check_architecture(path: Path, kind: str, config: dict[str, Any], sd: StateDict) -> None:
    """Compare a state dict with the config's, naming the first missing, extra or mis-shaped key."""
    with torch.device("meta"):
        expected = JiT(**config).state_dict()
    missing = [k for k in expected if k not in sd]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise UserError(f"{path}: {kind!r} weights lack {missing[0]}{more}")
    extra = [k for k in sd if k not in expected]
    if extra:
        more = f" and {len(extra) - 1} more" if len(extra) > 1 else ""
        raise UserError(f"{path}: {kind!r} weights have unexpected key {extra[0]}{more} for this architecture")
    for k, v in expected.items():
        if sd[k].shape != v.shape:
            raise UserError(
                f"{path}: {kind!r} weights are for another architecture: {k} has shape {tuple(sd[k].shape)}, "
                f"the config expects {tuple(v.shape)}"
            )


# ---------------------------------------------------------------- writing


def _plain_state_dict(sd: StateDict) -> StateDict:
    for prefix in _PREFIXES:
        if any(k.startswith(prefix) for k in sd):
            sd = {k.removeprefix(prefix): v for k, v in sd.items()}
    return dict(sd)


def _safetensors_bytes(tensors: StateDict, metadata: dict[str, str]) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "w.safetensors"
        save_file(tensors, str(file), metadata=metadata)
        return file.read_bytes()


def _atomic_write(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            write(f)
    except RuntimeError as e:  # torch's zip writer reports a failed write (a full disk) as a RuntimeError
        usage = shutil.disk_usage(path.parent)  # torch's message names no errno: a nearly full disk is the cause
        full = usage.free < max(64 << 20, usage.total // 100)
        code = errno.ENOSPC if full else errno.EIO
        raise OSError(code, os.strerror(code) if full else _first_line(e), str(path)) from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__
