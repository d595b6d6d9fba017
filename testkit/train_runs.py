"""Two tiny training runs from the same weights, shared by the EMA and online-evaluation tests (made once per
session): three EMAs without evaluation, and the default two with `--eval-every`. Their losses must agree."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest
import sklearn.datasets
import torch
from PIL import Image

import jitrs
from jitrs import metrics, scoring
from testkit.checkpoints import TINY
from testkit.cli import run_cli
from testkit.feature_nets import random_inception_weights

DECAYS = [0.9, 0.8, 0.7]  # fast enough that three steps separate the EMAs from each other and from the model
# A 2-block JiT at 16 px on builtin:digits (10 classes): a training step takes milliseconds.
NET: dict[str, Any] = {**TINY, "num_classes": 10, "in_context_len": 2}
RES = NET["input_size"]
EVAL_N = 4
TRAIN = [
    "--data", "digits", "--res", RES, "--batch-size", 8, "--log-every", 1, "--sample-every", 0, "--sample-steps", 2,
    "--blr", "1e-2", "--warmup-epochs", 0, "--ckpt-every", 1, "--keep-last", 0,
]  # fmt: skip


def train(*args: str | Path | int | float, cache: Path, env: dict[str, str] | None = None) -> None:
    proc = run_cli("train", *TRAIN, *args, env={"JITRS_CACHE": str(cache), **(env or {})}, unset=(metrics.WEIGHTS_ENV,))
    assert proc.returncode == 0, proc.stderr


def rows(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in rows(run_dir) if "loss" in r}


def reference(root: Path, res: int, weights: Path) -> Path:
    """Statistics (random Inception) of photo crops at `res` px."""
    data = root / f"photos{res}" / "c"
    data.mkdir(parents=True)
    photo = sklearn.datasets.load_sample_image("china.jpg")
    for k in range(5):
        Image.fromarray(photo[60 * k : 60 * k + 48, 80 * k : 80 * k + 48]).save(data / f"{k}.png")
    out = root / f"ref{res}.npz"
    scoring.make_reference(data.parent, res, out, "fid", weights, batch_size=8, device="cpu")
    return out


def ema_runs(factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The runs (made on the first call of a test session, in its temp folder) and their inputs."""
    return _ema_runs(factory.getbasetemp())


@functools.cache
def _ema_runs(basetemp: Path) -> dict[str, Path]:
    root = basetemp / "ema-runs"
    root.mkdir()
    cache = root / "cache"
    torch.manual_seed(0)
    net = jitrs.JiT(**NET)
    with torch.no_grad():  # the official init zeroes the output layers: samples would not depend on their noise
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    jitrs.save_safetensors(root / "init.safetensors", net)  # one weight set: every EMA starts from it
    weights = random_inception_weights(root / "w")
    ref = reference(root, RES, weights)
    paths = {"root": root, "cache": cache, "init": root / "init.safetensors", "weights": weights, "ref": ref}
    paths |= {"three": root / "three", "eval": root / "eval"}
    start = ["--init", paths["init"], "--steps", 3]
    train(*start, "--ema", ",".join(map(str, DECAYS)), "--out", paths["three"], cache=cache)
    evaluate = ["--eval-every", 2, "--eval-ref", ref, "--eval-n", EVAL_N, "--eval-ema", 2]
    train(*start, *evaluate, "--out", paths["eval"], cache=cache, env={metrics.WEIGHTS_ENV: str(weights)})
    return paths
