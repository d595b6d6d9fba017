"""The DINOv2 ViT-L/14 image encoder, to load Meta's published weights from a local file (FD_DINOv2).

torch-fidelity 0.4's DINOv2 extractor builds the network through torch.hub (a download of code and weights)
and refuses a local weights file; this module is the same network written out, whose state dict keys are those
of the published dinov2_vitl14_pretrain.pth, fed exactly as torch-fidelity feeds it (TF-style bilinear resize
to 224 px, ImageNet normalisation) and returning the final-norm class token.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

WEIGHTS_FILE = "dinov2_vitl14_pretrain.pth"
WEIGHTS_URL = "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth"
INPUT_SIZE = 224
PATCH = 14
TRAIN_GRID = 37  # the weights' position embedding is for 518 px = 37 x 37 patches
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # (B, h, N, hd)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _LayerScale(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn, self.mlp = _Attention(dim, heads), _Mlp(dim, 4 * dim)
        self.ls1, self.ls2 = _LayerScale(dim), _LayerScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class _PatchEmbed(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, PATCH, stride=PATCH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, N, D)


HEAD_DIM = 64  # every published DINOv2 ViT has 64-wide heads


class DinoV2(nn.Module):
    """A DINOv2 ViT/14 with layer scale (ViT-L/14: 1024 wide, 24 blocks, 16 heads); forward: uint8 (B, 3, H, W)
    -> (B, dim) float32."""

    def __init__(self, dim: int = 1024, depth: int = 24) -> None:
        super().__init__()
        self.dim = dim
        heads = dim // HEAD_DIM
        self.patch_embed = _PatchEmbed(dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + TRAIN_GRID**2, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim))  # unused here; part of the published state dict
        self.blocks = nn.ModuleList(_Block(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def _positions(self, grid: int) -> torch.Tensor:
        """The position embedding resized bicubically to grid x grid patches (with DINOv2's 0.1 offset)."""
        cls, patches = self.pos_embed[:, :1], self.pos_embed[:, 1:].float()
        dim = patches.shape[-1]
        scale = (grid + 0.1) / TRAIN_GRID
        patches = F.interpolate(
            patches.reshape(1, TRAIN_GRID, TRAIN_GRID, dim).permute(0, 3, 1, 2),
            scale_factor=(scale, scale),
            mode="bicubic",
        )
        return torch.cat([cls, patches.permute(0, 2, 3, 1).reshape(1, -1, dim).to(cls.dtype)], dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = interpolate_bilinear_2d_like_tensorflow1x(
            images.float(), size=(INPUT_SIZE, INPUT_SIZE), align_corners=False
        )  # (B, 3, 224, 224) in [0, 255]
        x = torchvision.transforms.functional.normalize(x, [255 * m for m in MEAN], [255 * s for s in STD])
        x = self.patch_embed(x)  # (B, 256, D)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self._positions(math.isqrt(x.shape[1] - 1))
        for block in self.blocks:
            x = block(x)
        return self.norm(x)[:, 0].float()

    @classmethod
    def shape_of(cls, state: dict[str, torch.Tensor]) -> tuple[int, int]:
        """(width, depth) of a state dict, so the S/B/L sizes (and small test networks) all load."""
        depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
        return int(state["pos_embed"].shape[-1]), depth
