"""jitrs: train and sample JiT (Just image Transformers) pixel diffusion, with a Rust data core."""

from jitrs import _native
from jitrs._native import DecodeError, decode, load_batch

__all__ = ["DecodeError", "_native", "decode", "load_batch"]
