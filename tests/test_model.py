"""jitrs.JiT against the official architecture: names, shapes, counts, init, formulas, oracle outputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import jitrs
from jitrs.model import JiT, JiT_models, apply_rope
from testkit.official_jit import OfficialJiT

# Every key and shape of the official state dicts, with the parameter totals, read off the official model.
OFFICIAL = json.loads((Path(__file__).parent / "data" / "official_jit_state_dicts.json").read_text())

TINY = {
    "input_size": 32,
    "patch_size": 4,
    "hidden_size": 64,
    "depth": 4,
    "num_heads": 2,
    "bottleneck_dim": 16,
    "in_context_len": 4,
    "in_context_start": 1,
    "num_classes": 10,
}


def randomize(model: torch.nn.Module, std: float = 0.2, seed: int = 0) -> None:
    """Non-zero random weights: the official init zeroes adaLN and the output layer (x̂ = 0 for any input)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=gen) * std)


def inputs(cfg: dict, batch: int = 3, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    size = cfg["input_size"]
    x = torch.randn(batch, 3, size, size, generator=gen)
    t = torch.rand(batch, generator=gen)
    y = torch.randint(0, cfg["num_classes"] + 1, (batch,), generator=gen)
    y[-1] = cfg["num_classes"]  # always include the null class
    return x, t, y


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    return ((a - ref).abs().max() / ref.abs().max()).item()


# ---------------------------------------------------------------- names, shapes, counts


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_state_dict_and_parameter_counts_equal_official(name: str) -> None:
    ref = OFFICIAL[name]
    with torch.device("meta"):
        model = JiT.from_name(name)
    assert model.input_size == ref["input_size"]
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert list(shapes) == list(ref["state_dict_shapes"])  # same keys in the same order
    assert shapes == ref["state_dict_shapes"]
    assert sum(p.numel() for p in model.parameters()) == ref["params_total"]
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == ref["params_trainable"]


@pytest.mark.parametrize("name", ["JiT-G/16", "JiT-G/32"])
def test_g_configs_have_about_two_billion_parameters(name: str) -> None:
    with torch.device("meta"):
        model = JiT.from_name(name)
    assert 1.95e9 < sum(p.numel() for p in model.parameters()) < 2.05e9
    assert model.arch.depth == 40 and model.arch.hidden_size == 1664 and model.arch.num_heads == 16
    assert (model.input_size // model.patch_size) ** 2 == 256


def test_every_named_config_has_256_tokens_except_the_small_one() -> None:
    for name, cfg in JiT_models.items():
        tokens = (cfg.input_size // cfg.patch_size) ** 2
        assert tokens == (64 if name == "JiT-S/4" else 256), name


@pytest.mark.parametrize(
    ("name", "gflops"), [("JiT-B/16", 50), ("JiT-L/16", 176), ("JiT-H/16", 364), ("JiT-G/16", 768)]
)
def test_flops_per_image_match_the_paper(name: str, gflops: float) -> None:
    with torch.device("meta"):
        model = JiT.from_name(name)
    assert model.flops_per_image() / 1e9 == pytest.approx(gflops, rel=0.01)


def test_flops_per_image_equal_torch_flop_counter() -> None:
    model = JiT(**TINY)
    x, t, y = inputs(TINY, batch=2)
    with FlopCounterMode(display=False) as counter:
        model(x, t, y)
    assert counter.get_total_flops() == 2 * model.flops_per_image()


# ---------------------------------------------------------------- loading official weights


def test_official_state_dict_loads_strictly_and_bad_ones_fail() -> None:
    official = OfficialJiT(**TINY)
    randomize(official)
    model = JiT(**TINY)
    model.load_state_dict(official.state_dict(), strict=True)
    for key, value in official.state_dict().items():
        assert torch.equal(model.state_dict()[key], value)

    missing = dict(official.state_dict())
    del missing["blocks.2.attn.q_norm.weight"]
    with pytest.raises(RuntimeError, match=r"Missing key\(s\).*blocks\.2\.attn\.q_norm\.weight"):
        JiT(**TINY).load_state_dict(missing, strict=True)
    extra = {**official.state_dict(), "blocks.0.attn.rel_bias": torch.zeros(3)}
    with pytest.raises(RuntimeError, match=r"Unexpected key\(s\).*blocks\.0\.attn\.rel_bias"):
        JiT(**TINY).load_state_dict(extra, strict=True)


# ---------------------------------------------------------------- equivalence with the official forward


EQUIVALENCE_CONFIGS = {
    "in-context at block 1, patch 4": TINY,
    "in-context at block 0, 4 heads": {**TINY, "num_heads": 4, "in_context_start": 0, "in_context_len": 3},
    "in-context at the last block": {**TINY, "in_context_start": 3, "in_context_len": 5},
    "no in-context tokens, patch 8": {
        **TINY,
        "input_size": 64,
        "patch_size": 8,
        "hidden_size": 96,
        "num_heads": 3,
        "depth": 3,
        "in_context_len": 0,
        "in_context_start": 0,
        "num_classes": 7,
    },
    "patch 8, bottleneck 32, mlp_ratio 2": {
        **TINY,
        "input_size": 64,
        "patch_size": 8,
        "bottleneck_dim": 32,
        "mlp_ratio": 2.0,
        "in_context_start": 2,
    },
}


@pytest.mark.parametrize("cfg", EQUIVALENCE_CONFIGS.values(), ids=EQUIVALENCE_CONFIGS.keys())
@pytest.mark.parametrize("train_mode", [False, True], ids=["eval", "train-no-dropout"])
def test_forward_equals_official_within_1e5(cfg: dict, train_mode: bool) -> None:
    model = JiT(**cfg)
    randomize(model)
    official = OfficialJiT(**cfg)
    official.load_state_dict(model.state_dict(), strict=True)
    model.train(train_mode)
    official.train(train_mode)
    x, t, y = inputs(cfg)
    with torch.no_grad():
        ours, ref = model(x, t, y), official(x, t, y)
    assert ours.shape == x.shape and ours.dtype == torch.float32
    assert rel_err(ours, ref) < 1e-5


def test_dropout_configs_equal_official_in_eval_mode() -> None:
    cfg = {**TINY, "depth": 8, "attn_drop": 0.3, "proj_drop": 0.2}
    model = JiT(**cfg)
    randomize(model)
    official = OfficialJiT(**cfg)
    official.load_state_dict(model.state_dict(), strict=True)
    x, t, y = inputs(cfg)
    with torch.no_grad():
        assert rel_err(model.eval()(x, t, y), official.eval()(x, t, y)) < 1e-5


def test_dropout_only_in_the_middle_half_of_the_blocks() -> None:
    model = JiT(**{**TINY, "depth": 8, "attn_drop": 0.3, "proj_drop": 0.2})
    # depth 8: dropout in blocks 2..5 (depth//4 <= i < depth//4*3)
    assert [b.attn.attn_drop for b in model.blocks] == [0.0, 0.0, 0.3, 0.3, 0.3, 0.3, 0.0, 0.0]
    assert [b.attn.proj_drop.p for b in model.blocks] == [0.0, 0.0, 0.2, 0.2, 0.2, 0.2, 0.0, 0.0]
    assert [b.mlp.ffn_dropout.p for b in model.blocks] == [0.0, 0.0, 0.2, 0.2, 0.2, 0.2, 0.0, 0.0]
    randomize(model)
    x, t, y = inputs(TINY)
    with torch.no_grad():
        assert not torch.equal(model.train()(x, t, y), model.train()(x, t, y))  # dropout is live in training
        assert torch.equal(model.eval()(x, t, y), model.eval()(x, t, y))


# ---------------------------------------------------------------- initialisation and gradients


def test_official_init_predicts_zero_and_freezes_the_position_embedding() -> None:
    model = JiT(**TINY)
    x, t, y = inputs(TINY)
    assert torch.count_nonzero(model(x, t, y)) == 0  # adaLN-Zero + zeroed output layer
    assert not model.pos_embed.requires_grad
    for block in model.blocks:
        assert torch.count_nonzero(block.adaLN_modulation[1].weight) == 0
    assert model.y_embedder.embedding_table.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert model.in_context_posemb.std().item() == pytest.approx(0.02, rel=0.2)
    bound = math.sqrt(6 / (64 + 3 * 64))  # xavier-uniform bound of qkv (fan_in 64, fan_out 192)
    qkv = model.blocks[0].attn.qkv.weight
    assert qkv.abs().max().item() <= bound and qkv.abs().max().item() > 0.9 * bound
    assert torch.count_nonzero(model.blocks[0].attn.qkv.bias) == 0


def test_every_trainable_parameter_gets_a_gradient_and_moves() -> None:
    torch.manual_seed(0)
    model = JiT(**TINY)
    with torch.no_grad():  # perturb the official init so no gradient is zero by construction
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 1e-2)
    before = {k: v.clone() for k, v in model.named_parameters()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.0)
    x, t, _ = inputs(TINY, batch=4)
    y = torch.arange(TINY["num_classes"] + 1)[: 4 * 3 : 3]  # labels 0, 3, 6, 9
    loss = (model(x, t, y) - x).pow(2).mean()
    loss.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name
    opt.step()
    for name, p in model.named_parameters():
        moved = not torch.equal(p, before[name])
        assert moved == p.requires_grad, name


# ---------------------------------------------------------------- position embedding and RoPE formulas


def test_pos_embed_equals_the_mae_formula() -> None:
    model = JiT(**{**TINY, "hidden_size": 32, "num_heads": 2})
    dim, grid = 32, 8
    q = dim // 4
    expected = np.zeros((grid * grid, dim))
    for row in range(grid):
        for col in range(grid):
            for k in range(q):
                w = 10000 ** (-k / q)
                token = row * grid + col
                expected[token, k] = math.sin(col * w)
                expected[token, q + k] = math.cos(col * w)
                expected[token, 2 * q + k] = math.sin(row * w)
                expected[token, 3 * q + k] = math.cos(row * w)
    np.testing.assert_allclose(model.pos_embed[0].numpy(), expected, atol=1e-6)


def test_rope_rotates_pairs_by_row_then_column_angles() -> None:
    model = JiT(**TINY)  # head_dim 32, grid 8, 4 in-context tokens
    d, grid, ctx = 32, 8, 4
    x = torch.randn(2, 1, grid * grid, d, dtype=torch.float64)
    out = apply_rope(x, model.rope_cos.double(), model.rope_sin.double())
    expected = torch.empty_like(x)
    for token in range(grid * grid):
        row, col = divmod(token, grid)
        for i in range(d // 2):
            half, j = divmod(i, d // 4)
            angle = (col if half else row) * 10000 ** (-2 * j / (d // 2))
            c, s = math.cos(angle), math.sin(angle)
            x1, x2 = x[..., token, 2 * i], x[..., token, 2 * i + 1]
            expected[..., token, 2 * i] = x1 * c - x2 * s
            expected[..., token, 2 * i + 1] = x2 * c + x1 * s
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    # In-context tokens come first and are left unrotated; the image tables follow.
    assert torch.equal(model.rope_cos_ctx[:ctx], torch.ones(ctx, d // 2))
    assert torch.equal(model.rope_sin_ctx[:ctx], torch.zeros(ctx, d // 2))
    assert torch.equal(model.rope_cos_ctx[ctx:], model.rope_cos)


def test_rope_scores_depend_only_on_relative_position() -> None:
    model = JiT(**TINY)
    gen = torch.Generator().manual_seed(3)
    q, k = torch.randn(2, 32, generator=gen)

    def score(q_pos: tuple[int, int], k_pos: tuple[int, int]) -> float:
        qi, ki = q_pos[0] * 8 + q_pos[1], k_pos[0] * 8 + k_pos[1]
        rq = apply_rope(q[None], model.rope_cos[qi : qi + 1], model.rope_sin[qi : qi + 1])
        rk = apply_rope(k[None], model.rope_cos[ki : ki + 1], model.rope_sin[ki : ki + 1])
        return (rq * rk).sum().item()

    assert score((1, 2), (3, 5)) == pytest.approx(score((4, 0), (6, 3)), abs=1e-4)
    assert score((1, 2), (3, 5)) != pytest.approx(score((1, 2), (5, 3)), abs=1e-3)


# ---------------------------------------------------------------- patch layout


def test_unpatchify_layout_is_row_col_channel_inside_a_patch() -> None:
    model = JiT(**TINY)
    p, grid, c = 4, 8, 3
    tokens = torch.randn(2, grid * grid, p * p * c)
    image = model.unpatchify(tokens)
    for token in (0, 5, 17, 63):
        r, col = divmod(token, grid)
        for i, j, ch in ((0, 0, 0), (1, 3, 2), (3, 2, 1)):
            assert image[1, ch, r * p + i, col * p + j] == tokens[1, token, (i * p + j) * c + ch]


def test_unpatchify_inverts_jitrs_patchify() -> None:
    model = JiT(**TINY)
    image = np.random.default_rng(0).random((32, 32, 3), dtype=np.float32)  # (H, W, C)
    tokens = np.asarray(jitrs.patchify(image, 4, channels_last=True))  # (N, p*p*C)
    back = model.unpatchify(torch.from_numpy(tokens)[None])[0]  # (C, H, W)
    np.testing.assert_array_equal(back.permute(1, 2, 0).numpy(), image)


# ---------------------------------------------------------------- config, devices, compile


def test_config_round_trips_and_from_name_overrides() -> None:
    model = JiT.from_name("JiT-S/4", num_classes=7, proj_drop=0.1)
    assert model.config["num_classes"] == 7 and model.config["proj_drop"] == 0.1
    rebuilt = JiT(**model.config)
    assert rebuilt.config == model.config
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    assert json.loads(json.dumps(model.config)) == model.config  # plain values, storable anywhere
    with pytest.raises(ValueError, match="unknown model 'JiT-X/16'"):
        JiT.from_name("JiT-X/16")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"input_size": 30}, "input_size 30 is not a multiple of patch_size 4"),
        ({"num_heads": 3}, "hidden_size 64 / num_heads 3"),
        ({"in_context_start": 4}, r"in_context_start 4 must be a block index in \[0, 4\)"),
        ({"proj_drop": 1.5}, "proj_drop must be in"),
        ({"depth": 0}, "depth must be a positive integer"),
    ],
)
def test_bad_constructor_arguments_name_the_keyword(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        JiT(**{**TINY, **overrides})


def test_rope_tables_are_buffers_outside_the_state_dict_that_follow_to() -> None:
    model = JiT(**TINY)
    randomize(model)
    buffers = dict(model.named_buffers())
    assert set(buffers) == {"rope_cos", "rope_sin", "rope_cos_ctx", "rope_sin_ctx"}
    assert not set(buffers) & set(model.state_dict())
    x, t, y = inputs(TINY)
    with torch.no_grad():
        ref = model(x, t, y)
        model.double()
        assert model.rope_cos.dtype == torch.float64
        out = model(x.double(), t.double(), y)
    assert out.dtype == torch.float64
    assert rel_err(out.float(), ref) < 1e-5


def test_bf16_autocast_runs_and_stays_close() -> None:
    model = JiT(**TINY)
    randomize(model, std=0.05)
    x, t, y = inputs(TINY)
    with torch.no_grad():
        ref = model(x, t, y)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x, t, y)
    assert rel_err(out.float(), ref) < 0.05


def test_blocks_and_model_trace_without_graph_breaks() -> None:
    model = JiT(**TINY)
    x, t, y = inputs(TINY, batch=2)
    h = torch.randn(2, 64 + 4, 64)
    c = torch.randn(2, 64)
    block = torch._dynamo.explain(model.blocks[2])(h, c, model.rope_cos_ctx, model.rope_sin_ctx)
    assert block.graph_break_count == 0 and block.graph_count == 1
    whole = torch._dynamo.explain(model)(x, t, y)
    assert whole.graph_break_count == 0 and whole.graph_count == 1
