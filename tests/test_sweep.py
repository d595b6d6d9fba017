"""`jitrs sweep`: the coarse-to-fine search, a tiny sweep through the CLI, its resume, and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sklearn.datasets
from PIL import Image

from jitrs import metrics, scoring
from jitrs.checkpoint import Checkpoint
from jitrs.errors import UserError
from jitrs.sweep import POINTS, SweepOptions, _grid, coarse_to_fine, ema_keys, parse_range, search, sweep
from testkit import cli
from testkit.checkpoints import TINY, make_checkpoint
from testkit.cli import PYTHONPATH, one_error_line
from testkit.feature_nets import random_inception_weights

RES = TINY["input_size"]


@pytest.mark.parametrize("minimum", [1.0, 1.3, 1.8, 2.0, 2.2, 2.7, 3.1, 3.5, 3.9, 4.0])
def test_search_finds_the_minimum_of_a_unimodal_curve_in_about_ten_evaluations(minimum: float) -> None:
    calls: list[float] = []

    def fid(cfg: float) -> float:
        calls.append(cfg)
        return 5.0 + (cfg - minimum) ** 2 + 0.3 * abs(cfg - minimum)  # asymmetric neither side

    assert coarse_to_fine(fid, 1.0, 4.0) == pytest.approx(minimum)
    assert len(calls) == len(set(calls)) <= 11  # the naive 0.1 grid costs 31
    assert coarse_to_fine(fid, 1.0, 4.0) == pytest.approx(minimum)  # deterministic


def test_float_noise_is_a_tie_not_a_step_downhill() -> None:
    # A point recomputed by a resumed sweep in another process may differ in the last bits.
    def fid(dip: float):
        return lambda cfg: 5.0 - (dip if cfg == 1.1 else 0.0)

    assert coarse_to_fine(fid(1e-12), 1.0, 4.0) == 1.0
    assert coarse_to_fine(fid(1e-3), 1.0, 4.0) == 1.1


@pytest.mark.parametrize(("cfg_min", "imin_min"), [(1.0, 0.0), (2.3, 0.15), (3.1, 0.4), (4.0, 0.25)])
def test_search_over_cfg_and_interval_min_finds_a_separable_minimum(cfg_min: float, imin_min: float) -> None:
    calls: list[tuple[float, float]] = []

    def fid(cfg: float, imin: float) -> float:
        calls.append((cfg, imin))
        return 5.0 + (cfg - cfg_min) ** 2 + 0.3 * abs(cfg - cfg_min) + 4 * (imin - imin_min) ** 2

    assert search(fid, (1.0, 4.0), (0.0, 0.4)) == pytest.approx((cfg_min, imin_min))
    assert len(calls) == len(set(calls)) <= 20  # a 0.1 x 0.05 grid costs 31 x 9


def test_search_walks_the_cfg_again_at_the_interval_min_it_found() -> None:
    # Guidance that acts over a narrower interval wants a larger scale: the best cfg moves with interval-min.
    def fid(cfg: float, imin: float) -> float:
        return (cfg - (2.0 + 3 * imin)) ** 2 + (imin - 0.3) ** 2

    cfg, imin = search(fid, (1.0, 4.0), (0.0, 0.4))
    assert imin > 0 and cfg == min(_grid(1.0, 4.0, 0.1), key=lambda c: fid(c, imin))
    assert search(fid, (1.0, 4.0), (0.0, 0.0)) == (2.0, 0.0)  # a single interval-min is not searched


def test_cfg_ranges() -> None:
    assert parse_range("1.0:4.0") == (1.0, 4.0) and parse_range("2.5") == (2.5, 2.5)
    for bad, why in (("4:1", "empty range"), ("a:b", "LO:HI"), ("-1:2", ">= 0")):
        with pytest.raises(UserError, match=why):
            parse_range(bad)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sweep")
    data = root / "data" / "c"
    data.mkdir(parents=True)
    photo = sklearn.datasets.load_sample_image("flower.jpg")
    for k in range(4):
        Image.fromarray(photo[50 * k : 50 * k + 40, 70 * k : 70 * k + 40]).save(data / f"{k}.png")
    paths = {"inception": random_inception_weights(root / "w"), "ckpt": make_checkpoint(root / "tiny.pt", TINY)}
    paths["stats"] = root / "ref.npz"
    scoring.make_reference(data.parent, RES, paths["stats"], "fid", paths["inception"], batch_size=4, device="cpu")
    paths["stats32"] = at_resolution(paths["stats"], 32)
    return paths


def at_resolution(stats: Path, res: int) -> Path:
    """A copy of a reference file that says its images were `res` px."""
    path = stats.with_name(f"ref{res}.npz")
    with np.load(stats) as f:
        np.savez(path, **{k: f[k] for k in f.files if k != "resolution"}, resolution=np.int64(res))
    return path


def sweep_args(env: dict[str, Path], out: Path) -> list[str | Path | int]:
    return ["sweep", "--ckpt", env["ckpt"], "--ref", env["stats"], "--out", out, "--n", 2, "--cfg", "1.0:1.5",
            "--steps", 2, "--batch-size", 2, "--inception-weights", env["inception"]]  # fmt: skip


def test_a_tiny_sweep_end_to_end_and_its_resume(env: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    r = cli.run_cli(*sweep_args(env, out), "--ema", "1", "--final", 2, unset=(metrics.WEIGHTS_ENV,))
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "sweep.json").read_text())
    points = summary["points"]
    assert {p["ema"] for p in points} == {"ema1"}
    lines = (out / POINTS).read_text().splitlines()
    assert len(lines) == summary["evaluations"] == len(points) and summary["naive_grid_evaluations"] == 6
    assert {1.0, 1.5} <= {p["cfg"] for p in points}
    assert len({p["fid"] for p in points}) == len(points)  # two steps: guidance acts at t = 0.5, so CFG matters
    best = summary["best"]
    assert best["fid"] == min(p["fid"] for p in points)
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"--cfg {best['cfg']:g}" in summary["command"] and summary["command"] in " ".join(r.stderr.split())
    # --final ran `jitrs sample --eval-ref` at the best point with the sweep's n: the same images, the same FID.
    assert len(list((out / "final").glob("*.png"))) == 2
    assert summary["final"]["fid"] == pytest.approx(best["fid"], rel=1e-6)
    assert summary["final"]["inception_score"] == pytest.approx(best["inception_score"], rel=1e-6)

    # A killed sweep: the points file ends with a torn line and lacks the last point. The rerun computes that point
    # only (the others are left as they were); a second rerun computes nothing.
    (out / POINTS).write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])
    (out / "sweep.json").unlink()
    assert sweep(options(env, out)) is not None
    again = (out / POINTS).read_text().splitlines()
    assert again[: len(lines) - 1] == lines[:-1] and len(again) == len(lines) + 1
    assert json.loads(again[-1])["key"] == json.loads(lines[-1])["key"]
    before = (out / POINTS).read_bytes()
    resumed = sweep(options(env, out))
    assert (out / POINTS).read_bytes() == before
    assert resumed is not None and resumed["best"]["fid"] == best["fid"]


def test_a_sweep_of_interval_min_stores_its_points_and_runs_the_best(env: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    summary = sweep(options(env, out, cfg=(1.0, 1.0), interval_min=(0.0, 0.2), final=2))
    assert summary is not None
    points = summary["points"]
    assert {0.0, 0.1, 0.2} <= {p["interval_min"] for p in points}
    assert len({(p["cfg"], p["interval_min"]) for p in points}) == len(points) == summary["evaluations"]
    best = summary["best"]
    assert best["fid"] == min(p["fid"] for p in points)
    assert f"--cfg {best['cfg']:g} " in summary["command"]
    assert f"--interval-min {best['interval_min']:g} --interval-max 1 " in summary["command"]
    assert summary["final"]["fid"] == pytest.approx(best["fid"], rel=1e-6)  # the final run used the best interval


def test_a_sweep_under_torchrun_equals_one_process(env: dict[str, Path], tmp_path: Path) -> None:
    args = [str(a) for a in sweep_args(env, tmp_path / "one")] + ["--ema", "1", "--device", "cpu"]
    args[args.index("--n") + 1] = "4"
    one = cli.run_cli(*args, unset=(metrics.WEIGHTS_ENV,))
    assert one.returncode == 0, one.stderr
    args = args[1:]
    args[args.index("--out") + 1] = str(tmp_path / "two")
    args[args.index("--n")] = "--num-samples"  # torchrun's own parser takes --n
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "jitrs"]
    env_vars = {k: v for k, v in os.environ.items() if k != metrics.WEIGHTS_ENV}
    env_vars |= {"PYTHONPATH": PYTHONPATH, "OMP_NUM_THREADS": "1"}
    two = subprocess.run([*cmd, "sweep", *args], capture_output=True, text=True, env=env_vars, timeout=300)
    assert two.returncode == 0, two.stderr
    # Each rank made half of every point's images; the statistics were reduced over both.
    a, b = (json.loads((tmp_path / d / "sweep.json").read_text())["points"] for d in ("one", "two"))
    assert [(p["cfg"], p["interval_min"]) for p in a] == [(p["cfg"], p["interval_min"]) for p in b]
    for p, q in zip(a, b, strict=True):
        assert q["fid"] == pytest.approx(p["fid"], rel=1e-9) and p["fid"] > 0
        assert q["inception_score"] == pytest.approx(p["inception_score"], rel=1e-9)
    assert len((tmp_path / "two" / POINTS).read_text().splitlines()) == len(a)  # one writer: rank 0


def options(env: dict[str, Path], out: Path, **kw: object) -> SweepOptions:
    base = {"ckpt": env["ckpt"], "ref": env["stats"], "out": out, "n": 2, "cfg": (1.0, 1.5), "steps": 2, "ema": "1"}
    base |= {"batch_size": 2, "inception_weights": env["inception"], "device": "cpu"}
    return SweepOptions(**(base | kw))  # type: ignore[arg-type]


def test_ema_all_is_every_ema_and_a_list_names_them() -> None:
    decays = {"ema1": 0.9999, "ema2": 0.9996, "ema3": 0.9998}
    weights: dict[str, dict] = {"model": {}, "ema1": {}, "ema2": {}, "ema3": {}}
    ckpt = Checkpoint(Path("c.pt"), {}, None, 1.0, weights, decays=decays)
    assert ema_keys("all", ckpt) == ["ema1", "ema2", "ema3"]
    assert ema_keys("3,none", ckpt) == ["ema3", "model"]
    assert ema_keys("0.9998, ema2", ckpt) == ["ema3", "ema2"]  # by decay and by key, as sample's --ema
    with pytest.raises(UserError, match="holds no ema4 weights"):
        ema_keys("4", ckpt)
    with pytest.raises(UserError, match="holds no EMA weights"):
        ema_keys("all", Checkpoint(Path("c.pt"), {}, None, 1.0, {"model": {}}))


def test_bad_input_is_refused_before_any_sampling(env: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    line = one_error_line(cli.run_cli(*sweep_args(env, out), "--ema", "3", unset=(metrics.WEIGHTS_ENV,)))
    assert line.startswith("error: --ema 3:") and "holds no ema3 weights; it holds model, ema1 (" in line, line
    cases = [
        ({"ref": env["stats32"]}, r"ref32\.npz: holds statistics of 32 px images but the samples are 16 px"),
        ({"inception_weights": None}, r"pt_inception-2015-12-05-6726825d\.pth \(published at https://"),
        ({"metrics": "is"}, "must include fid"),
        ({"interval_min": (0.0, 1.0)}, r"min.1\.0: must lie below --interval-max 1"),
    ]
    for kw, message in cases:
        with pytest.MonkeyPatch.context() as mp:
            mp.delenv(metrics.WEIGHTS_ENV, raising=False)
            with pytest.raises(UserError, match=message):
                sweep(options(env, out, **kw))
    assert not (out / POINTS).exists()
