"""The job behind `jitrs sweep`: for each EMA weight set of a checkpoint, the guidance scale with the lowest FID.

A coarse grid over the CFG range (step 0.5), then a walk at 0.1 from its best point towards lower FID (at most
to 0.1 short of the next coarse point): about 10 evaluations per EMA instead of the 31 of a 0.1 grid over
1.0-4.0, exact when FID(cfg) is unimodal. Given a range for the guidance interval's lower end as well, the
search goes on by coordinate descent: the CFG search at the range's low end (the widest interval), then the same
coarse-to-fine search over interval-min (steps 0.1, 0.05) at that CFG, then a 0.1 walk of the CFG at the new
interval-min, since guidance over a narrower interval wants a larger scale. Every point generates n
class-balanced samples exactly as `jitrs sample` with the same settings and scores them as they are made
(`scoring.score_model`: features from the GPU batch, float64 statistics, no PNG). Each finished point is
appended to DIR/points.jsonl (fsynced), so a killed sweep resumes without recomputing one.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

import jitrs
from jitrs.atomic import atomic_write_text, writable_dir
from jitrs.checkpoint import Checkpoint
from jitrs.device import setup_distributed
from jitrs.errors import UserError
from jitrs.rundir import resolve_checkpoint
from jitrs.runlog import new_figure, save_figure
from jitrs.sample import SampleOptions, check_options, checkpoint_flow, sample, sampler_defaults
from jitrs.scoring import Scorer, check_reference, parse_metrics, score_model

POINTS = "points.jsonl"
RESULT = "sweep.json"
PLOT = "sweep.png"
COARSE, FINE = 0.5, 0.1
INTERVAL_COARSE, INTERVAL_FINE = 0.1, 0.05
TIE = 1e-9  # relative FID differences below this are ties
NAIVE_STEP = 0.1  # the grid the search replaces: 31 points over 1.0-4.0


@dataclass(frozen=True)
class SweepOptions:
    ckpt: Path
    ref: Path
    out: Path
    n: int = 8000
    cfg: tuple[float, float] = (1.0, 4.0)
    ema: str = "all"
    interval_min: tuple[float, float] = (0.1, 0.1)  # a range LO:HI is searched
    interval_max: float = 1.0
    metrics: str = "fid,is"
    method: str = "heun"
    steps: int | None = None
    seed: int = 0
    batch_size: int = 64
    compile: bool | None = None
    device: str | None = None
    inception_weights: Path | None = None
    dinov2_weights: Path | None = None
    final: int | None = None


# ---------------------------------------------------------------------------------------------- the search
def _grid(lo: float, hi: float, step: float) -> list[float]:
    count = math.floor((hi - lo) / step + 1e-9)
    points = [round(lo + k * step, 6) for k in range(count + 1)]
    return points if points[-1] >= hi - 1e-9 else [*points, round(hi, 6)]


def coarse_to_fine(
    f: Callable[[float], float], lo: float, hi: float, coarse: float = COARSE, fine: float = FINE
) -> float:
    """The x in [lo, hi], on the `fine` grid from lo, that minimises f, found by a `coarse` grid and then a walk
    at `fine` from its best point downhill; deterministic. f is called once per distinct x (callers may cache)."""
    at = _cached(f)
    best = min(_grid(lo, hi, coarse), key=at)
    # Stop short of the neighbouring coarse points, which are already known.
    return walk(at, best, lo, hi, fine, reach=coarse - fine / 2)


def walk(
    f: Callable[[float], float], start: float, lo: float, hi: float, step: float, reach: float = math.inf
) -> float:
    """From `start`, step downhill in [lo, hi] while f falls (at most `reach` away): the local minimum. The
    first direction in which f falls is followed alone (unimodal: it rises the other way). f is asked for each
    point twice, so callers pass a cached one."""
    for direction in (-1, 1):
        x = start
        while True:
            nxt = round(x + direction * step, 6)
            if not lo - 1e-9 <= nxt <= hi + 1e-9 or abs(nxt - start) > reach + 1e-9 or not _lower(f(nxt), f(x)):
                break
            x = nxt
        if x != start:
            return x
    return start


def _lower(a: float, b: float) -> bool:
    """Whether a is lower than b by more than float noise: a point recomputed by another process (a resumed sweep)
    may differ in the last bits, and such a tie must not send the walk a step further."""
    return a < b - TIE * abs(b)


def _cached(f: Callable[[float], float]) -> Callable[[float], float]:
    seen: dict[float, float] = {}

    def at(x: float) -> float:
        x = round(x, 6)
        if x not in seen:
            seen[x] = f(x)
        return seen[x]

    return at


def search(
    f: Callable[[float, float], float], cfg: tuple[float, float], interval_min: tuple[float, float]
) -> tuple[float, float]:
    """The (cfg, interval-min) of lowest f: the CFG by `coarse_to_fine` at the lowest interval-min; when
    interval-min is a range, then interval-min at that CFG, then a CFG walk at that interval-min. f is called
    once per distinct point."""
    seen: dict[tuple[float, float], float] = {}

    def at(c: float, m: float) -> float:
        point = (round(c, 6), round(m, 6))
        if point not in seen:
            seen[point] = f(*point)
        return seen[point]

    imin = interval_min[0]
    best_cfg = coarse_to_fine(lambda c: at(c, imin), *cfg)
    if interval_min[1] > interval_min[0]:
        imin = coarse_to_fine(lambda m: at(best_cfg, m), *interval_min, INTERVAL_COARSE, INTERVAL_FINE)
        best_cfg = walk(lambda c: at(c, imin), best_cfg, *cfg, FINE)
    return best_cfg, imin


# ---------------------------------------------------------------------------------------------- points file
def point_key(settings: dict[str, Any], ema: str, cfg: float, interval_min: float) -> str:
    """The identity of one evaluation: everything that decides its numbers."""
    point = {"ema": ema, "cfg": round(cfg, 6), "interval_min": round(interval_min, 6)}
    return json.dumps({**settings, **point}, sort_keys=True)


def read_points(path: Path) -> dict[str, dict[str, Any]]:
    """The finished points by key; a line torn by a kill mid-write is ignored (that point is recomputed)."""
    points: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return points
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
            points[row["key"]] = row
        except (ValueError, KeyError, TypeError):
            continue
    return points


def append_point(path: Path, row: dict[str, Any]) -> None:
    """Append one JSON line with a single write, then fsync: a kill leaves the file whole or one torn last line.
    A torn line without its newline is closed first, so it cannot swallow the new row."""
    data = json.dumps(row, sort_keys=True) + "\n"
    with open(path, "a+b") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                data = "\n" + data
        f.write(data.encode())
        f.flush()
        os.fsync(f.fileno())


# ---------------------------------------------------------------------------------------------- the job
def ema_keys(spec: str, ckpt: Checkpoint) -> list[str]:
    """The weight sets of `spec`: "all" (every EMA of the checkpoint), or a comma list of what `--ema` of
    `jitrs sample` takes ("1,2", "ema3", "0.9998", "none" for the raw model)."""
    if spec == "all":
        if not ckpt.ema_sets():
            raise UserError(f"holds no EMA weights, only {', '.join(ckpt.weights)}", param="ckpt", value=ckpt.path)
        return list(ckpt.ema_sets())
    keys = [ckpt.select(part) for part in (p.strip() for p in spec.split(",")) if part]
    if not keys:
        raise UserError("names no weight set (all, or e.g. 1,2)", param="ema", value=spec)
    return keys


def parse_range(text: str, param: str = "cfg") -> tuple[float, float]:
    """'1.0:4.0' -> (1.0, 4.0); a single value is a range of one point; UserError on an empty or bad range.
    `param` names the option in the message."""
    parts = text.split(":")
    try:
        lo, hi = (float(parts[0]), float(parts[-1])) if len(parts) in (1, 2) else (math.nan, math.nan)
    except ValueError:
        lo = hi = math.nan
    if math.isnan(lo) or math.isnan(hi):
        raise UserError("expected a range LO:HI such as 1.0:4.0", param=param, value=text)
    if lo > hi:
        raise UserError(f"is an empty range ({lo:g} > {hi:g})", param=param, value=text)
    if lo < 0:
        raise UserError("must be >= 0", param=param, value=text)
    return lo, hi


def _ema_flag(key: str) -> str:
    return "none" if key == "model" else key.removeprefix("ema")


def final_command(opt: SweepOptions, ckpt: Path, best: dict[str, Any], steps: int, n: int) -> list[str]:
    """The `jitrs sample` command of the final run at the best setting (scored like the sweep)."""
    args = ["jitrs", "sample", "--ckpt", str(ckpt), "--out", str(opt.out / "final"), "--n", str(n)]
    args += ["--ema", _ema_flag(best["ema"]), "--cfg", f"{best['cfg']:g}", "--steps", str(steps)]
    args += ["--method", opt.method, "--interval-min", f"{best['interval_min']:g}"]
    args += ["--interval-max", f"{opt.interval_max:g}"]
    args += ["--seed", str(opt.seed), "--eval-ref", str(opt.ref), "--metrics", ",".join(parse_metrics(opt.metrics))]
    for flag, value in (("--inception-weights", opt.inception_weights), ("--dinov2-weights", opt.dinov2_weights)):
        if value is not None:
            args += [flag, str(value)]
    return args


def sweep(opt: SweepOptions, console: Console | None = None) -> dict[str, Any] | None:
    """Run the sweep (every rank under torchrun); returns the summary written to DIR/sweep.json on rank 0."""
    cfg_lo, cfg_hi = opt.cfg
    base = SampleOptions(
        ckpt=opt.ckpt, out=opt.out, n=opt.n, method=opt.method, steps=opt.steps, cfg=cfg_lo,
        interval=(opt.interval_min[0], opt.interval_max), batch_size=opt.batch_size, seed=opt.seed, device=opt.device,
    )  # fmt: skip
    check_options(base)
    if opt.interval_min[1] >= opt.interval_max:
        raise UserError(
            f"must lie below --interval-max {opt.interval_max:g}", param="interval_min", value=opt.interval_min[1]
        )
    if opt.final is not None and opt.final <= 0:
        raise UserError(f"--final must be a positive number of images, got {opt.final}")
    ckpt_path = resolve_checkpoint(opt.ckpt, "ckpt")
    ckpt = jitrs.load_checkpoint(ckpt_path)
    keys = ema_keys(opt.ema, ckpt)
    res, num_classes = int(ckpt.config["input_size"]), int(ckpt.config["num_classes"])
    d = setup_distributed(opt.device)
    console = console or Console(stderr=True, quiet=d.rank != 0)
    scorer = Scorer(
        opt.metrics, opt.ref, d.device, inception_weights=opt.inception_weights, dinov2_weights=opt.dinov2_weights
    )
    check_reference(scorer.reference, scorer.metrics, res)
    if "fid" not in scorer.metrics:
        raise UserError("the sweep minimises FID: --metrics must include fid", param="metrics", value=opt.metrics)
    writable_dir(opt.out)
    _, steps = sampler_defaults(base, ckpt)
    flow = checkpoint_flow(ckpt_path, ckpt.flow, ckpt.noise_scale)
    stat = ckpt_path.stat()
    settings = {
        "checkpoint": str(ckpt_path.resolve()), "checkpoint_bytes": stat.st_size,
        "checkpoint_mtime_ns": stat.st_mtime_ns, "ref": str(opt.ref.resolve()), "metrics": list(scorer.metrics),
        "n": opt.n, "seed": opt.seed, "steps": steps, "method": opt.method, "interval_max": opt.interval_max,
        "precision": "bf16" if d.device.type == "cuda" else "fp32",
    }  # fmt: skip
    points_path = opt.out / POINTS
    done = read_points(points_path)
    if d.world > 1:
        dist.barrier()  # every rank has read the points before rank 0 appends to them
    per_ema = len(_grid(cfg_lo, cfg_hi, COARSE)) + 3
    if opt.interval_min[1] > opt.interval_min[0]:
        per_ema += len(_grid(*opt.interval_min, INTERVAL_COARSE)) + 3
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("ETA"), TimeRemainingColumn(), console=console, disable=d.rank != 0,
    )  # fmt: skip
    rows: list[dict[str, Any]] = []
    with progress:
        task = progress.add_task("sweep", total=len(keys) * per_ema * opt.n)
        for k, key in enumerate(keys):
            net = ckpt.build(ema=key, device=d.device).eval()
            use_compile = opt.compile if opt.compile is not None else d.device.type == "cuda"
            model = torch.compile(net) if use_compile else net

            def fid_at(cfg: float, imin: float, key: str = key, model: Any = model) -> float:
                cfg, imin = round(cfg, 6), round(imin, 6)
                pk = point_key(settings, key, cfg, imin)
                if pk in done:
                    progress.advance(task, opt.n)
                else:
                    progress.update(task, description=f"{key} cfg {cfg:g} interval-min {imin:g}")
                    start = time.monotonic()
                    values = score_model(
                        model, flow, scorer, opt.n, range(num_classes), steps=steps, method=opt.method, cfg=cfg,
                        interval=(imin, opt.interval_max), seed=opt.seed, batch_size=opt.batch_size, device=d.device,
                        progress=lambda m: progress.advance(task, m * d.world),
                    )  # fmt: skip
                    row = {"key": pk, "ema": key, "cfg": cfg, "interval_min": imin, **values}
                    row["seconds"] = time.monotonic() - start
                    if d.rank == 0:
                        append_point(points_path, row)
                    done[pk] = row
                rows.append(done[pk])
                return float(done[pk]["fid"])

            search(fid_at, opt.cfg, opt.interval_min)
            # The estimate of the points still to come is refined once this EMA's search has finished.
            progress.update(task, total=(len(rows) + (len(keys) - k - 1) * per_ema) * opt.n)
    if d.rank != 0:
        summary = None
    else:
        summary = _summarise(opt, ckpt_path, rows, steps, keys)
        _report(summary, opt.out, console)
    if opt.final is not None:
        best = _best(rows)
        final = replace(
            base, n=opt.final, out=opt.out / "final", ema=_ema_flag(best["ema"]), cfg=best["cfg"],
            interval=(best["interval_min"], opt.interval_max), steps=steps, compile=opt.compile,
        )  # fmt: skip
        scorer.reset()  # it holds the last point's images
        sample(final, console=console, scorer=scorer)
        results = scorer.result()
        if d.rank == 0 and summary is not None:
            summary["final"] = {"n": opt.final, **results}
            atomic_write_text(opt.out / RESULT, json.dumps(summary, indent=2) + "\n")
            console.print(f"final run of {opt.final} images: " + ", ".join(f"{k} {v:.4f}" for k, v in results.items()))
    return summary


def _best(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return min(rows, key=lambda r: (r["fid"], r["cfg"], r["interval_min"]))


def _summarise(
    opt: SweepOptions, ckpt: Path, rows: list[dict[str, Any]], steps: int, keys: list[str]
) -> dict[str, Any]:
    order = {r["key"]: r for r in rows}.values()
    table = sorted(order, key=lambda r: (keys.index(r["ema"]), r["interval_min"], r["cfg"]))
    table = [{k: v for k, v in r.items() if k != "key"} for r in table]
    best_per_ema = {key: _best([r for r in table if r["ema"] == key]) for key in keys}
    best = _best(table)
    command = final_command(opt, ckpt, best, steps, 50_000)
    naive = len(_grid(opt.cfg[0], opt.cfg[1], NAIVE_STEP)) * len(keys)
    return {
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opt).items()},
        "points": table,
        "best_per_ema": best_per_ema,
        "best": best,
        "evaluations": len(table),
        "naive_grid_evaluations": naive,
        "images_generated": len(table) * opt.n,
        "command": shlex.join(command),
    }


def _report(summary: dict[str, Any], out: Path, console: Console) -> None:
    """Print the table, the best setting and the final command; write sweep.json and sweep.png."""
    rows = summary["points"]
    extra = [k for k in ("inception_score", "precision", "recall", "fd_dinov2") if k in rows[0]]
    title = f"jitrs sweep ({summary['evaluations']} points)"
    table = Table("EMA", "CFG", "interval-min", "FID", *extra, "seconds", title=title)
    for r in rows:
        mark = " *" if r == summary["best_per_ema"][r["ema"]] else ""
        cells = (f"{r['cfg']:g}", f"{r['interval_min']:g}", f"{r['fid']:.4f}{mark}", *(f"{r[k]:.4f}" for k in extra))
        table.add_row(r["ema"], *cells, f"{r['seconds']:.1f}")
    console.print(table)
    b = summary["best"]
    best = f"best: {b['ema']} cfg {b['cfg']:g} interval-min {b['interval_min']:g}, FID {b['fid']:.4f}"
    console.print(best, markup=False, highlight=False)
    console.print(f"final run: {summary['command']}", markup=False, highlight=False, soft_wrap=True)
    atomic_write_text(out / RESULT, json.dumps(summary, indent=2) + "\n")
    plot(rows, out / PLOT)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """FID (and the Inception Score, when measured) against the guidance scale, one line per EMA and
    interval-min; FID against interval-min too when it was searched."""
    metrics = ["fid", *(["inception_score"] if "inception_score" in rows[0] else [])]
    searched_interval = len({r["interval_min"] for r in rows}) > 1
    fig, axes = new_figure(len(metrics) + searched_interval)
    axes = list(np.atleast_1d(axes))
    for ax, metric in zip(axes, metrics, strict=False):
        for (ema, imin), mine in _groups(rows, "interval_min").items():
            label = f"{ema}, interval-min {imin:g}" if searched_interval else ema
            ax.plot([r["cfg"] for r in mine], [r[metric] for r in mine], "o-", lw=1, ms=3, label=label)
        _label(ax, "CFG scale", NAMES[metric])
    if searched_interval:
        for (ema, cfg), mine in _groups(rows, "cfg").items():
            if len(mine) > 1:
                x = [r["interval_min"] for r in mine]
                axes[-1].plot(x, [r["fid"] for r in mine], "o-", lw=1, ms=3, label=f"{ema}, cfg {cfg:g}")
        _label(axes[-1], "interval-min", "FID")
    save_figure(fig, path)


NAMES = {"fid": "FID", "inception_score": "Inception Score"}


def _groups(rows: list[dict[str, Any]], by: str) -> dict[tuple[str, float], list[dict[str, Any]]]:
    """Rows by (EMA, rows[by]), each sorted along the other axis of the search."""
    along = "cfg" if by == "interval_min" else "interval_min"
    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["ema"], r[by]), []).append(r)
    return {k: sorted(v, key=lambda r: r[along]) for k, v in groups.items()}


def _label(ax: Any, x: str, y: str) -> None:
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
