"""`jitrs toy`: run the paper's toy experiment grid and write the figure and the score table."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from jitrs.atomic import writable_dir
from jitrs.errors import UserError
from jitrs.toy_config import ToyConfig

if TYPE_CHECKING:
    from jitrs.toy import Cell, ToyResult

_DEFAULT = ToyConfig()


def _parse_dims(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise UserError(f"--dims must be comma-separated integers such as 2,8,16,512, got {text!r}.") from None


def _table(result: ToyResult) -> Table:
    table = Table(title="toy: distance to the data in 2-D (nn2d) and off the data plane (offmanifold)")
    for name in ("D", "pred", "nn2d", "nn2d / data", "offmanifold"):
        table.add_column(name, justify="right")
    floors = {c.dim: c.nn2d for c in result.cells if c.pred == "data"}
    for cell in result.cells:
        ratio = cell.nn2d / floors[cell.dim]
        table.add_row(str(cell.dim), cell.pred, f"{cell.nn2d:.4g}", f"{ratio:.3g}", f"{cell.offmanifold:.3g}")
    return table


def toy(
    out: Annotated[Path, typer.Option(help="Output directory for toy.png and results.json (created if missing).")],
    dims: Annotated[str, typer.Option(help="Comma-separated ambient dimensions D (each >= 2).")] = ",".join(
        map(str, _DEFAULT.dims)
    ),
    train_steps: Annotated[
        int, typer.Option(help="Adam steps per model (lr 1e-3, cosine-decayed to 0).")
    ] = _DEFAULT.train_steps,
    batch_size: Annotated[int, typer.Option(help="Training batch, in points.")] = _DEFAULT.batch_size,
    sample_steps: Annotated[
        int, typer.Option(help="Heun ODE steps when sampling (last one Euler: 50 steps = 99 evaluations).")
    ] = _DEFAULT.sample_steps,
    samples: Annotated[
        int, typer.Option(help="Points generated per panel, and held-out real points for the floor.")
    ] = _DEFAULT.samples,
    seed: Annotated[int, typer.Option(help="Seed for the data, projections, weights and noise.")] = _DEFAULT.seed,
    threads: Annotated[
        int, typer.Option(help="torch CPU threads; 1 is fastest for these small models.")
    ] = _DEFAULT.threads,
) -> None:
    """Paper Fig. 2: x-, eps- and v-prediction MLPs on a 2-D spiral embedded in R^D (CPU, a few minutes)."""
    cfg = ToyConfig(
        dims=_parse_dims(dims),
        train_steps=train_steps,
        batch_size=batch_size,
        sample_steps=sample_steps,
        samples=samples,
        seed=seed,
        threads=threads,
    )
    writable_dir(out)
    from jitrs.toy import run_toy, save_figure, write_results

    console = Console()
    start = time.perf_counter()

    def report(cell: Cell, seconds: float) -> None:
        if cell.pred != "data":
            console.print(f"  {cell.pred:>3}-pred  D={cell.dim:<4} nn2d {cell.nn2d:.4f}  ({seconds:.1f} s)")

    result = run_toy(cfg, on_cell=report)
    write_results(result, out / "results.json")
    save_figure(result, out / "toy.png")
    console.print(_table(result))
    console.print(f"wrote {out / 'toy.png'} and {out / 'results.json'} in {time.perf_counter() - start:.0f} s")
