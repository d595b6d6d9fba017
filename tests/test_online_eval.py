"""`jitrs train --eval-every`: FID/IS of an EMA in metrics.jsonl and TensorBoard, equal to sampling the same
checkpoint with `jitrs sample` and scoring the files; bad references and weights refused before training.
(That evaluation leaves the training losses as they are: tests/test_ema.py, with the shared runs.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from jitrs import rundir, scoring
from jitrs.device import Dist
from jitrs.errors import UserError
from jitrs.metrics import INCEPTION, Reference, Stats, save_reference
from jitrs.online_eval import OnlineEval, eval_batch_size
from jitrs.sample import SampleOptions, sample
from jitrs.train import EVAL_STREAM, step_seed
from jitrs.train_config import TrainConfig
from testkit.cli import one_error_line, run_cli
from testkit.train_runs import EVAL_N, RES, TRAIN, ema_runs, rows


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return ema_runs(tmp_path_factory)


def test_evaluations_are_logged_at_every_n_steps_and_at_the_end(runs: dict[str, Path]) -> None:
    evals = [r for r in rows(runs["eval"]) if "fid" in r]
    assert [r["step"] for r in evals] == [2, 3]  # --eval-every 2 over 3 steps, and the final step
    for r in evals:
        assert r["eval_images"] == EVAL_N and r["eval_ema"] == "ema2" and r["eval_cfg"] == 3.0  # --sample-cfg
        assert np.isfinite(r["fid"]) and r["fid"] > 0 and r["inception_score"] >= 1
    assert evals[0]["fid"] != evals[1]["fid"]
    (events,) = (runs["eval"] / "tb").glob("events.out.tfevents.*")
    tb = EventAccumulator(str(events))
    tb.Reload()
    assert [(e.step, pytest.approx(e.value)) for e in tb.Scalars("eval/fid")] == [(r["step"], r["fid"]) for r in evals]
    assert [e.step for e in tb.Scalars("eval/inception_score")] == [2, 3]


def test_the_logged_fid_is_that_of_sampling_the_checkpoint(runs: dict[str, Path]) -> None:
    """The step-2 evaluation scored the EMA named, with the run's sampler, guidance and the seed of (seed, step):
    `jitrs sample` of that checkpoint's ema2 with those settings writes images whose FID is the one logged."""
    logged = next(r for r in rows(runs["eval"]) if r.get("step") == 2 and "fid" in r)
    out = runs["root"] / "resampled"
    seed = step_seed(0, 2, EVAL_STREAM)
    opts = SampleOptions(runs["eval"] / "checkpoint-0000002.pt", out, EVAL_N, ema="2", steps=2, cfg=3.0, seed=seed)
    sample(opts)
    score = scoring.evaluate(out, runs["ref"], "fid,is", runs["weights"], device="cpu")
    assert score["fid"] == pytest.approx(logged["fid"], rel=1e-6)
    assert score["inception_score"] == pytest.approx(logged["inception_score"], rel=1e-6)


def test_a_reference_of_another_resolution_is_refused_before_training(runs: dict[str, Path], tmp_path: Path) -> None:
    ref32 = tmp_path / "ref32.npz"  # statistics of 32 px images (their values do not matter here)
    save_reference(ref32, Reference(ref32, {INCEPTION: Stats(np.zeros(2048), np.eye(2048))}, None, 32, 5))
    out = tmp_path / "run"
    args = [*TRAIN, "--steps", 2, "--eval-every", 1, "--eval-ref", ref32, "--inception-weights", runs["weights"]]
    line = one_error_line(run_cli("train", *args, "--out", out, env={"JITRS_CACHE": str(runs["cache"])}))
    assert line.startswith(f"error: --eval-ref {ref32}: holds statistics of 32 px images but the samples are 16 px")
    assert not rundir.holds_run(out)


def test_bad_evaluation_options_name_the_flag(runs: dict[str, Path], tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("JITRS_INCEPTION_WEIGHTS", raising=False)
    cpu = Dist(0, 1, torch.device("cpu"))

    def refusal(**options: object) -> str:
        base = {"data": "x", "res": RES, "eval_every": 1, "eval_ref": str(runs["ref"])}
        cfg = TrainConfig(**(base | {"inception_weights": str(runs["weights"])} | options))
        with pytest.raises(UserError) as e:
            cfg.validate()
            OnlineEval.prepare(cfg, cpu)
        return e.value.for_cli()

    assert (
        refusal(eval_ref=None) == "--eval-every needs --eval-ref: reference statistics made by `jitrs eval --make-ref`"
    )
    assert (
        refusal(eval_ema="3")
        == "--eval-ema 3: this run (--ema) holds no ema3 weights; it holds ema1 (0.9999), ema2 (0.9996)"
    )
    assert refusal(eval_n=1).startswith("--eval-n must be at least 2")
    assert refusal(eval_ref=str(tmp_path / "nope.npz")) == f"--eval-ref {tmp_path / 'nope.npz'}: no such file"
    missing = refusal(inception_weights=str(tmp_path / "w.pth"))
    assert missing.startswith(f"--inception-weights {tmp_path / 'w.pth'}: no such file")
    assert refusal(inception_weights=None).startswith("--inception-weights: FID/IS/precision/recall need the weights")
    other = tmp_path / "other.npz"  # "Inception" statistics of another feature space: 64-dimensional
    save_reference(other, Reference(other, {INCEPTION: Stats(np.zeros(64), np.eye(64))}, None, RES, 5))
    expected = f"--eval-ref {other}: mu (64,) and sigma (64, 64) are not {INCEPTION} statistics (expected (2048,)"
    assert refusal(eval_ref=str(other)).startswith(expected)
    with pytest.raises(UserError, match=r"--eval-n 5 cannot be cut .* each of the 4 processes.* a multiple of 4$"):
        eval_batch_size(5, 4, 8, sharded=True)  # 1, 2, 3 or 5 batches: none splits evenly over 4


@pytest.mark.parametrize(
    ("n", "world", "largest"), [(4, 2, 8), (10, 4, 3), (5000, 8, 128), (6, 3, 1), (12, 2, 5), (5, 2, 8)]
)
def test_fsdp_evaluation_batches_are_equal_in_number_on_every_rank(n: int, world: int, largest: int) -> None:
    size = eval_batch_size(n, world, largest, sharded=True)
    batches = -(-n // size)
    assert 1 <= size <= largest and batches % world == 0
