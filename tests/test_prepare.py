"""`jitrs prepare`: an ImageFolder or parquet source written as tar shards that index like the source, whole
shards only after a kill, a rerun that finishes the job, and clear refusals."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from jitrs.dataset import build_index
from jitrs.errors import UserError
from jitrs.prepare import prepare, read_source
from testkit.cli import PYTHONPATH, one_error_line, run_cli
from testkit.shards import image_folder, png, random_images, write_parquet

IMAGES, LABELS = random_images(11), np.arange(11) % 3


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return image_folder(tmp_path_factory.mktemp("folder"), IMAGES, LABELS)


def members(shard: Path) -> list[str]:
    with tarfile.open(shard) as tar:
        return tar.getnames()


def test_folder_to_shards_indexes_like_the_folder(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "shards"
    result = run_cli("prepare", "--data", folder, "--out", out, "--shard-size", "4")
    assert result.returncode == 0, result.stderr
    assert "11 images in 3 shard(s)" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "classes.txt", "prepare.json", "shard-000000.tar", "shard-000001.tar", "shard-000002.tar",
    ]  # fmt: skip
    assert members(out / "shard-000002.tar") == ["000008.png", "000008.cls", "000009.png", "000009.cls",
                                                 "000010.png", "000010.cls"]  # fmt: skip
    source, shards = build_index(folder), build_index(out)
    assert shards.classes == source.classes == ["c0", "c1", "c2"]
    assert np.array_equal(shards.labels, source.labels)
    n = len(source)
    assert [read_source(s) for s in shards.sources(range(n))] == [read_source(s) for s in source.sources(range(n))]


def test_parquet_to_shards(tmp_path: Path) -> None:
    write_parquet(
        tmp_path / "hf" / "train-0.parquet", [png(i) for i in IMAGES[:5]], [2, 1, 0, -1, 1], 2, ["x", "y", "z"]
    )
    result = run_cli("prepare", "--data", tmp_path / "hf", "--out", tmp_path / "out", "--shard-size", "3")
    assert result.returncode == 0, result.stderr
    assert "1 member(s) of the source left out" in result.stderr and "train-0.parquet:row 3" in result.stderr
    shards = build_index(tmp_path / "out")
    assert shards.classes == ["x", "y", "z"] and shards.labels.tolist() == [2, 1, 0, 1]
    assert [read_source(s) for s in shards.sources(range(4))] == [png(IMAGES[i]) for i in (0, 1, 2, 4)]


# The prepare command, SIGKILLed inside the `call`-th member write (threads=1: shards are written in order).
_KILL = """
import os, signal, sys
import jitrs.prepare
from jitrs.cli import main
real, calls, kill_at = jitrs.prepare._add, [0], int(sys.argv[1])
def add(tar, name, data):
    calls[0] += 1
    if calls[0] == kill_at:
        tar.fileobj.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    real(tar, name, data)
jitrs.prepare._add = add
sys.argv = ["jitrs", "prepare", *sys.argv[2:]]
main()
"""


def test_a_killed_run_leaves_whole_shards_and_a_rerun_finishes_them(folder: Path, tmp_path: Path) -> None:
    args = ["--data", str(folder), "--shard-size", "4", "--threads", "1"]
    cmd = [sys.executable, "-c", _KILL, "13", *args, "--out", str(tmp_path / "killed")]  # inside the second shard
    proc = subprocess.run(cmd, capture_output=True, env={"PYTHONPATH": PYTHONPATH, "PATH": "/usr/bin:/bin"})
    assert proc.returncode == -9
    killed = tmp_path / "killed"
    assert sorted(p.name for p in killed.glob("shard-*")) == ["shard-000000.tar"]  # the torn one never got its name
    assert len(members(killed / "shard-000000.tar")) == 8
    assert len(list(killed.glob(".shard-000001.tar.*.tmp"))) == 1  # what the kill left, under a hidden name
    rerun = run_cli("prepare", *args, "--out", killed)
    assert rerun.returncode == 0, rerun.stderr
    assert "wrote 2 (1 already there)" in rerun.stderr
    assert not list(killed.glob(".*.tmp"))
    assert run_cli("prepare", *args, "--out", tmp_path / "whole").returncode == 0
    for name in ("shard-000000.tar", "shard-000001.tar", "shard-000002.tar", "classes.txt", "prepare.json"):
        assert (killed / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()


def test_refusals_are_one_clear_line(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    prepare(folder, out, shard_size=4)
    manifest = json.loads((out / "prepare.json").read_text())
    line = one_error_line(run_cli("prepare", "--data", folder, "--out", out, "--shard-size", "5"))
    assert line.startswith(f"error: --out {out}: holds a conversion of another source or shard size")
    assert json.loads((out / "prepare.json").read_text()) == manifest  # untouched
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    for kwargs, message in [
        ({"out": tmp_path / "busy"}, "out=.*busy: is not empty and holds no prepare.json"),
        ({"fmt": "zip"}, "format: must be one of tar, got 'zip'"),
        ({"shard_size": 0}, "shard_size: must be a positive number"),
        ({"data": tmp_path / "missing"}, "data=.*missing: no such directory"),
    ]:
        with pytest.raises(UserError, match=message):
            prepare(**({"data": folder, "out": tmp_path / "z"} | kwargs))
