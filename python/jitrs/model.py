"""The JiT denoiser (Li & He 2025): a plain ViT on pixel patches that predicts the clean image.

Module and parameter names and shapes are exactly those of the official code (LTH14/JiT `model_jit.py`), so an
official state dict (with its `net.` prefix removed) loads with `strict=True`. What differs is the hot path:
fused `scaled_dot_product_attention` instead of a hand-written float32 QKᵀ, RoPE tables held as
non-persistent buffers (they follow `.to()`, nothing is hard-coded to CUDA), and no `torch.compile` decorators
inside the model (compile the whole model instead; a block traces without graph breaks).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class JiTConfig:
    """A JiT architecture: the constructor's keywords, validated when built. Checkpoints store `to_dict()`."""

    input_size: int = 256
    patch_size: int = 16
    in_channels: int = 3
    hidden_size: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_classes: int = 1000
    bottleneck_dim: int = 128
    in_context_len: int = 32
    in_context_start: int = 8
    attn_drop: float = 0.0
    proj_drop: float = 0.0

    def __post_init__(self) -> None:
        """Raise ValueError naming the keyword when a value cannot build a JiT."""
        for key in ("input_size", "patch_size", "in_channels", "hidden_size", "depth", "num_heads", "bottleneck_dim"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"JiT: {key} must be a positive integer, got {value!r}")
        if not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise ValueError(f"JiT: num_classes must be an integer >= 1, got {self.num_classes!r}")
        if self.input_size % self.patch_size:
            raise ValueError(f"JiT: input_size {self.input_size} is not a multiple of patch_size {self.patch_size}")
        if self.hidden_size % self.num_heads or (self.hidden_size // self.num_heads) % 4:
            raise ValueError(
                f"JiT: hidden_size {self.hidden_size} / num_heads {self.num_heads} must be a head size "
                "divisible by 4 (2-D RoPE rotates pairs in two halves)"
            )
        if self.hidden_size % 4:
            raise ValueError(f"JiT: hidden_size {self.hidden_size} must be divisible by 4 (2-D sin-cos embedding)")
        if not isinstance(self.in_context_len, int) or self.in_context_len < 0:
            raise ValueError(f"JiT: in_context_len must be an integer >= 0, got {self.in_context_len!r}")
        if self.in_context_len > 0 and not 0 <= self.in_context_start < self.depth:
            raise ValueError(
                f"JiT: in_context_start {self.in_context_start} must be a block index in [0, {self.depth})"
            )
        for key in ("attn_drop", "proj_drop"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ValueError(f"JiT: {key} must be in [0, 1), got {getattr(self, key)!r}")
        if self.mlp_ratio <= 0:
            raise ValueError(f"JiT: mlp_ratio must be positive, got {self.mlp_ratio!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))


#################################################################################
#                                 Named configs                                 #
#################################################################################

# B/L/H as in the official code; G from the paper (Tab. 9). Patch 16 at 256 px and 32 at 512 px: 256 tokens.
# The paper uses proj_drop 0.2 for H and G (official CLI flag --proj_dropout), 0 for B and L.
# JiT-S/4 is ours: a ~6M-parameter JiT at 32 px (64 tokens of 4×4) that trains on a CPU.
_B = {"depth": 12, "hidden_size": 768, "num_heads": 12, "bottleneck_dim": 128, "in_context_start": 4}
_L = {"depth": 24, "hidden_size": 1024, "num_heads": 16, "bottleneck_dim": 128, "in_context_start": 8}
_H = {"depth": 32, "hidden_size": 1280, "num_heads": 16, "bottleneck_dim": 256, "in_context_start": 10}
_G = {"depth": 40, "hidden_size": 1664, "num_heads": 16, "bottleneck_dim": 256, "in_context_start": 10}
_AT_256, _AT_512 = {"patch_size": 16, "input_size": 256}, {"patch_size": 32, "input_size": 512}
JiT_models: dict[str, JiTConfig] = {
    "JiT-S/4": JiTConfig(
        depth=6,
        hidden_size=192,
        num_heads=3,
        bottleneck_dim=32,
        in_context_len=8,
        in_context_start=2,
        patch_size=4,
        input_size=32,
    ),
    "JiT-B/16": JiTConfig(**_B, **_AT_256),
    "JiT-B/32": JiTConfig(**_B, **_AT_512),
    "JiT-L/16": JiTConfig(**_L, **_AT_256),
    "JiT-L/32": JiTConfig(**_L, **_AT_512),
    "JiT-H/16": JiTConfig(**_H, **_AT_256, proj_drop=0.2),
    "JiT-H/32": JiTConfig(**_H, **_AT_512, proj_drop=0.2),
    "JiT-G/16": JiTConfig(**_G, **_AT_256, proj_drop=0.2),
    "JiT-G/32": JiTConfig(**_G, **_AT_512, proj_drop=0.2),
}

#################################################################################
#                          Position tables (no weights)                         #
#################################################################################


def sincos_pos_embed_2d(dim: int, grid: int) -> np.ndarray:
    """Fixed 2-D sin-cos position embedding, MAE convention, float64 -> (grid*grid, dim).

    Token t = row*grid + col. Channels [0, dim/2) encode the column, [dim/2, dim) the row; each half is
    [sin(pos·ω), cos(pos·ω)] with ω_k = 10000^(-k/(dim/4)), k < dim/4.
    """
    quarter = dim // 4
    omega = 1.0 / 10000 ** (np.arange(quarter, dtype=np.float64) / quarter)  # (dim/4,)
    rows, cols = np.meshgrid(np.arange(grid, dtype=np.float64), np.arange(grid, dtype=np.float64), indexing="ij")

    def encode(pos: np.ndarray) -> np.ndarray:
        angles = pos.reshape(-1, 1) * omega  # (grid*grid, dim/4)
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    return np.concatenate([encode(cols), encode(rows)], axis=1)


def rope_angles_2d(head_dim: int, grid: int) -> torch.Tensor:
    """Axial 2-D RoPE angles, float64 -> (grid*grid, head_dim/2), one angle per rotated channel pair.

    Pairs [0, head_dim/4) rotate by the token's row, pairs [head_dim/4, head_dim/2) by its column; pair i of a
    half turns by pos · 10000^(-2i/(head_dim/2)).
    """
    quarter = head_dim // 4
    freqs = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) * 2 / (head_dim // 2))  # (hd/4,)
    pos = torch.arange(grid, dtype=torch.float64)
    rows = pos.repeat_interleave(grid)  # token t = row*grid + col
    cols = pos.repeat(grid)
    return torch.cat([rows[:, None] * freqs, cols[:, None] * freqs], dim=1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent channel pairs (2i, 2i+1) of x (..., N, d) by the angles whose cos/sin are (N, d/2)."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)  # (..., N, d/2) each
    return torch.stack((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).flatten(-2)


#################################################################################
#                                    Layers                                     #
#################################################################################


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x (B, N, D) scaled and shifted by per-image (B, 1, D) vectors."""
    return x * (1 + scale) + shift


class RMSNorm(nn.Module):
    """RMS normalisation over the last dimension with a learned gain `weight` (dim,)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The gain is cast to x's dtype: under bf16 autocast q/k are bf16, the fused kernel needs one dtype.
        return F.rms_norm(x, self.weight.shape, self.weight.to(x.dtype), self.eps)


class BottleneckPatchEmbed(nn.Module):
    """Image (B, C, H, W) -> tokens (B, N, D) through a p×p conv to `bottleneck_dim` and a 1×1 conv to D."""

    def __init__(self, patch_size: int, in_channels: int, bottleneck_dim: int, hidden_size: int) -> None:
        super().__init__()
        self.proj1 = nn.Conv2d(in_channels, bottleneck_dim, patch_size, stride=patch_size, bias=False)
        self.proj2 = nn.Conv2d(bottleneck_dim, hidden_size, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj2(self.proj1(x)).flatten(2).transpose(1, 2)  # (B, D, h, w) -> (B, h*w, D)


class TimestepEmbedder(nn.Module):
    """t (B,) float in (0, 1) -> (B, D): 256-dim [cos, sin] features, then Linear-SiLU-Linear."""

    freq_dim = 256

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(self.freq_dim, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t.float()[:, None] * freqs  # (B, 128)
        features = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, 256) float32
        return self.mlp(features.to(cast(nn.Linear, self.mlp[0]).weight.dtype))


class LabelEmbedder(nn.Module):
    """y (B,) int64 in [0, num_classes] -> (B, D); index num_classes is the null (unconditional) class."""

    def __init__(self, num_classes: int, hidden_size: int) -> None:
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + 1, hidden_size)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.embedding_table(y)


class Attention(nn.Module):
    """Multi-head self-attention with RMS-normalised q/k, 2-D RoPE and fused SDPA: (B, N, D) -> (B, N, D)."""

    def __init__(self, dim: int, num_heads: int, attn_drop: float, proj_drop: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.q_norm = RMSNorm(head_dim)
        self.k_norm = RMSNorm(head_dim)
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = attn_drop
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, N, d)
        # RoPE tables are float32; cast back so SDPA sees one dtype (bf16 under autocast).
        q = apply_rope(self.q_norm(q), cos, sin).to(v.dtype)
        k = apply_rope(self.k_norm(k), cos, sin).to(v.dtype)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(B, N, D)))


class SwiGLUFFN(nn.Module):
    """SwiGLU MLP (B, N, D) -> (B, N, D); w12 holds both input projections, hidden = int(2/3 · mlp_hidden)."""

    def __init__(self, dim: int, mlp_hidden: int, drop: float) -> None:
        super().__init__()
        hidden = int(mlp_hidden * 2 / 3)
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)
        self.ffn_dropout = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.w12(x).chunk(2, dim=-1)
        return self.w3(self.ffn_dropout(F.silu(x1) * x2))


class JiTBlock(nn.Module):
    """Transformer block with adaLN-Zero conditioning on c (B, D): x (B, N, D) -> (B, N, D)."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float, attn_drop: float, proj_drop: float):
        super().__init__()
        self.norm1 = RMSNorm(hidden_size)
        self.attn = Attention(hidden_size, num_heads, attn_drop, proj_drop)
        self.norm2 = RMSNorm(hidden_size)
        self.mlp = SwiGLUFFN(hidden_size, int(hidden_size * mlp_ratio), proj_drop)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        mod = self.adaLN_modulation(c).unsqueeze(1).chunk(6, dim=-1)  # 6 × (B, 1, D)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod
        x = x + gate_msa * self.attn(modulate(self.norm1(x), shift_msa, scale_msa), cos, sin)
        return x + gate_mlp * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


class FinalLayer(nn.Module):
    """RMSNorm, adaLN (shift, scale) and a linear map to pixels: (B, N, D) -> (B, N, p*p*C)."""

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int) -> None:
        super().__init__()
        self.norm_final = RMSNorm(hidden_size)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).unsqueeze(1).chunk(2, dim=-1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


#################################################################################
#                                      JiT                                      #
#################################################################################


class JiT(nn.Module):
    """Just image Transformer: forward(x, t, y) -> x̂, the predicted clean image.

    x (B, C, H, W) float (the noisy image z), t (B,) float in (0, 1) (1 is clean), y (B,) int64 class labels;
    x̂ (B, C, H, W), float32 (bf16 under autocast).
    `y == num_classes` is the null class used for classifier-free guidance.
    """

    def __init__(self, arch: JiTConfig | None = None, /, **keywords: Any) -> None:
        """JiT(JiTConfig(...)) or JiT(**JiTConfig fields), like the official constructor's keywords."""
        super().__init__()
        self.arch = arch = dataclasses.replace(arch or JiTConfig(), **keywords)
        # What samplers read from any JiT-like net (the official class has these attributes too).
        self.input_size, self.in_channels, self.num_classes = arch.input_size, arch.in_channels, arch.num_classes
        self.patch_size = arch.patch_size
        hidden_size, depth, patch_size = arch.hidden_size, arch.depth, arch.patch_size
        grid = arch.input_size // patch_size

        self.t_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder = LabelEmbedder(arch.num_classes, hidden_size)
        self.x_embedder = BottleneckPatchEmbed(patch_size, arch.in_channels, arch.bottleneck_dim, hidden_size)
        # Frozen but a Parameter (not a buffer) so the state dict matches the official one.
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid, hidden_size), requires_grad=False)
        if arch.in_context_len > 0:
            self.in_context_posemb = nn.Parameter(torch.zeros(1, arch.in_context_len, hidden_size))

        for key, table in self.rope_tables().items():
            self.register_buffer(key, table, persistent=False)

        # Dropout only in the middle half of the blocks (official rule: depth//4 <= i < depth//4*3).
        def middle(i: int) -> bool:
            return depth // 4 <= i < depth // 4 * 3

        self.blocks = nn.ModuleList(
            JiTBlock(
                hidden_size,
                arch.num_heads,
                arch.mlp_ratio,
                arch.attn_drop if middle(i) else 0.0,
                arch.proj_drop if middle(i) else 0.0,
            )
            for i in range(depth)
        )
        self.final_layer = FinalLayer(hidden_size, patch_size, arch.in_channels)
        self.initialize_weights()

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> JiT:
        """Build a named config from `JiT_models` ("JiT-B/16", ...), any constructor keyword overridden."""
        if name not in JiT_models:
            raise ValueError(f"unknown model {name!r}: choose one of {', '.join(JiT_models)}")
        return cls(JiT_models[name], **overrides)

    @property
    def config(self) -> dict[str, Any]:
        """The constructor keywords as plain values: JiT(**model.config) rebuilds the same architecture."""
        return self.arch.to_dict()

    def rope_tables(self) -> dict[str, torch.Tensor]:
        """The RoPE cos/sin tables (N, head_dim/2) float32, and their in-context versions (L+N, head_dim/2).

        Once the in-context tokens are prepended they get angle 0 (cos 1, sin 0): RoPE leaves them unrotated.
        """
        angles = rope_angles_2d(self.arch.hidden_size // self.arch.num_heads, self.input_size // self.patch_size)
        ctx_angles = torch.cat([angles.new_zeros(self.arch.in_context_len, angles.shape[1]), angles])
        return {
            "rope_cos": angles.cos().float(),
            "rope_sin": angles.sin().float(),
            "rope_cos_ctx": ctx_angles.cos().float(),
            "rope_sin_ctx": ctx_angles.sin().float(),
        }

    def initialize_weights(self) -> None:
        """Official initialisation: xavier linears, N(0, 0.02) embeddings, zeroed adaLN and output layers."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        grid = self.input_size // self.patch_size
        pos = torch.from_numpy(sincos_pos_embed_2d(self.arch.hidden_size, grid)).float()
        self.pos_embed.data.copy_(pos.unsqueeze(0))
        if self.arch.in_context_len > 0:
            nn.init.normal_(self.in_context_posemb, std=0.02)
        # Patch convs are initialised like linear layers on their flattened weights.
        for conv in (self.x_embedder.proj1, self.x_embedder.proj2):
            nn.init.xavier_uniform_(conv.weight.view(conv.weight.shape[0], -1))
        assert self.x_embedder.proj2.bias is not None
        nn.init.zeros_(self.x_embedder.proj2.bias)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(cast(nn.Linear, self.t_embedder.mlp[0]).weight, std=0.02)
        nn.init.normal_(cast(nn.Linear, self.t_embedder.mlp[2]).weight, std=0.02)
        # adaLN-Zero: every block starts as the identity and the untrained net predicts x = 0.
        layers = [*(cast(JiTBlock, b).adaLN_modulation[-1] for b in self.blocks), self.final_layer.adaLN_modulation[-1]]
        for layer in cast(list[nn.Linear], layers):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens (B, h*w, p*p*C) -> (B, C, h*p, w*p); tokens row-major, inside one (row, col, channel)."""
        p, c = self.patch_size, self.in_channels
        grid = self.input_size // p
        x = x.reshape(x.shape[0], grid, grid, p, p, c)
        return x.permute(0, 5, 1, 3, 2, 4).reshape(x.shape[0], c, grid * p, grid * p)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        y_emb = self.y_embedder(y)  # (B, D)
        c = self.t_embedder(t) + y_emb  # (B, D)
        h = self.x_embedder(x) + self.pos_embed  # (B, N, D)
        cos, sin = self.rope_cos, self.rope_sin
        for i, block in enumerate(self.blocks):
            if i == self.arch.in_context_start and self.arch.in_context_len > 0:
                tokens = y_emb.unsqueeze(1) + self.in_context_posemb  # (B, L, D)
                h = torch.cat([tokens.to(h.dtype), h], dim=1)  # (B, L+N, D)
                cos, sin = self.rope_cos_ctx, self.rope_sin_ctx
            h = block(h, c, cos, sin)
        h = self.final_layer(h[:, self.arch.in_context_len :], c)  # (B, N, p*p*C)
        return self.unpatchify(h)

    def flops_per_image(self) -> int:
        """Forward FLOPs for one image, matmuls and convs counted as 2·m·n·k (elementwise work ignored)."""
        d, p, c = self.arch.hidden_size, self.patch_size, self.in_channels
        n_img = (self.input_size // p) ** 2
        ffn = int(int(d * self.arch.mlp_ratio) * 2 / 3)
        flops = 2 * n_img * (p * p * c * self.arch.bottleneck_dim + self.arch.bottleneck_dim * d)  # patch embedding
        flops += 2 * (TimestepEmbedder.freq_dim * d + d * d)  # t-MLP
        for i in range(self.arch.depth):
            n = n_img + (self.arch.in_context_len if i >= self.arch.in_context_start else 0)
            flops += 2 * d * 6 * d  # adaLN
            flops += 2 * n * d * (3 * d + d + 2 * ffn) + 2 * n * ffn * d  # qkv, proj, w12, w3
            flops += 2 * 2 * n * n * d  # QKᵀ and AV
        flops += 2 * d * 2 * d + 2 * n_img * d * p * p * c  # final adaLN and linear
        return flops
