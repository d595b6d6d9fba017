"""jitrs: train and sample JiT (Just image Transformers) pixel diffusion, with a Rust data core.

The data path, module by module: files -> `load_batch` (Rust: decode, ADM crop, flip) -> `loader` (pinned
host memory -> GPU) -> `model.JiT` -> `flow.Flow` (loss, samplers) -> `write_pngs` (Rust).
"""

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
from jitrs.checkpoint import (
    Checkpoint,
    checkpoint_payload,
    load_checkpoint,
    save_checkpoint,
    save_safetensors,
)
from jitrs.flow import Flow
from jitrs.model import JiT, JiT_models

__all__ = [
    "Checkpoint",
    "DecodeError",
    "Flow",
    "JiT",
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
