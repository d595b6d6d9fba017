"""A full disk, for real (a small tmpfs), under every writer of train, sample, eval and toy: one line naming the file
and the reason (and, for training, the last good checkpoint), exit code 1, no traceback, no temp file left, and
what was written before stays sound."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import jitrs
from testkit.checkpoints import TINY, make_checkpoint
from testkit.cli import run_cli
from testkit.feature_nets import random_inception_weights

TRAIN = [
    "train", "--data", "digits", "--model", "JiT-S/4", "--res", "16", "--sample-steps", "2",
    "--model-arg", "depth=2", "--model-arg", "hidden_size=32", "--model-arg", "num_heads=2",
    "--model-arg", "in_context_len=2", "--model-arg", "in_context_start=1", "--model-arg", "bottleneck_dim=8",
    "--batch-size", "8", "--log-every", "1", "--steps", "4", "--ckpt-every", "2", "--sample-every", "2",
]  # fmt: skip
TRAIN_FAILURE = re.compile(
    r"error: cannot write (?P<file>\S+): No space left on device; "
    r"(no checkpoint was saved|the last good checkpoint is (?P<last>\S+))"
)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One digits cache for the module's runs (each would build it again)."""
    return {"JITRS_CACHE": str(tmp_path_factory.mktemp("cache"))}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A mounted tmpfs whose size the test sets with `remount(size)`; needs root (CI runs as root here)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def mount(where: Path, size: str) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)


def assert_one_line_exit_1(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stderr.strip().splitlines()[-1]


def no_temp_files(root: Path) -> list[Path]:
    return list(root.rglob(".*.tmp"))


# The sizes put the first failed write at different writers of a tiny run: the data index (before any step), the
# plots and sample grid (after the first checkpoint); tests/test_train.py fills the disk at a checkpoint.
@pytest.mark.parametrize("size", ["8k", "1200k"])
def test_training_on_a_full_disk(small_disk: Path, size: str, cache: dict[str, str]) -> None:
    mount(small_disk, size)
    run_dir = small_disk / "run"
    proc = run_cli(*TRAIN, "--out", run_dir, env=cache)
    line = assert_one_line_exit_1(proc)
    m = TRAIN_FAILURE.fullmatch(line)
    assert m, line
    assert Path(m["file"]).is_relative_to(run_dir)
    assert not no_temp_files(small_disk)
    if m["last"]:  # the checkpoint it names is whole: it loads, at the step its name says
        ckpt = jitrs.load_checkpoint(m["last"])
        assert ckpt.step == int(re.findall(r"\d+", Path(m["last"]).name)[0])
    else:  # nothing of a run was written: the directory it created is gone, so a rerun is not refused
        assert not run_dir.exists()


def test_sampling_on_a_full_disk_keeps_what_it_wrote_and_resumes(small_disk: Path, tmp_path: Path) -> None:
    ckpt = make_checkpoint(tmp_path / "tiny.pt", TINY)
    mount(small_disk, "40k")
    out = small_disk / "samples"
    args = ("sample", "--ckpt", ckpt, "--n", "24", "--steps", "2", "--out")
    line = assert_one_line_exit_1(run_cli(*args, out))
    m = re.fullmatch(r"error: (\S+\.png): No space left on device", line)
    assert m and Path(m[1]).parent == out, line
    assert not no_temp_files(small_disk)
    # Batches are written concurrently, so the images kept need not be a prefix; each one kept is whole and the
    # very image a run that never failed writes at its index.
    whole = run_cli(*args, tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr
    written = sorted(p.name for p in out.glob("*.png"))
    assert 0 < len(written) < 24
    for name in written:
        assert (out / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
    # The same command on a disk with room again finishes the set.
    subprocess.run(["mount", "-o", "remount,size=4M", str(small_disk)], check=True)
    again = run_cli(*args, out)
    assert again.returncode == 0, again.stderr
    for i in range(24):
        assert (out / f"{i:06d}.png").read_bytes() == (tmp_path / "whole" / f"{i:06d}.png").read_bytes()


def test_toy_on_a_full_disk(small_disk: Path) -> None:
    mount(small_disk, "8k")  # results.json fits, toy.png does not
    out = small_disk / "toy"
    args = ("--dims", "2", "--train-steps", "5", "--samples", "50", "--sample-steps", "2")
    line = assert_one_line_exit_1(run_cli("toy", "--out", out, *args))
    assert line == f"error: {out / 'toy.png'}: No space left on device"
    assert not no_temp_files(small_disk)


def test_eval_make_ref_on_a_full_disk(small_disk: Path, tmp_path: Path) -> None:
    weights = random_inception_weights(tmp_path / "weights")
    data = tmp_path / "data" / "c"
    data.mkdir(parents=True)
    for i in range(2):
        Image.fromarray(np.full((24, 24, 3), 60 * i, np.uint8)).save(data / f"{i}.png")
    mount(small_disk, "8k")  # the statistics (2048² float64) do not fit
    out = small_disk / "stats.npz"
    args = ("eval", "--make-ref", data.parent, "--res", "16", "--inception-weights", weights, "--device", "cpu")
    line = assert_one_line_exit_1(run_cli(*args, "--out", out))
    assert line == f"error: {out}: No space left on device"
    assert not no_temp_files(small_disk)
