"""The paper's toy experiment (Sec. 3.3, Fig. 2): x-, ε- and v-prediction on 2-D data embedded in R^D.

A 2-D spiral x̂ is lifted to x = P·x̂ by a fixed random column-orthogonal P (D×2, PᵀP = I). For each
prediction type and each D a 5-layer ReLU MLP (256 hidden units, time as an extra input) is trained with the
very same `Flow` as the image model (t-sampler, clamps, v-loss) and sampled with its Heun ODE sampler. The
generated points are scored in 2-D (Pᵀx, distance to the nearest true data point) and off the data plane
(‖(I − PPᵀ)x‖), next to held-out real data as the floor.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from jitrs.atomic import atomic_path, atomic_write_text
from jitrs.flow import Flow, Space
from jitrs.toy_config import ToyConfig

PREDS: tuple[Space, ...] = ("x", "eps", "v")
HIDDEN = 256  # the paper's MLP width: under-complete once D > 256, which is the point of the experiment
LAYERS = 5
SPIRAL_TURNS = 1.5
SPIRAL_THICKNESS = 0.05  # std across the arm: the data is a 2-D band, so held-out data scores above ~0
# The logit-normal t-sampler centred at 0 (SD3's default) rather than JiT's ImageNet shift (-0.8, 0.8): that
# shift toward noise suits high-dimensional images, while on unit-size 2-D data it leaves t > 0.9 almost
# untrained (p ~ 1e-4), which blurs eps- and v-prediction even at D = 2 and hides the trend over D.
P_MEAN, P_STD = 0.0, 1.0
PLOT_LIMIT = 1.5  # panels show [-1.5, 1.5]²; failed samples far outside simply leave the panel


# ---------------------------------------------------------------------------------------------- data
def spiral(n: int, generator: torch.Generator) -> Tensor:
    """n points of a 2-D spiral band inside the unit disc, (n, 2) float32.

    The arc position is uniform in sqrt so the density along the arm is roughly even.
    """
    u = torch.rand(n, generator=generator).sqrt()
    angle = 2 * math.pi * SPIRAL_TURNS * u + 0.5 * math.pi
    radius = 0.15 + 0.8 * u
    pts = torch.stack([radius * angle.cos(), radius * angle.sin()], dim=1)
    return pts + SPIRAL_THICKNESS * torch.randn(n, 2, generator=generator)


def projection(dim: int, generator: torch.Generator) -> Tensor:
    """A random column-orthogonal P, (dim, 2) float32 with PᵀP = I (QR of a Gaussian matrix)."""
    q, r = torch.linalg.qr(torch.randn(dim, 2, generator=generator, dtype=torch.float64))
    return (q * r.diagonal().sign()).float()  # the sign fix makes P a function of the draw alone


# ---------------------------------------------------------------------------------------------- network
class ToyMLP(nn.Module):
    """The paper's toy denoiser: 5 linear layers with ReLU between them, 256 hidden units.

    forward(z (B, D) float32, t (B,) float32, y ignored) -> (B, D) float32: the prediction in the space of
    the Flow it is trained with. Time enters as one extra input feature.
    """

    def __init__(self, dim: int, hidden: int = HIDDEN, layers: int = LAYERS) -> None:
        super().__init__()
        widths = [dim + 1] + [hidden] * (layers - 1) + [dim]
        mods: list[nn.Module] = []
        for i, (w_in, w_out) in enumerate(itertools.pairwise(widths)):
            if i:
                mods.append(nn.ReLU())
            mods.append(nn.Linear(w_in, w_out))
        self.net = nn.Sequential(*mods)

    def forward(self, z: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        return self.net(torch.cat([z, t[:, None]], dim=1))


# ---------------------------------------------------------------------------------------------- metrics
def nearest_distance(points: Tensor, reference: Tensor, chunk: int = 1024) -> Tensor:
    """For each row of points (N, 2), the distance to its nearest row of reference (M, 2) -> (N,) float32."""
    return torch.cat([torch.cdist(p, reference).amin(dim=1) for p in points.split(chunk)])


def scores(x: Tensor, proj: Tensor, reference: Tensor) -> tuple[float, float]:
    """(nn2d, offmanifold) of points x (N, D) for the data plane P (D, 2) and 2-D reference data (M, 2).

    nn2d is the mean distance of Pᵀx to the nearest reference point; offmanifold the mean ‖(I − PPᵀ)x‖.
    """
    flat = x @ proj
    off = x - flat @ proj.T
    return float(nearest_distance(flat, reference).mean()), float(off.norm(dim=1).mean())


# ---------------------------------------------------------------------------------------------- training
def _cell_seed(seed: int, dim: int, salt: int) -> int:
    """A seed per (run seed, D, purpose), so one cell's numbers do not depend on which other D values ran."""
    return (seed * 1_000_003 + dim) * 16 + salt


def train_denoiser(flow: Flow, proj: Tensor, cfg: ToyConfig, seed: int) -> ToyMLP:
    """Train a ToyMLP for data P·spiral (P: (D, 2)) with flow.loss; Adam with a cosine decay to 0."""
    torch.manual_seed(seed)  # weights, plus the t and noise draws inside flow.loss
    data_gen = torch.Generator().manual_seed(seed)
    net = ToyMLP(proj.shape[0])
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.train_steps)
    for _ in range(cfg.train_steps):
        loss = flow.loss(net, spiral(cfg.batch_size, data_gen) @ proj.T, None)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return net.eval()


@dataclass
class Cell:
    """One panel: a prediction type ("x", "eps", "v", or "data" for held-out real data) at dimension D."""

    pred: str
    dim: int
    nn2d: float
    offmanifold: float
    points: Tensor = field(repr=False)  # (samples, 2) float32: the generated points projected with Pᵀ

    def row(self) -> dict[str, str | int | float]:
        return {"pred": self.pred, "D": self.dim, "nn2d": self.nn2d, "offmanifold": self.offmanifold}


@dataclass
class ToyResult:
    """All cells of a run (per D: data, then x, eps, v) and the 2-D reference sample (M, 2) float32."""

    config: ToyConfig
    cells: list[Cell]
    reference: Tensor = field(repr=False)


def run_toy(cfg: ToyConfig, on_cell: Callable[[Cell, float], None] | None = None) -> ToyResult:
    """Train and sample every (prediction, D) cell of cfg; on_cell(cell, seconds) is called as each finishes.

    The global torch RNG (flow.loss draws t and noise from it) and thread count are restored on return.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    torch.set_flush_denormal(True)  # see jitrs.device: the toy computes on the CPU
    try:
        return _run_cells(cfg, on_cell)
    finally:
        torch.set_num_threads(threads)


def _run_cells(cfg: ToyConfig, on_cell: Callable[[Cell, float], None] | None) -> ToyResult:
    with torch.random.fork_rng(devices=[]):
        gen = torch.Generator().manual_seed(cfg.seed)
        reference = spiral(cfg.reference, gen)
        held_out = spiral(cfg.samples, gen)
        cells: list[Cell] = []
        for dim in cfg.dims:
            proj = projection(dim, torch.Generator().manual_seed(_cell_seed(cfg.seed, dim, 2 * len(PREDS))))
            floor = Cell("data", dim, *scores(held_out @ proj.T, proj, reference), held_out)
            cells.append(floor)
            if on_cell:
                on_cell(floor, 0.0)
            for salt, pred in enumerate(PREDS):
                start = time.perf_counter()
                flow = Flow(P_mean=P_MEAN, P_std=P_STD, pred=pred, loss_space="v")
                seed = _cell_seed(cfg.seed, dim, salt)
                net = train_denoiser(flow, proj, cfg, seed)
                x = flow.sample(
                    net,
                    None,
                    steps=cfg.sample_steps,
                    shape=(cfg.samples, dim),
                    generator=torch.Generator().manual_seed(_cell_seed(cfg.seed, dim, len(PREDS) + salt)),
                )
                cell = Cell(pred, dim, *scores(x, proj, reference), x @ proj)
                cells.append(cell)
                if on_cell:
                    on_cell(cell, time.perf_counter() - start)
    return ToyResult(cfg, cells, reference)


# ---------------------------------------------------------------------------------------------- output


def write_results(result: ToyResult, path: Path) -> None:
    """results.json: a list of {"pred", "D", "nn2d", "offmanifold"}, written atomically."""
    atomic_write_text(path, json.dumps([c.row() for c in result.cells], indent=1) + "\n")


def save_figure(result: ToyResult, path: Path, max_reference: int = 4000) -> None:
    """A PNG grid like the paper's Fig. 2: rows x/eps/v, one column per D, samples over the true data."""
    dims = result.config.dims
    fig = Figure(figsize=(2.6 * len(dims), 2.6 * len(PREDS)), layout="constrained")
    axes = fig.subplots(len(PREDS), len(dims), squeeze=False, sharex=True, sharey=True)
    ref = result.reference[:max_reference]
    by_key = {(c.pred, c.dim): c for c in result.cells}
    for i, pred in enumerate(PREDS):
        for j, dim in enumerate(dims):
            ax = axes[i][j]
            cell = by_key[(pred, dim)]
            ax.scatter(ref[:, 0], ref[:, 1], s=1, c="0.8", linewidths=0, rasterized=True)
            ax.scatter(cell.points[:, 0], cell.points[:, 1], s=2, c="tab:red", linewidths=0)
            ax.set_xlim(-PLOT_LIMIT, PLOT_LIMIT)
            ax.set_ylim(-PLOT_LIMIT, PLOT_LIMIT)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{pred}-pred, D={dim}\nnn2d {cell.nn2d:.3f}", fontsize=9)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
