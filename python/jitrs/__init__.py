"""jitrs: train and sample JiT (Just image Transformers) pixel diffusion, with a Rust data core."""

from jitrs import _native
from jitrs._native import center_crop

__all__ = ["_native", "center_crop"]
