"""The streaming Scorer: float64 sums equal numpy's statistics, `sample --eval-ref` and `score_model` equal the
metrics of the written PNGs, and a reference or weights that do not fit are refused before any sampling."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import sklearn.datasets
import torch
from PIL import Image

import jitrs
from jitrs import metrics, scoring
from jitrs.errors import UserError
from jitrs.sample import Flow
from testkit import cli
from testkit.checkpoints import TINY, make_checkpoint
from testkit.cli import one_error_line
from testkit.feature_nets import random_dinov2_weights, random_inception_weights

RES = TINY["input_size"]
N = 6
METRICS = "fid,is,prc,fd-dinov2"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Random feature networks, a tiny checkpoint and reference statistics of photo crops at its resolution."""
    root = tmp_path_factory.mktemp("scoring")
    data = root / "data" / "class0"
    data.mkdir(parents=True)
    photo = sklearn.datasets.load_sample_image("china.jpg")
    for k in range(5):
        Image.fromarray(photo[60 * k : 60 * k + 48, 80 * k : 80 * k + 48]).save(data / f"{k}.png")
    paths = {
        "inception": random_inception_weights(root / "w"),
        "dinov2": random_dinov2_weights(root / "w"),
        "ckpt": make_checkpoint(root / "tiny.pt", TINY),
        "stats": root / "ref.npz",
        "data": data.parent,
    }
    scoring.make_reference(
        data.parent, RES, paths["stats"], METRICS, paths["inception"], paths["dinov2"], batch_size=4, device="cpu"
    )
    return paths


def run_cli(*args: str | Path | int, env: dict[str, str] | None = None) -> object:
    return cli.run_cli(*args, env=env, unset=(metrics.WEIGHTS_ENV, metrics.DINOV2_WEIGHTS_ENV))


def weight_args(env: dict[str, Path]) -> list[str | Path]:
    return ["--inception-weights", env["inception"], "--dinov2-weights", env["dinov2"]]


def test_float64_sums_give_numpys_mean_and_covariance() -> None:
    rng = np.random.default_rng(0)
    feats = rng.normal(3.0, 0.5, size=(37, 5)).astype(np.float32)
    sums = scoring.FeatureSums({"x": 5}, set(), torch.device("cpu"))
    for chunk in np.split(feats, [1, 10, 11, 30]):  # uneven batches, one of a single image
        sums.add({"x": torch.from_numpy(chunk)}, np.arange(len(chunk)))
    stats = sums.stats("x")
    assert np.allclose(stats.mu, feats.astype(np.float64).mean(axis=0), rtol=1e-12)
    assert np.allclose(stats.sigma, np.cov(feats.astype(np.float64), rowvar=False), rtol=1e-10, atol=1e-12)


def test_reference_records_spaces_resolution_and_a_prc_subset(env: dict[str, Path]) -> None:
    with np.load(env["stats"]) as f:
        assert sorted(f["feature_spaces"].tolist()) == sorted([metrics.INCEPTION, metrics.DINOV2])
        assert int(f["resolution"]) == RES and int(f["count"]) == 5
        assert f["prc_features"].shape == (5, 2048) and f["dinov2_mu"].shape == (64,)


def test_sample_eval_ref_equals_the_metrics_of_its_pngs(env: dict[str, Path], tmp_path: Path) -> None:
    """Streaming statistics come from the pixels written: the same numbers as evaluating the folder after, and
    as score_model (what training's online evaluation calls) with the same settings — which leaves the global
    RNG alone."""
    out, js = tmp_path / "samples", tmp_path / "m.json"
    args = ["--ckpt", env["ckpt"], "--out", out, "--n", N, "--steps", 2, "--cfg", 2.0, "--batch-size", 4]
    r = run_cli("sample", *args, "--eval-ref", env["stats"], "--metrics", METRICS, *weight_args(env), "--json", js)
    assert r.returncode == 0, r.stderr
    streamed = json.loads(js.read_text())
    after = scoring.evaluate(out, env["stats"], METRICS, env["inception"], env["dinov2"], batch_size=5, device="cpu")
    assert streamed.keys() == after.keys() >= {"fid", "inception_score", "precision", "recall", "fd_dinov2"}
    for key in streamed:
        assert streamed[key] == pytest.approx(after[key], rel=1e-6, abs=1e-9), key

    ckpt = jitrs.load_checkpoint(env["ckpt"])
    net = ckpt.build(ema="ema1", device="cpu").eval()
    flow = Flow.from_dict(ckpt.flow, noise_scale=ckpt.noise_scale)
    scorer = scoring.Scorer(
        METRICS, env["stats"], "cpu", inception_weights=env["inception"], dinov2_weights=env["dinov2"]
    )
    rng = torch.get_rng_state()
    direct = scoring.score_model(net, flow, scorer, N, range(TINY["num_classes"]), steps=2, cfg=2.0, batch_size=3)
    assert torch.equal(torch.get_rng_state(), rng)
    for key in streamed:
        assert direct[key] == pytest.approx(streamed[key], rel=1e-6, abs=1e-9), key


def test_a_reference_that_does_not_fit_is_refused_before_sampling(env: dict[str, Path], tmp_path: Path) -> None:
    other = tmp_path / "ref32.npz"
    scoring.make_reference(env["data"], 32, other, "fid", env["inception"], device="cpu")
    out = tmp_path / "samples"
    args = ["sample", "--ckpt", env["ckpt"], "--out", out, "--n", 2, "--steps", 1]
    line = one_error_line(run_cli(*args, "--eval-ref", other, *weight_args(env)))
    assert "ref32.npz" in line and "32 px" in line and f"--res {RES}" in line
    assert not out.exists() or not any(out.iterdir())
    with pytest.raises(UserError, match=r"ref32\.npz: holds no dinov2-vit-l-14 statistics for fd-dinov2"):
        scoring.Scorer("fid,fd-dinov2", other, "cpu", inception_weights=env["inception"], dinov2_weights=env["dinov2"])


def test_missing_weights_name_the_file_and_where_it_is_published(env: dict[str, Path]) -> None:
    with pytest.raises(UserError) as e:
        scoring.Scorer("fid,fd-dinov2", env["stats"], "cpu", inception_weights=env["inception"])
    assert "dinov2_vitl14_pretrain.pth" in str(e.value) and "https://dl.fbaipublicfiles.com/dinov2" in str(e.value)
    assert metrics.DINOV2_WEIGHTS_ENV in str(e.value)
    with pytest.raises(UserError, match="'kid' is not a metric"):
        scoring.Scorer("fid,kid", env["stats"], "cpu", inception_weights=env["inception"])
