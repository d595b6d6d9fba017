"""jitrs: train and sample JiT (Just image Transformers) pixel diffusion, with a Rust data core.

The data path, module by module: files -> `load_batch` (Rust: decode, ADM crop, flip) -> `loader` (pinned
host memory -> GPU) -> `model.JiT` -> `flow.Flow` (loss, samplers) -> `write_pngs` (Rust).
"""

from typing import TYPE_CHECKING

from jitrs import _native
from jitrs._native import (
    DecodeError,
    center_crop,
    decode,
    load_batch,
    patchify,
    unpatchify,
    write_png,
    write_pngs,
)

if TYPE_CHECKING:  # what __getattr__ below returns, for the type checker
    from jitrs.checkpoint import Checkpoint, checkpoint_payload, load_checkpoint, save_checkpoint, save_safetensors
    from jitrs.flow import Flow
    from jitrs.model import JiT, JiT_models, JiTConfig

# The PyTorch side is imported on first use (PEP 562), so the data core and the command line's help and input
# checks work without loading torch.
_TORCH_NAMES = {
    "Checkpoint": "jitrs.checkpoint",
    "checkpoint_payload": "jitrs.checkpoint",
    "load_checkpoint": "jitrs.checkpoint",
    "save_checkpoint": "jitrs.checkpoint",
    "save_safetensors": "jitrs.checkpoint",
    "Flow": "jitrs.flow",
    "JiT": "jitrs.model",
    "JiTConfig": "jitrs.model",
    "JiT_models": "jitrs.model",
}


def __getattr__(name: str) -> object:
    if name not in _TORCH_NAMES:
        raise AttributeError(f"module 'jitrs' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_TORCH_NAMES[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


__all__ = [
    "Checkpoint",
    "DecodeError",
    "Flow",
    "JiT",
    "JiTConfig",
    "JiT_models",
    "_native",
    "center_crop",
    "checkpoint_payload",
    "decode",
    "load_batch",
    "load_checkpoint",
    "patchify",
    "save_checkpoint",
    "save_safetensors",
    "unpatchify",
    "write_png",
    "write_pngs",
]
