"""An independent, literal re-creation of the official JiT forward pass (LTH14/JiT model_jit.py).

Test oracle for jitrs.JiT and the baseline of benches/bench_model.py. It deliberately keeps the official hot
path: a hand-written float32 attention (QKᵀ with autocast off plus a zero bias allocated on every call), the
EVA-style RoPE (`t * cos + rotate_half(t) * sin` with cos/sin tables repeated per channel pair, padded with
cos 1 / sin 0 for the in-context tokens), an RMSNorm computed in float32 then cast back, `repeat` of the label
embedding for the in-context tokens, and the official module names so an official state dict loads. The only
differences are what running anywhere needs: the official code puts its RoPE tables and attention bias on
CUDA, here they follow a `device` argument (the tables stay plain attributes, not buffers).

Also holds `official_sample`, the official-style Heun sampler (cond and uncond as two separate forwards, both
run on every step), the sampling baseline of the bench.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------- util/model_util.py


def get_1d_sincos_from_grid(embed_dim: int, pos: np.ndarray) -> np.ndarray:
    omega = np.arange(embed_dim // 2, dtype=np.float64) / (embed_dim / 2.0)
    omega = 1.0 / 10000**omega
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def get_2d_sincos_pos_embed(embed_dim: int, grid_size: int) -> np.ndarray:
    grid_h = np.arange(grid_size, dtype=np.float32)
    grid_w = np.arange(grid_size, dtype=np.float32)
    grid = np.meshgrid(grid_w, grid_h)  # w first: the first half of the channels encodes the column
    grid = np.stack(grid, axis=0).reshape([2, 1, grid_size, grid_size])
    emb_h = get_1d_sincos_from_grid(embed_dim // 2, grid[0])
    emb_w = get_1d_sincos_from_grid(embed_dim // 2, grid[1])
    return np.concatenate([emb_h, emb_w], axis=1)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    pairs = x.reshape(*x.shape[:-1], -1, 2)
    x1, x2 = pairs.unbind(dim=-1)
    return torch.stack((-x2, x1), dim=-1).reshape(x.shape)


class VisionRotaryEmbeddingFast:
    """EVA-02-style 2-D RoPE over a (grid, grid) token layout, `dim` = half the head size."""

    def __init__(self, dim: int, pt_seq_len: int, num_cls_token: int, device: torch.device) -> None:
        freqs = 1.0 / (10000 ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))
        t = torch.arange(pt_seq_len) / pt_seq_len * pt_seq_len
        freqs = torch.einsum("i,f->if", t, freqs)
        freqs = freqs.repeat_interleave(2, dim=-1)  # '... n -> ... (n r)', r=2
        n = freqs.shape[0]
        rows = freqs[:, None, :].expand(n, n, -1)  # first half of the head: the row index
        cols = freqs[None, :, :].expand(n, n, -1)
        freqs = torch.cat([rows, cols], dim=-1).reshape(n * n, -1)
        cos, sin = freqs.cos(), freqs.sin()
        if num_cls_token > 0:
            cos = torch.cat([torch.ones(num_cls_token, cos.shape[1]), cos], dim=0)
            sin = torch.cat([torch.zeros(num_cls_token, sin.shape[1]), sin], dim=0)
        self.freqs_cos = cos.to(device)
        self.freqs_sin = sin.to(device)

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        return t * self.freqs_cos + rotate_half(t) * self.freqs_sin


# ---------------------------------------------------------------- model_jit.py


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class BottleneckPatchEmbed(nn.Module):
    def __init__(self, img_size: int, patch_size: int, in_chans: int, pca_dim: int, embed_dim: int) -> None:
        super().__init__()
        self.num_patches = (img_size // patch_size) ** 2
        self.proj1 = nn.Conv2d(in_chans, pca_dim, kernel_size=patch_size, stride=patch_size, bias=False)
        self.proj2 = nn.Conv2d(pca_dim, embed_dim, kernel_size=1, stride=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj2(self.proj1(x)).flatten(2).transpose(1, 2)


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )
        self.frequency_embedding_size = frequency_embedding_size

    @staticmethod
    def timestep_embedding(t: torch.Tensor, dim: int, max_period: int = 10000) -> torch.Tensor:
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(0, half, dtype=torch.float32) / half).to(t.device)
        args = t[:, None].float() * freqs[None]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.timestep_embedding(t, self.frequency_embedding_size))


class LabelEmbedder(nn.Module):
    def __init__(self, num_classes: int, hidden_size: int) -> None:
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + 1, hidden_size)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.embedding_table(labels)


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0):
    L, S = q.size(-2), k.size(-2)
    scale = 1 / math.sqrt(q.size(-1))
    attn_bias = torch.zeros(q.size(0), 1, L, S, dtype=q.dtype, device=q.device)
    with torch.autocast(device_type=q.device.type, enabled=False):
        attn_weight = q.float() @ k.float().transpose(-2, -1) * scale
    attn_weight += attn_bias
    attn_weight = torch.softmax(attn_weight, dim=-1)
    attn_weight = torch.dropout(attn_weight, dropout_p, train=True)
    return attn_weight @ v


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, attn_drop: float, proj_drop: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.q_norm = RMSNorm(head_dim)
        self.k_norm = RMSNorm(head_dim)
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, rope: VisionRotaryEmbeddingFast) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        q = rope(self.q_norm(q))
        k = rope(self.k_norm(k))
        x = scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop.p if self.training else 0.0)
        x = x.transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(x))


class SwiGLUFFN(nn.Module):
    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0) -> None:
        super().__init__()
        hidden_dim = int(hidden_dim * 2 / 3)
        self.w12 = nn.Linear(dim, 2 * hidden_dim)
        self.w3 = nn.Linear(hidden_dim, dim)
        self.ffn_dropout = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.w12(x).chunk(2, dim=-1)
        return self.w3(self.ffn_dropout(F.silu(x1) * x2))


class FinalLayer(nn.Module):
    def __init__(self, hidden_size: int, patch_size: int, out_channels: int) -> None:
        super().__init__()
        self.norm_final = RMSNorm(hidden_size)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class JiTBlock(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float, attn_drop: float, proj_drop: float):
        super().__init__()
        self.norm1 = RMSNorm(hidden_size, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads, attn_drop, proj_drop)
        self.norm2 = RMSNorm(hidden_size, eps=1e-6)
        self.mlp = SwiGLUFFN(hidden_size, int(hidden_size * mlp_ratio), drop=proj_drop)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor, feat_rope: VisionRotaryEmbeddingFast) -> torch.Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=-1)
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa), rope=feat_rope)
        return x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


class OfficialJiT(nn.Module):
    """Same constructor keywords as jitrs.JiT plus `device` (where the RoPE tables live)."""

    def __init__(
        self,
        input_size: int = 256,
        patch_size: int = 16,
        in_channels: int = 3,
        hidden_size: int = 1024,
        depth: int = 24,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        num_classes: int = 1000,
        bottleneck_dim: int = 128,
        in_context_len: int = 32,
        in_context_start: int = 8,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = in_channels
        self.patch_size = patch_size
        self.input_size = input_size
        self.in_context_len = in_context_len
        self.in_context_start = in_context_start
        self.num_classes = num_classes
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size)
        self.x_embedder = BottleneckPatchEmbed(input_size, patch_size, in_channels, bottleneck_dim, hidden_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.x_embedder.num_patches, hidden_size), requires_grad=False)
        if in_context_len > 0:
            self.in_context_posemb = nn.Parameter(torch.zeros(1, in_context_len, hidden_size))
            nn.init.normal_(self.in_context_posemb, std=0.02)
        half_head_dim = hidden_size // num_heads // 2
        grid = input_size // patch_size
        self.feat_rope = VisionRotaryEmbeddingFast(half_head_dim, grid, 0, torch.device(device))
        self.feat_rope_incontext = VisionRotaryEmbeddingFast(half_head_dim, grid, in_context_len, torch.device(device))
        self.blocks = nn.ModuleList(
            [
                JiTBlock(
                    hidden_size,
                    num_heads,
                    mlp_ratio,
                    attn_drop if (depth // 4 * 3 > i >= depth // 4) else 0.0,
                    proj_drop if (depth // 4 * 3 > i >= depth // 4) else 0.0,
                )
                for i in range(depth)
            ]
        )
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels)
        pos = get_2d_sincos_pos_embed(hidden_size, grid)
        self.pos_embed.data.copy_(torch.from_numpy(pos).float().unsqueeze(0))

    def unpatchify(self, x: torch.Tensor, p: int) -> torch.Tensor:
        c = self.out_channels
        h = w = int(x.shape[1] ** 0.5)
        x = x.reshape(x.shape[0], h, w, p, p, c)
        x = torch.einsum("nhwpqc->nchpwq", x)
        return x.reshape(x.shape[0], c, h * p, h * p)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        t_emb = self.t_embedder(t)
        y_emb = self.y_embedder(y)
        c = t_emb + y_emb
        x = self.x_embedder(x)
        x += self.pos_embed
        for i, block in enumerate(self.blocks):
            if self.in_context_len > 0 and i == self.in_context_start:
                in_context_tokens = y_emb.unsqueeze(1).repeat(1, self.in_context_len, 1)
                in_context_tokens += self.in_context_posemb
                x = torch.cat([in_context_tokens, x], dim=1)
            x = block(x, c, self.feat_rope if i < self.in_context_start else self.feat_rope_incontext)
        x = x[:, self.in_context_len :]
        x = self.final_layer(x, c)
        return self.unpatchify(x, self.patch_size)


# ---------------------------------------------------------------- denoiser.py (sampling)


@torch.no_grad()
def official_sample(
    net: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    labels: torch.Tensor,
    *,
    num_classes: int,
    img_size: int,
    steps: int = 50,
    cfg: float = 1.0,
    interval: tuple[float, float] = (0.1, 1.0),
    noise_scale: float = 1.0,
    t_eps: float = 0.05,
) -> torch.Tensor:
    """Heun on every interval but the last (Euler); cond and uncond are two forwards, always both run."""
    device = labels.device
    bsz = labels.shape[0]
    z = noise_scale * torch.randn(bsz, 3, img_size, img_size, device=device)
    timesteps = torch.linspace(0.0, 1.0, steps + 1, device=device).view(-1, *([1] * z.ndim)).expand(-1, bsz, 1, 1, 1)
    null = torch.full_like(labels, num_classes)

    def velocity(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x_cond = net(z, t.flatten(), labels)
        v_cond = (x_cond - z) / (1.0 - t).clamp_min(t_eps)
        x_uncond = net(z, t.flatten(), null)
        v_uncond = (x_uncond - z) / (1.0 - t).clamp_min(t_eps)
        low, high = interval
        in_interval = (t < high) & ((low == 0) | (t > low))
        scale = torch.where(in_interval, cfg, 1.0)
        return v_uncond + scale * (v_cond - v_uncond)

    for i in range(steps - 1):
        t, t_next = timesteps[i], timesteps[i + 1]
        v_t = velocity(z, t)
        z_euler = z + (t_next - t) * v_t
        v_next = velocity(z_euler, t_next)
        z = z + (t_next - t) * 0.5 * (v_t + v_next)
    t, t_next = timesteps[-2], timesteps[-1]
    return z + (t_next - t) * velocity(z, t)
