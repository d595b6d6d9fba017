"""jitrs: train and sample JiT (Just image Transformers) pixel diffusion, with a Rust data core."""

from jitrs import _native
from jitrs._native import patchify, unpatchify, write_png, write_pngs

__all__ = ["_native"]
__all__ += ["patchify", "unpatchify"]
__all__ += ["write_png", "write_pngs"]
