"""jitrs: train and sample JiT (Just image Transformers) pixel diffusion, with a Rust data core."""

from jitrs import _native

__all__ = ["_native"]
