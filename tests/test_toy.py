"""The toy experiment: its pieces against closed forms, the paper's result on a fixed seed, and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from jitrs.errors import UserError
from jitrs.flow import Flow
from jitrs.toy import (
    HIDDEN,
    P_MEAN,
    P_STD,
    PREDS,
    ToyConfig,
    ToyMLP,
    ToyResult,
    projection,
    run_toy,
    scores,
    spiral,
    write_results,
)

PYTHON_DIR = Path(__file__).resolve().parent.parent / "python"


def _by_key(result: ToyResult) -> dict[tuple[str, int], tuple[float, float]]:
    return {(c.pred, c.dim): (c.nn2d, c.offmanifold) for c in result.cells}


def _ideal_offmanifold(dim: int, samples: int, steps: int, seed: int = 0) -> float:
    """Off-plane norm left by the sampler itself: an x-predictor whose output never leaves the data plane.

    Off the plane such a net's output is exactly 0, so what remains there is the start noise that the
    official sampler (with its t_eps clamp in the last steps) does not fully remove: the best any
    x-predictor can reach.
    """
    proj = projection(dim, torch.Generator().manual_seed(seed))
    flow = Flow(P_mean=P_MEAN, P_std=P_STD, pred="x")
    x = flow.sample(
        lambda z, t, y: z @ proj @ proj.T,
        None,
        steps=steps,
        shape=(samples, dim),
        generator=torch.Generator().manual_seed(seed),
    )
    return scores(x, proj, spiral(100, torch.Generator().manual_seed(seed)))[1]


# ---------------------------------------------------------------------------------------------- pieces
def test_projection_is_column_orthogonal_and_seeded() -> None:
    p = projection(512, torch.Generator().manual_seed(3))
    assert p.shape == (512, 2) and p.dtype == torch.float32
    torch.testing.assert_close(p.T @ p, torch.eye(2), atol=1e-6, rtol=0)
    assert torch.equal(p, projection(512, torch.Generator().manual_seed(3)))
    assert not torch.equal(p, projection(512, torch.Generator().manual_seed(4)))


def test_spiral_is_a_unit_sized_2d_sample() -> None:
    pts = spiral(5000, torch.Generator().manual_seed(0))
    assert pts.shape == (5000, 2) and pts.dtype == torch.float32
    radius = pts.norm(dim=1)
    assert 0.4 < float(radius.mean()) < 0.9 and float(radius.max()) < 1.3
    # a spiral, not a blob: the centre is nearly empty
    assert float((radius < 0.1).float().mean()) < 0.01


def test_scores_match_hand_built_points() -> None:
    proj = projection(8, torch.Generator().manual_seed(1))
    reference = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    # on-plane coordinates 0.3 from (1, 0) and exactly (0, 1), plus off-plane parts of norm 2 and 0
    on = torch.tensor([[1.3, 0.0], [0.0, 1.0]])
    normal = torch.randn(8, generator=torch.Generator().manual_seed(2))
    normal = normal - proj @ (proj.T @ normal)
    normal = 2 * normal / normal.norm()
    x = on @ proj.T + torch.stack([normal, torch.zeros(8)])
    nn2d, off = scores(x, proj, reference)
    assert nn2d == pytest.approx(0.15, abs=1e-5)
    assert off == pytest.approx(1.0, abs=1e-5)


def test_mlp_is_the_papers_five_layer_relu_net() -> None:
    net = ToyMLP(16)
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(17, HIDDEN)] + [(HIDDEN, HIDDEN)] * 3 + [
        (HIDDEN, 16)
    ]
    assert sum(isinstance(m, torch.nn.ReLU) for m in net.modules()) == 4
    z, t = torch.randn(7, 16), torch.rand(7)
    assert net(z, t, None).shape == (7, 16)
    # time is a real input: the same z at another t gives another output
    assert not torch.allclose(net(z, t), net(z, 1 - t))


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"dims": (2, 1)}, "--dims"),
        ({"dims": ()}, "--dims"),
        ({"dims": (8, 2, 8)}, "twice"),
        ({"train_steps": 0}, "--train-steps"),
        ({"sample_steps": 0}, "--sample-steps"),
        ({"samples": -3}, "--samples"),
        ({"lr": 0.0}, "--lr"),
    ],
)
def test_bad_config_is_a_user_error_naming_the_option(kwargs: dict, words: str) -> None:
    with pytest.raises(UserError, match=words):
        ToyConfig(**kwargs)


def test_run_restores_global_rng_and_threads_and_writes_atomically(tmp_path: Path) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    threads = torch.get_num_threads()
    cfg = ToyConfig(dims=(3,), train_steps=3, sample_steps=2, samples=20, reference=50, threads=1)
    result = run_toy(cfg)
    assert torch.equal(torch.rand(3), expected)
    assert torch.get_num_threads() == threads
    # the same seed gives the same numbers
    assert _by_key(run_toy(cfg)) == _by_key(result)
    write_results(result, tmp_path / "results.json")
    assert os.listdir(tmp_path) == ["results.json"]  # no temporary file left behind
    rows = json.loads((tmp_path / "results.json").read_text())
    assert [(r["pred"], r["D"]) for r in rows] == [("data", 3), ("x", 3), ("eps", 3), ("v", 3)]


# ---------------------------------------------------------------------------------------------- paper result
@pytest.fixture(scope="module")
def small_grid() -> ToyResult:
    """D in {2, 512} with fewer steps and samples than the default run, through the same code path."""
    return run_toy(ToyConfig(dims=(2, 512), train_steps=400, samples=300, seed=0))


def test_x_prediction_works_at_512_while_eps_and_v_fail(small_grid: ToyResult) -> None:
    s = _by_key(small_grid)
    floor = s[("data", 512)][0]
    assert s[("x", 512)][0] < 4 * floor
    assert s[("eps", 512)][0] > 100 * floor
    assert s[("v", 512)][0] > 30 * floor
    assert s[("v", 512)][0] > 10 * s[("x", 512)][0]


def test_at_d2_all_three_predictions_are_close_to_the_data(small_grid: ToyResult) -> None:
    s = _by_key(small_grid)
    floor = s[("data", 2)][0]
    assert s[("x", 2)][0] < 4 * floor
    for pred in PREDS:
        assert s[(pred, 2)][0] < 15 * floor  # about a tenth of the gap between spiral arms
        assert s[(pred, 2)][0] < s[("v", 512)][0] / 4


def test_x_prediction_stays_on_the_data_plane_at_512(small_grid: ToyResult) -> None:
    s = _by_key(small_grid)
    ideal = _ideal_offmanifold(512, samples=300, steps=small_grid.config.sample_steps)
    assert s[("x", 512)][1] < 1.1 * ideal
    assert s[("eps", 512)][1] > 20 * ideal
    assert s[("v", 512)][1] > 20 * ideal


@pytest.mark.slow
def test_default_grid_reproduces_the_paper() -> None:
    cfg = ToyConfig()
    s = _by_key(run_toy(cfg))
    for dim in cfg.dims:
        assert s[("x", dim)][0] < 4 * s[("data", dim)][0]
    for pred in ("eps", "v"):
        assert s[(pred, 16)][0] > s[(pred, 2)][0]  # degrading already at 16
        assert s[(pred, 512)][0] > 30 * s[("data", 512)][0]


# ---------------------------------------------------------------------------------------------- CLI
def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(PYTHON_DIR)}
    return subprocess.run(
        [sys.executable, "-m", "jitrs", "toy", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_cli_writes_results_and_figure(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = _cli("--out", str(out), "--dims", "2,8", "--train-steps", "5", "--samples", "50", "--sample-steps", "3")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((out / "results.json").read_text())
    assert [(r["pred"], r["D"]) for r in rows] == [(p, d) for d in (2, 8) for p in ("data", *PREDS)]
    for row in rows:
        assert set(row) == {"pred", "D", "nn2d", "offmanifold"}
        assert isinstance(row["D"], int) and row["nn2d"] >= 0 and row["offmanifold"] >= 0
    with Image.open(out / "toy.png") as im:
        im.verify()
    with Image.open(out / "toy.png") as im:
        assert im.format == "PNG" and im.width > 300 and im.height > 300
    assert sorted(os.listdir(out)) == ["results.json", "toy.png"]


@pytest.mark.parametrize(
    "args",
    [
        ("--dims", "1,512"),
        ("--dims", "2,x"),
        ("--train-steps", "0"),
        ("--sample-steps", "0"),
    ],
)
def test_cli_bad_option_is_one_line_exit_2(tmp_path: Path, args: tuple[str, str]) -> None:
    proc = _cli("--out", str(tmp_path / "o"), *args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and args[0] in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()  # nothing is created before the options are checked


def test_cli_unwritable_out_is_one_line_exit_2(tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    proc = _cli("--out", str(blocker / "o"), "--dims", "2")
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "--out" in proc.stderr
