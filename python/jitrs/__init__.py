"""jitrs: train and sample JiT (Just image Transformers) pixel diffusion, with a Rust data core."""

from jitrs import _native
from jitrs.checkpoint import (
    Checkpoint,
    checkpoint_payload,
    load_checkpoint,
    save_checkpoint,
    save_safetensors,
)
from jitrs.model import JiT, JiT_models

__all__ = [
    "Checkpoint",
    "JiT",
    "JiT_models",
    "_native",
    "checkpoint_payload",
    "load_checkpoint",
    "save_checkpoint",
    "save_safetensors",
]
