"""`jitrs eval`: the Fréchet distance against scipy, FID/IS/PR on a random-weight Inception, reference files."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import sklearn.datasets
import torch_fidelity.feature_extractor_inceptionv3 as tf_inception
from PIL import Image

import jitrs
from jitrs import metrics, scoring
from jitrs.errors import UserError
from jitrs.metrics import Stats, frechet_distance
from testkit import cli
from testkit.checkpoints import TINY, make_checkpoint
from testkit.cli import one_error_line
from testkit.feature_nets import random_inception_weights

SIZE = 32
COUNT = 4


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_inception_weights(tmp_path_factory.mktemp("inception"))


def tiles(image: str, count: int, offset: int = 0) -> list[np.ndarray]:
    """count different SIZE×SIZE uint8 crops of one of scikit-learn's sample photos."""
    photo = sklearn.datasets.load_sample_image(image)
    return [photo[40 * k + offset : 40 * k + offset + SIZE, 50 + 30 * k : 50 + 30 * k + SIZE] for k in range(count)]


def write_folder(folder: Path, images: list[np.ndarray]) -> Path:
    folder.mkdir(parents=True)
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"{i:06d}.png")
    return folder


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two small sets of photo tiles (a CPU Inception pass is slow: every image is resized to 299 px)."""
    root = tmp_path_factory.mktemp("sets")
    china, flower = tiles("china.jpg", COUNT), tiles("flower.jpg", COUNT, offset=100)
    np.savez(root / "china.npz", np.stack(china), np.zeros(COUNT, dtype=np.int64))
    return {
        "china": write_folder(root / "china", china),
        "flower": write_folder(root / "flower", flower),
        "china_npz": root / "china.npz",
    }


@pytest.fixture(scope="module")
def flower_stats(weights: Path, sets: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("stats") / "flower_stats.npz"
    assert scoring.make_reference(sets["flower"], SIZE, path, inception_weights=weights, device="cpu") == (COUNT, [])
    return path


@pytest.fixture(scope="module")
def china_vs_flower(weights: Path, sets: dict[str, Path], flower_stats: Path) -> dict[str, float]:
    """Metrics through the in-process API, with a tripwire on torch-fidelity's downloader."""
    with pytest.MonkeyPatch.context() as mp:

        def refuse(*args: object, **kwargs: object) -> None:
            raise AssertionError("tried to download Inception weights")

        mp.setattr(tf_inception, "load_state_dict_from_url", refuse)
        return scoring.evaluate(sets["china"], flower_stats, inception_weights=weights, device="cpu")


def run_cli(*args: str | Path | int, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real `jitrs` command in a fresh process; the weights env var only when `env` sets it."""
    return cli.run_cli(*args, env=env, unset=(metrics.WEIGHTS_ENV,))


def eval_json(tmp_path: Path, *args: str | Path, env: dict[str, str] | None = None) -> dict[str, float]:
    out = tmp_path / "metrics.json"
    r = run_cli("eval", *args, "--json", out, env=env)
    assert r.returncode == 0, r.stderr
    results = json.loads(out.read_text())
    # The test sets are tiny: the warning that such an FID is biased is printed.
    assert f"warning: FID of {results['images']:.0f} images" in " ".join(r.stderr.split())
    return results


# ---------------------------------------------------------------------------------------------- the formula
def scipy_fid(a: Stats, b: Stats) -> float:
    """The textbook formula with a matrix square root, independent of torch-fidelity's eigenvalue shortcut."""
    covmean = scipy.linalg.sqrtm(a.sigma @ b.sigma).real
    diff = a.mu - b.mu
    return float(diff @ diff + np.trace(a.sigma) + np.trace(b.sigma) - 2 * np.trace(covmean))


def test_frechet_distance_matches_scipy_on_known_gaussians() -> None:
    rng = np.random.default_rng(0)
    dim = 48
    a, b = rng.normal(size=(dim, dim)), rng.normal(size=(dim, dim))
    s1, s2 = Stats(rng.normal(size=dim), a @ a.T + 0.1 * np.eye(dim)), Stats(rng.normal(size=dim), b @ b.T)
    assert frechet_distance(s1, s2) == pytest.approx(scipy_fid(s1, s2), rel=1e-6)
    assert frechet_distance(s1, s1) == pytest.approx(0.0, abs=1e-6 * np.trace(s1.sigma))


def test_frechet_distance_of_diagonal_gaussians_has_a_closed_form() -> None:
    # Commuting covariances: FID = |mu1 - mu2|² + Σ (sqrt(a_k) - sqrt(b_k))².
    va, vb = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])
    s1, s2 = Stats(np.zeros(3), np.diag(va)), Stats(np.array([1.0, 2.0, 0.0]), np.diag(vb))
    expected = 5.0 + float(np.sum((np.sqrt(va) - np.sqrt(vb)) ** 2))
    assert frechet_distance(s1, s2) == pytest.approx(expected, rel=1e-9)


# ---------------------------------------------------------------------------------------------- real CLI
def test_a_set_against_itself(
    weights: Path, sets: dict[str, Path], china_vs_flower: dict[str, float], tmp_path: Path
) -> None:
    same = eval_json(
        tmp_path,
        "--samples",
        sets["china"],
        "--ref",
        sets["china"],
        "--inception-weights",
        weights,
        "--metrics",
        "fid,is,prc",
    )
    assert same["images"] == COUNT
    assert abs(same["fid"]) < 1e-4
    assert same["precision"] == 1.0 and same["recall"] == 1.0
    assert china_vs_flower["images"] == COUNT
    assert china_vs_flower["fid"] > 1e3 * max(abs(same["fid"]), 1e-6)


def test_identical_images_have_inception_score_one(weights: Path, flower_stats: Path, tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "same", tiles("china.jpg", 1) * COUNT)
    got = scoring.evaluate(folder, flower_stats, inception_weights=weights, device="cpu")
    assert got["inception_score"] == pytest.approx(1.0, abs=1e-9)


def test_npz_samples_and_adm_refs_match_folders(
    weights: Path, sets: dict[str, Path], flower_stats: Path, china_vs_flower: dict[str, float], tmp_path: Path
) -> None:
    """The npz (ADM arr_0) path gives the folder path's numbers; an ADM reference batch (mu, sigma and arr_0)
    works as --ref; the environment variable finds the weights."""
    with np.load(flower_stats) as f:
        assert f["mu"].shape == (2048,) and f["sigma"].shape == (2048, 2048) and f["mu"].dtype == np.float64
        mu, sigma = f["mu"], f["sigma"]
    adm = tmp_path / "VIRTUAL_flower.npz"
    flowers = np.stack([np.asarray(Image.open(p)) for p in sorted(sets["flower"].iterdir())])
    np.savez(adm, mu=mu, sigma=sigma, arr_0=flowers)

    by_npz = scoring.evaluate(sets["china_npz"], flower_stats, inception_weights=weights, device="cpu")
    assert by_npz["fid"] == pytest.approx(china_vs_flower["fid"], rel=1e-5)
    assert by_npz["inception_score"] == pytest.approx(china_vs_flower["inception_score"], rel=1e-6)
    by_adm = eval_json(
        tmp_path,
        "--samples",
        sets["china_npz"],
        "--ref",
        adm,
        "--metrics",
        "fid,is,prc",
        env={metrics.WEIGHTS_ENV: str(weights)},
    )
    assert by_adm["fid"] == pytest.approx(china_vs_flower["fid"], rel=1e-5)
    # Precision/recall from the ADM batch's arr_0 are those from the same images as a folder.
    by_folder = eval_json(
        tmp_path,
        "--samples",
        sets["china"],
        "--ref",
        sets["flower"],
        "--inception-weights",
        weights,
        "--metrics",
        "fid,is,prc",
    )
    assert (by_adm["precision"], by_adm["recall"]) == (by_folder["precision"], by_folder["recall"])


def test_make_ref_uses_the_adm_center_crop(weights: Path, tmp_path: Path) -> None:
    """Statistics of big JPEGs in class folders equal those of their ADM crops saved as PNGs."""
    data = tmp_path / "train"
    photos = [sklearn.datasets.load_sample_image(n) for n in ("china.jpg", "flower.jpg")]
    paths = []
    for k, photo in enumerate(photos * 2):
        (data / f"class{k % 2}").mkdir(parents=True, exist_ok=True)
        img = Image.fromarray(photo).rotate(90 * (k // 2), expand=True)
        paths.append(data / f"class{k % 2}" / f"img{k}.jpg")
        img.save(paths[-1], quality=90)
    stats = tmp_path / "ref.npz"
    r = run_cli("eval", "--make-ref", data, "--res", SIZE, "--out", stats, "--inception-weights", weights)
    assert r.returncode == 0, r.stderr
    crops = jitrs.load_batch([str(p) for p in sorted(paths)], SIZE)
    folder = write_folder(tmp_path / "crops", list(crops))
    assert abs(scoring.evaluate(folder, stats, inception_weights=weights, device="cpu")["fid"]) < 1e-4


# ---------------------------------------------------------------------------------------------- bad input
def test_missing_weights_say_which_file_and_where(sets: dict[str, Path]) -> None:
    line = one_error_line(run_cli("eval", "--samples", sets["china"], "--ref", sets["china"]))
    assert "pt_inception-2015-12-05-6726825d.pth" in line
    assert "https://github.com/toshas/torch-fidelity/releases" in line
    assert metrics.WEIGHTS_ENV in line


def test_bad_references_and_weights(weights: Path, sets: dict[str, Path], tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, mu=np.zeros(64), sigma=np.eye(64))
    line = one_error_line(run_cli("eval", "--samples", sets["china"], "--ref", wrong, "--inception-weights", weights))
    assert "wrong.npz" in line and "(2048,)" in line

    neither = tmp_path / "neither.npz"
    np.savez(neither, features=np.zeros(3))
    line = one_error_line(run_cli("eval", "--samples", sets["china"], "--ref", neither, "--inception-weights", weights))
    assert "neither.npz" in line

    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00" * 64)
    line = one_error_line(
        run_cli("eval", "--samples", sets["china"], "--ref", sets["china"], "--inception-weights", junk)
    )
    assert "junk.pth" in line

    empty = tmp_path / "empty"
    empty.mkdir()
    line = one_error_line(run_cli("eval", "--samples", empty, "--ref", sets["china"], "--inception-weights", weights))
    assert "no images" in line


def test_sample_then_eval_in_one_command(weights: Path, flower_stats: Path, tmp_path: Path) -> None:
    ckpt = make_checkpoint(tmp_path / "tiny.pt", TINY | {"input_size": SIZE})
    out = tmp_path / "samples"
    args = ["--ckpt", ckpt, "--out", out, "--n", COUNT, "--steps", 2, "--format", "npz"]
    r = run_cli("sample", *args, "--eval-ref", flower_stats, "--inception-weights", weights)
    assert r.returncode == 0, r.stderr
    assert "FID" in r.stdout and "Inception Score" in r.stdout
    alone = scoring.evaluate(
        out / f"samples_{COUNT}x{SIZE}x{SIZE}x3.npz", flower_stats, inception_weights=weights, device="cpu"
    )
    assert f"{alone['fid']:.4f}" in r.stdout


def test_sample_refuses_eval_without_weights_before_sampling(flower_stats: Path, tmp_path: Path) -> None:
    ckpt = make_checkpoint(tmp_path / "tiny.pt", TINY)
    out = tmp_path / "samples"
    line = one_error_line(run_cli("sample", "--ckpt", ckpt, "--out", out, "--n", 2, "--eval-ref", flower_stats))
    assert "pt_inception" in line
    assert not out.exists()


def test_reference_problems_found_before_or_during_the_pass(
    weights: Path, sets: dict[str, Path], flower_stats: Path, tmp_path: Path
) -> None:
    old = tmp_path / "old_stats.npz"  # the official/ADM format: mu and sigma only
    with np.load(flower_stats) as f:
        np.savez(old, mu=f["mu"], sigma=f["sigma"])
    with pytest.raises(UserError, match=r"old_stats\.npz: holds no reference features for precision/recall"):
        scoring.evaluate(sets["china"], old, "fid,prc", inception_weights=weights)
    data = tmp_path / "data"
    write_folder(data / "class0", tiles("china.jpg", 2))
    (data / "class0" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    # A bad image of a data set is skipped and reported, as training skips it: the statistics are the good ones'.
    count, skipped = scoring.make_reference(data, SIZE, tmp_path / "stats.npz", inception_weights=weights, device="cpu")
    assert count == 2 and [(Path(p).name, "truncated" in why) for p, why in skipped] == [("broken.jpg", True)]
    (data / "class0" / "broken.jpg").unlink()
    assert scoring.make_reference(data, SIZE, tmp_path / "clean.npz", inception_weights=weights, device="cpu") == (
        2,
        [],
    )
    with np.load(tmp_path / "stats.npz") as a, np.load(tmp_path / "clean.npz") as b:
        assert np.array_equal(a["mu"], b["mu"]) and np.array_equal(a["sigma"], b["sigma"])
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(UserError, match=r"out=.*a-file/stats\.npz: cannot write there"):
        scoring.make_reference(data, SIZE, blocker / "stats.npz", inception_weights=weights, device="cpu")
    assert not list(tmp_path.glob("*.tmp"))
