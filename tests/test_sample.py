"""`jitrs sample`: labels, per-image noise, invariance to batch size and process count, resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

import jitrs
from jitrs.errors import UserError
from jitrs.flow import Flow
from jitrs.rundir import DirLock
from jitrs.sample import (
    GRID_PATH,
    MANIFEST,
    PARTS_DIR,
    SampleOptions,
    balanced_labels,
    image_noise,
    my_batches,
    npz_name,
    sample,
    to_pixels,
)
from testkit.checkpoints import TINY, make_checkpoint
from testkit.cli import PYTHONPATH, kill_during_write, one_error_line, run_cli


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", TINY)


def read_pngs(folder: Path, n: int) -> np.ndarray:
    return np.stack([np.asarray(Image.open(folder / f"{i:06d}.png")) for i in range(n)])


# ---------------------------------------------------------------------------------------------- pure parts
@pytest.mark.parametrize(("n", "classes"), [(12, [0, 1, 2]), (10, [0, 1, 2]), (2, [0, 1, 2]), (7, [5, 9])])
def test_balanced_labels_are_class_sorted_and_exact(n: int, classes: list[int]) -> None:
    labels = balanced_labels(n, classes)
    assert labels.dtype == np.int64 and labels.shape == (n,)
    assert np.all(np.diff(labels) >= 0)
    counts = [int((labels == c).sum()) for c in classes]
    # the first n mod C classes get one more
    expected = [n // len(classes) + (1 if k < n % len(classes) else 0) for k in range(len(classes))]
    assert counts == expected


def test_official_layout_of_50k_labels() -> None:
    assert np.array_equal(balanced_labels(50000, range(1000)), np.arange(1000).repeat(50))


def test_noise_of_an_image_depends_only_on_seed_and_index() -> None:
    shape = (3, 8, 8)
    all_rows = image_noise(7, list(range(6)), shape)
    assert torch.equal(image_noise(7, [4, 1], shape), all_rows[[4, 1]])
    assert not torch.equal(image_noise(8, [0], shape)[0], all_rows[0])
    assert not torch.equal(all_rows[0], all_rows[1])
    big = image_noise(0, list(range(64)), shape)
    assert abs(float(big.mean())) < 0.05 and abs(float(big.std()) - 1) < 0.05


def test_pixels_follow_the_official_rounding() -> None:
    z = torch.tensor([-1.5, -1.0, -0.2, 0.0, 1 / 255, 0.5, 1.0, 3.0]).reshape(1, 1, 1, 8).expand(1, 3, 1, 8)
    expected = np.round(np.clip((z.numpy() + 1) / 2, 0, 1) * 255).astype(np.uint8).transpose(0, 2, 3, 1)
    assert np.array_equal(to_pixels(z).numpy(), expected)


@given(
    st.lists(st.integers(0, 500), unique=True, max_size=60).map(sorted),
    st.integers(1, 9),
    st.integers(1, 4),
)
def test_ranks_share_the_missing_images_exactly_once(missing: list[int], batch: int, world: int) -> None:
    taken = [i for r in range(world) for b in my_batches(missing, batch, r, world) for i in b]
    assert sorted(taken) == missing  # nothing twice, nothing past the list: no compute wasted
    assert all(0 < len(b) <= batch for r in range(world) for b in my_batches(missing, batch, r, world))


# ---------------------------------------------------------------------------------------------- the job
def options(ckpt: Path, out: Path, **kw: object) -> SampleOptions:
    base: dict = {"ckpt": ckpt, "out": out, "n": 7, "steps": 3, "batch_size": 3, "cfg": 2.0}
    return SampleOptions(**(base | kw))


def test_images_match_a_direct_one_image_sampler(ckpt: Path, tmp_path: Path) -> None:
    sample(options(ckpt, tmp_path / "s", n=5, classes=(0, 2), batch_size=1))  # batch invariance: its own test
    got = read_pngs(tmp_path / "s", 5)
    net = jitrs.load_checkpoint(ckpt).build(ema="ema1", device="cpu")
    labels = torch.tensor([0, 0, 0, 2, 2])
    for i in range(5):
        z = Flow().sample(
            net, labels[i : i + 1], steps=3, cfg=2.0, interval=(0.1, 1.0), noise=image_noise(0, [i], (3, 16, 16))
        )
        assert np.array_equal(got[i], to_pixels(z)[0].numpy()), i
    assert len(set(got.reshape(5, -1).sum(1).tolist())) == 5  # the images really differ


def test_the_checkpoints_flow_settings_are_used(tmp_path: Path) -> None:
    """A net trained to predict v with other noise scale and t_eps is sampled with those."""
    stored = {"pred": "v", "noise_scale": 2.0, "t_eps": 0.1}
    ckpt = make_checkpoint(tmp_path / "v.pt", TINY, flow=stored)
    sample(options(ckpt, tmp_path / "s", n=2, classes=(1,)))
    got = read_pngs(tmp_path / "s", 2)
    net = jitrs.load_checkpoint(ckpt).build(ema="ema1", device="cpu")
    z = Flow(**stored).sample(
        net, torch.tensor([1, 1]), steps=3, cfg=2.0, interval=(0.1, 1.0), noise=image_noise(0, [0, 1], (3, 16, 16))
    )
    assert np.array_equal(got, to_pixels(z).numpy())
    assert not np.array_equal(
        got,
        to_pixels(Flow().sample(net, torch.tensor([1, 1]), steps=3, noise=image_noise(0, [0, 1], (3, 16, 16)))).numpy(),
    )


def test_batch_size_does_not_change_the_images(ckpt: Path, tmp_path: Path) -> None:
    sample(options(ckpt, tmp_path / "a", batch_size=2))
    sample(options(ckpt, tmp_path / "b", batch_size=5))
    assert np.array_equal(read_pngs(tmp_path / "a", 7), read_pngs(tmp_path / "b", 7))


def test_npz_is_adm_format_and_equals_the_pngs(ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "s"
    sample(options(ckpt, out, n=10, format="both"))
    with np.load(out / npz_name(10, 16)) as f:
        images, labels = f["arr_0"], f["arr_1"]
    assert images.dtype == np.uint8 and images.shape == (10, 16, 16, 3)
    assert np.array_equal(images, read_pngs(out, 10))
    assert labels.tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert not (out / ".parts").exists()
    grid = np.asarray(Image.open(out / GRID_PATH))
    assert grid.shape == (32, 128, 3)  # 10 images in rows of 8
    assert np.array_equal(grid[16:32, 16:32], images[9])
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".png") == [f"{i:06d}.png" for i in range(10)]


def test_ema_choice_changes_the_weights(ckpt: Path, tmp_path: Path) -> None:
    sample(options(ckpt, tmp_path / "e1", n=3, ema="1", format="npz"))
    sample(options(ckpt, tmp_path / "e2", n=3, ema="2", format="npz"))
    a = np.load(tmp_path / "e1" / npz_name(3, 16))["arr_0"]
    b = np.load(tmp_path / "e2" / npz_name(3, 16))["arr_0"]
    assert not np.array_equal(a, b)


# ---------------------------------------------------------------------------------------------- real CLI
def test_cli_prints_the_uneven_split_and_makes_exactly_n(ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "s"
    r = run_cli("sample", "--ckpt", ckpt, "--out", out, "--n", 5, "--steps", 2, "--classes", "2,0")
    assert r.returncode == 0, r.stderr
    assert "first 1 classes get 3 images" in r.stderr.replace("\n", " ")
    assert len(list(out.glob("[0-9]*.png"))) == 5
    assert json.loads((out / MANIFEST).read_text())["settings"]["classes"] == [0, 2]


def test_two_processes_make_the_same_images_as_one(ckpt: Path, tmp_path: Path) -> None:
    common = ["--ckpt", ckpt, "--steps", 3, "--cfg", 2.0, "--format", "both"]
    one = run_cli("sample", "--out", tmp_path / "one", "--batch-size", 4, "--n", 9, *common)
    assert one.returncode == 0, one.stderr
    env = {**os.environ, "PYTHONPATH": PYTHONPATH, "OMP_NUM_THREADS": "1"}
    # As the README launches it: --num-samples, since torchrun's own parser rejects --n.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "jitrs"]
    two = subprocess.run(
        [*cmd, "sample", "--out", str(tmp_path / "two"), "--batch-size", "2", "--num-samples", "9", *map(str, common)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert two.returncode == 0, two.stderr
    assert np.array_equal(read_pngs(tmp_path / "one", 9), read_pngs(tmp_path / "two", 9))
    a = np.load(tmp_path / "one" / npz_name(9, 16))["arr_0"]
    assert np.array_equal(a, np.load(tmp_path / "two" / npz_name(9, 16))["arr_0"])


def test_resume_after_sigkill_is_bit_identical(tmp_path: Path) -> None:
    ckpt = make_checkpoint(tmp_path / "k.pt", TINY | {"input_size": 32}, seed=1)
    n, batch = 24, 2
    args = ["sample", "--ckpt", ckpt, "--n", n, "--steps", 3, "--batch-size", batch, "--format", "both"]
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": PYTHONPATH, "OMP_NUM_THREADS": "1"}
    killed = subprocess.run(
        # SIGKILLed from inside the writer thread while the npz part of the third batch is half written (its PNGs
        # are already on disk): the worst moment for the store.
        kill_during_write("numpy.savez", 3, 0, *args, "--out", out),
        env=env,
        capture_output=True,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert len(list(out.glob("[0-9]*.png"))) == 3 * batch  # the third batch's PNGs were written...
    assert len(list((out / PARTS_DIR).glob("*.npz"))) == 2  # ...its npz part was not
    assert len(list(out.rglob("*.tmp"))) == 1  # the torn part, hidden under a temp name
    assert not (out / npz_name(n, 32)).exists()

    resumed = run_cli(*args, "--out", out)
    assert resumed.returncode == 0, resumed.stderr
    # An image counts once both its PNG and its npz part exist: two batches, not three.
    assert f"{2 * batch} of {n} images already" in resumed.stderr.replace("\n", " ")
    fresh = run_cli(*args, "--out", tmp_path / "fresh")
    assert fresh.returncode == 0, fresh.stderr
    assert np.array_equal(read_pngs(out, n), read_pngs(tmp_path / "fresh", n))
    with np.load(out / npz_name(n, 32)) as a, np.load(tmp_path / "fresh" / npz_name(n, 32)) as b:
        assert np.array_equal(a["arr_0"], b["arr_0"]) and np.array_equal(a["arr_1"], b["arr_1"])
    assert len(list(out.glob("[0-9]*.png"))) == n
    assert not list(out.rglob("*.tmp"))  # the killed write's temp file is gone


def test_rerun_with_other_settings_is_refused(ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "s"
    assert run_cli("sample", "--ckpt", ckpt, "--out", out, "--n", 2, "--steps", 2).returncode == 0
    line = one_error_line(run_cli("sample", "--ckpt", ckpt, "--out", out, "--n", 2, "--steps", 2, "--seed", 1))
    assert "other settings" in line and "seed" in line
    assert sorted(p.name for p in out.glob("*.png")) == ["000000.png", "000001.png"]


def test_bad_n_gives_one_line_from_the_cli(ckpt: Path, tmp_path: Path) -> None:
    line = one_error_line(run_cli("sample", "--ckpt", ckpt, "--out", tmp_path / "s", "--n", "0"))
    assert "--n" in line and "positive" in line
    assert "--classes" in one_error_line(run_cli("sample", "--ckpt", ckpt, "--out", tmp_path / "s", "--classes", "a"))


@pytest.mark.parametrize(
    ("bad", "needle"),
    [
        ({"n": -3}, "--n"),
        ({"ema": "3"}, "--ema"),
        ({"method": "rk4"}, "--method"),
        ({"steps": 0}, "--steps"),
        ({"batch_size": 0}, "--batch-size"),
        ({"classes": (0, 7)}, "--classes 7"),
        ({"interval": (0.9, 0.2)}, "--interval"),
        ({"format": "jpg"}, "--format"),
        ({"cfg": -1.0}, "--cfg"),
    ],
)
def test_bad_options_are_user_errors(ckpt: Path, tmp_path: Path, bad: dict, needle: str) -> None:
    with pytest.raises(UserError, match=needle):
        sample(options(ckpt, tmp_path / "s", **bad))
    assert not (tmp_path / "s" / MANIFEST).exists()


def test_missing_ema_is_a_user_error(tmp_path: Path) -> None:
    ckpt = make_checkpoint(tmp_path / "k.pt", TINY)
    payload = torch.load(ckpt, weights_only=True)
    del payload["ema2"]
    torch.save(payload, ckpt)
    with pytest.raises(UserError, match="--ema 2"):
        sample(options(ckpt, tmp_path / "s", ema="2"))


def test_bad_checkpoints_give_one_line(ckpt: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(300))
    assert str(junk) in one_error_line(run_cli("sample", "--ckpt", junk, "--out", tmp_path / "a"))

    payload = torch.load(ckpt, weights_only=True)
    no_config = {k: v for k, v in payload.items() if k != "config"}
    torch.save(no_config, tmp_path / "noconfig.pt")
    assert "noconfig.pt" in one_error_line(
        run_cli("sample", "--ckpt", tmp_path / "noconfig.pt", "--out", tmp_path / "b")
    )

    other = payload | {"config": payload["config"] | {"depth": 3}}  # weights of a 2-block net
    torch.save(other, tmp_path / "other.pt")
    assert "other.pt" in one_error_line(run_cli("sample", "--ckpt", tmp_path / "other.pt", "--out", tmp_path / "c"))

    empty_run = tmp_path / "run"
    empty_run.mkdir()
    assert "no checkpoint" in one_error_line(run_cli("sample", "--ckpt", empty_run, "--out", tmp_path / "d"))


def test_unwritable_out_is_caught_before_the_checkpoint_is_read(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a directory")
    line = one_error_line(run_cli("sample", "--ckpt", junk, "--out", blocker / "sub"))
    assert "--out" in line and "cannot write there" in line


def test_run_directory_takes_its_newest_checkpoint(ckpt: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    make_checkpoint(run / "checkpoint-0000010.pt", TINY, seed=3)
    newest = make_checkpoint(run / "checkpoint-0000020.pt", TINY, seed=4)
    out = tmp_path / "s"
    sample(options(run, out, n=2))
    assert json.loads((out / MANIFEST).read_text())["settings"]["checkpoint"] == str(newest.resolve())


def test_a_safetensors_export_samples_like_its_checkpoint(ckpt: Path, tmp_path: Path) -> None:
    source = jitrs.load_checkpoint(ckpt)
    export = tmp_path / "tiny.safetensors"
    jitrs.save_safetensors(export, source.weights["ema1"], config=source.config, flow=source.flow)
    sample(options(export, tmp_path / "st", n=4))  # its only weight set is taken without --ema
    sample(options(ckpt, tmp_path / "pt", n=4))
    assert np.array_equal(read_pngs(tmp_path / "st", 4), read_pngs(tmp_path / "pt", 4))
    with pytest.raises(UserError, match="holds no ema2 weights"):
        sample(options(export, tmp_path / "st2", n=4, ema="2"))


@pytest.mark.parametrize(("name", "cfg"), [("JiT-B/16", 3.0), ("JiT-L/32", 2.5), ("JiT-H/16", 2.2), (None, 1.0)])
def test_default_guidance_is_the_official_one_for_the_model(tmp_path: Path, name: str | None, cfg: float) -> None:
    ckpt = make_checkpoint(tmp_path / "k.pt", TINY, name=name)
    sample(options(ckpt, tmp_path / "s", n=1, steps=1, cfg=None))
    settings = json.loads((tmp_path / "s" / MANIFEST).read_text())["settings"]
    assert settings["cfg"] == cfg and settings["interval"] == [0.1, 1.0] and settings["method"] == "heun"


@pytest.mark.gpu
def test_cuda_bf16_compiled_sampling_is_deterministic(ckpt: Path, tmp_path: Path) -> None:
    """On CUDA (bf16, torch.compile) a rerun gives the same bits; another batch size may pick other GEMM
    kernels, so there only the rounding may differ."""
    sample(options(ckpt, tmp_path / "a", n=8, batch_size=4, device="cuda"))
    sample(options(ckpt, tmp_path / "b", n=8, batch_size=4, device="cuda"))
    sample(options(ckpt, tmp_path / "c", n=8, batch_size=3, device="cuda"))
    a, b, c = (read_pngs(tmp_path / d, 8).astype(int) for d in "abc")
    assert np.array_equal(a, b)
    assert np.abs(a - c).mean() < 1.0
    assert json.loads((tmp_path / "a" / MANIFEST).read_text())["settings"]["precision"] == "bf16"


def test_a_second_job_on_the_output_directory_is_refused(ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "s"
    out.mkdir()
    with DirLock(out):  # held by this process, as by a sampling job still running
        line = one_error_line(run_cli("sample", "--ckpt", ckpt, "--out", out, "--n", 2, "--steps", 2))
    assert f"--out {out}: another job is using this directory (pid {os.getpid()} on " in line
    assert not list(out.glob("*.png"))
    assert run_cli("sample", "--ckpt", ckpt, "--out", out, "--n", 2, "--steps", 2).returncode == 0


def test_images_without_a_manifest_are_not_adopted(ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "s"
    out.mkdir()
    jitrs.write_png(out / "000001.png", np.zeros((16, 16, 3), np.uint8))  # a stray image, from who knows where
    line = one_error_line(run_cli("sample", "--ckpt", ckpt, "--out", out, "--n", 2, "--steps", 2))
    assert f"--out {out}: holds 000001.png and 0 other sample file(s) but no manifest.json" in line
    assert sorted(p.name for p in out.iterdir()) == [".lock", "000001.png"]
