"""The DINOv2 encoder behind FD_DINOv2 is the published network: its state dict has the layout of Meta's
dinov2_vitl14_pretrain.pth (so the real file loads strictly), and its position embedding is resized the way
DINOv2's own `interpolate_pos_encoding` resizes it, checked against a bicubic interpolation written out here."""

from __future__ import annotations

import math

import numpy as np
import torch

from jitrs.dinov2 import TRAIN_GRID, DinoV2


def published_vitl14_layout() -> dict[str, tuple[int, ...]]:
    """Names and shapes of dinov2_vitl14_pretrain.pth (ViT-L/14: 1024 wide, 24 blocks, 4096-wide MLP, 37 x 37
    position grid plus the class token, layer scale, a mask token, no registers)."""
    d, hidden = 1024, 4096
    layout: dict[str, tuple[int, ...]] = {
        "cls_token": (1, 1, d), "pos_embed": (1, 1 + 37 * 37, d), "mask_token": (1, d),
        "patch_embed.proj.weight": (d, 3, 14, 14), "patch_embed.proj.bias": (d,),
        "norm.weight": (d,), "norm.bias": (d,),
    }  # fmt: skip
    for i in range(24):
        b = f"blocks.{i}."
        layout |= {
            b + "norm1.weight": (d,), b + "norm1.bias": (d,),
            b + "attn.qkv.weight": (3 * d, d), b + "attn.qkv.bias": (3 * d,),
            b + "attn.proj.weight": (d, d), b + "attn.proj.bias": (d,), b + "ls1.gamma": (d,),
            b + "norm2.weight": (d,), b + "norm2.bias": (d,),
            b + "mlp.fc1.weight": (hidden, d), b + "mlp.fc1.bias": (hidden,),
            b + "mlp.fc2.weight": (d, hidden), b + "mlp.fc2.bias": (d,), b + "ls2.gamma": (d,),
        }  # fmt: skip
    return layout


def test_the_state_dict_has_the_published_layout() -> None:
    with torch.device("meta"):
        net = DinoV2()
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == published_vitl14_layout()
    assert DinoV2.shape_of(net.state_dict()) == (1024, 24)


def cubic(t: float) -> np.ndarray:
    """PyTorch's bicubic taps at distances 1 + t, t, 1 - t, 2 - t (Keys' kernel with A = -0.75)."""
    a = -0.75

    def near(x: float) -> float:
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x: float) -> float:
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return np.array([far(1 + t), near(t), near(1 - t), far(2 - t)])


def resize_like_dinov2(grid: np.ndarray, out: int) -> np.ndarray:
    """(M, M, D) -> (out, out, D): DINOv2 asks for scale factor (out + 0.1) / M, so output pixel i samples the
    input at (i + 0.5) * M / (out + 0.1) - 0.5, not at (i + 0.5) * M / out - 0.5; edges clamp."""
    m = grid.shape[0]
    step = m / (out + 0.1)
    weights = np.zeros((out, m))
    for i in range(out):
        x = (i + 0.5) * step - 0.5
        base = math.floor(x)
        for tap, w in zip(range(base - 1, base + 3), cubic(x - base), strict=True):
            weights[i, min(max(tap, 0), m - 1)] += w
    return np.einsum("im,jn,mnd->ijd", weights, weights, grid)


def test_the_position_embedding_is_resized_as_dinov2_resizes_it() -> None:
    torch.manual_seed(0)
    net = DinoV2(dim=8, depth=1)
    with torch.no_grad():
        net.pos_embed.normal_()
    table = net.pos_embed[0].detach().double().numpy()
    for out in (16, 9):  # 224 px (what torch-fidelity feeds) and another size
        got = net._positions(out).detach()[0].double().numpy()
        assert got.shape == (1 + out * out, 8)
        assert np.array_equal(got[0], table[0])  # the class token's position is not resized
        want = resize_like_dinov2(table[1:].reshape(TRAIN_GRID, TRAIN_GRID, 8), out).reshape(-1, 8)
        np.testing.assert_allclose(got[1:], want, rtol=0, atol=1e-5)
        assert not np.allclose(got[1:], resize_size_based(table, out), atol=1e-3)  # the offset is what differs


def resize_size_based(table: np.ndarray, out: int) -> np.ndarray:
    """The resize without DINOv2's offset (sampling at (i + 0.5) * M / out - 0.5): what a size-based call gives."""
    t = torch.from_numpy(table[1:]).reshape(1, TRAIN_GRID, TRAIN_GRID, -1).permute(0, 3, 1, 2)
    resized = torch.nn.functional.interpolate(t, size=(out, out), mode="bicubic")
    return resized.permute(0, 2, 3, 1).reshape(out * out, -1).numpy()
