"""`jitrs train`: the real CLI in subprocesses (errors, exact resume, DDP, signals, NaN), plus its pure helpers."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import jitrs
from jitrs import rundir
from jitrs.ema import EMA
from jitrs.errors import UserError
from jitrs.grid import image_grid
from jitrs.model import JiT
from jitrs.rundir import DirLock
from jitrs.train import default_noise_scale, learning_rate, param_groups, resolve
from jitrs.train_config import DEMO, TrainConfig, build_config, read_config_file, refuse_changed_architecture
from testkit.cli import kill_during_write

TINY = [
    "--model", "JiT-S/4",
    "--model-arg", "depth=2", "--model-arg", "hidden_size=32", "--model-arg", "num_heads=2",
    "--model-arg", "in_context_len=2", "--model-arg", "in_context_start=1", "--model-arg", "bottleneck_dim=8",
    "--res", "16", "--sample-steps", "2",
]  # fmt: skip


@pytest.fixture(scope="session")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Subprocess environment: this checkout's jitrs, a private cache for the digits files, quiet threads."""
    return {
        **os.environ,
        "PYTHONPATH": str(Path(jitrs.__file__).parents[1]),
        "JITRS_CACHE": str(tmp_path_factory.mktemp("cache")),
        "OMP_NUM_THREADS": "1",
    }


def run(args: list[str], env: dict[str, str], check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "jitrs", "train", *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def losses(run_dir: Path, key: str = "loss") -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r[key] for r in rows}


def steps_of(run_dir: Path) -> list[int]:
    return sorted(int(re.findall(r"\d+", p.name)[0]) for p in run_dir.glob("checkpoint-*.pt"))


# ---------------------------------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad")
    (root / "empty").mkdir()
    (root / "textonly" / "cls").mkdir(parents=True)
    (root / "textonly" / "cls" / "a.txt").write_text("x")
    for i in range(3):
        (root / "small" / "c").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(root / "small" / "c" / f"{i}.png")
    (root / "notckpt.pt").write_text("hello")
    (root / "emptyrun").mkdir()
    (root / "bad.toml").write_text("stepz = 3\n")
    (root / "typed.toml").write_text('batch_size = "eight"\n')
    (root / "fake.safetensors").write_text("not safetensors")
    return root


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "{root}/missing"], "--data .*missing: no such directory"),
        (["--data", "{root}/empty"], "no class sub-directories"),
        (["--data", "{root}/textonly"], "no image files"),
        (["--data", "digits", "--res", "18", "--model", "JiT-S/4"], "--res 18 is not divisible by the patch size 4"),
        (["--data", "digits", "--model", "JiT-X/3"], "--model JiT-X/3: unknown model"),
        (["--data", "{root}/small", "--batch-size", "4", "--res", "16"], "larger than the dataset"),
        (["--resume", "{root}/notckpt.pt"], "notckpt.pt: not a checkpoint"),
        (["--resume", "{root}/emptyrun"], "--resume .*emptyrun: the directory holds no checkpoint"),
        (["--data", "digits", "--config", "{root}/bad.toml"], "unknown option\\(s\\) stepz"),
        (["--data", "digits", "--config", "{root}/typed.toml"], "--batch-size must be int, got 'eight'"),
        (["--data", "digits", "--seed", "-1"], "--seed must be in \\[0, 2\\^63\\), got -1"),
        (["--data", "digits", "--sample-every", "-1"], "--sample-every must be >= 0"),
        (["--data", "digits", "--device", "tpu"], "--device tpu: not a torch device"),
        (["--data", "digits", "--res", "16", "--init", "{root}/fake.safetensors"], "fake.safetensors: not a checkp"),
        (["--res", "16"], "--data is required"),
        (["--data", "digits", "--schedule", "linear"], "--schedule 'linear'"),
        (["--data", "digits", "--ema", "0.9999,1"], r"--ema 0\.9999,1: each EMA decay must be a number in \(0, 1\)"),
        (["--data", "digits", "--res", "16", "--label-drop", "1.5"], "label_drop must be in \\[0, 1\\)"),
    ],
)
def test_bad_input_is_one_clear_line(args: list[str], message: str, bad_inputs: Path, env, tmp_path: Path) -> None:
    proc = run([a.format(root=bad_inputs) for a in args] + ["--out", str(tmp_path / "run")], env, check=False)
    assert proc.returncode == 2, proc.stderr
    assert not rundir.holds_run(tmp_path / "run")
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and re.search(message, lines[-1]), proc.stderr


# ---------------------------------------------------------------------------------------------- real runs


def test_resume_repeats_the_uninterrupted_run_exactly(tmp_path: Path, env) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text("data: digits\nbatch-size: 8\nlog_every: 1\nckpt-every: 100\nsample-every: 0\nseed: 5\n")
    common = [*TINY, "--config", str(config), "--blr", "1e-3", "--warmup-epochs", "0.02"]
    run([*common, "--out", str(tmp_path / "full"), "--steps", "6"], env)
    run([*common, "--out", str(tmp_path / "part"), "--steps", "3"], env)
    assert steps_of(tmp_path / "part") == [3]
    run(["--resume", str(tmp_path / "part"), "--steps", "6"], env)
    full, resumed = losses(tmp_path / "full"), losses(tmp_path / "part")
    assert list(full) == list(resumed) == [1, 2, 3, 4, 5, 6]
    assert full == resumed  # bit-exact, step for step
    assert len(set(full.values())) == 6
    a = torch.load(tmp_path / "full" / "checkpoint-0000006.pt", weights_only=True)
    b = torch.load(tmp_path / "part" / "checkpoint-0000006.pt", weights_only=True)
    for kind in ("model", "ema1", "ema2"):
        assert all(torch.equal(a[kind][k], b[kind][k]) for k in a[kind])


def test_run_directory_contents(tmp_path: Path, env) -> None:
    out = tmp_path / "run"
    proc = run(
        [*TINY, "--data", "digits", "--batch-size", "8", "--steps", "4", "--ckpt-every", "1", "--keep-last", "2",
         "--sample-every", "2", "--log-every", "2", "--out", str(out)],
        env,
    )  # fmt: skip
    assert "warning:" in proc.stderr and "CPU" in proc.stderr
    assert steps_of(out) == [3, 4]  # keep-last 2
    ckpt = torch.load(out / "checkpoint-0000004.pt", weights_only=True)
    assert ckpt["format"] == "jitrs" and ckpt["step"] == 4 and ckpt["class_names"] == [str(c) for c in range(10)]
    assert ckpt["config"]["num_classes"] == 10 and ckpt["config"]["depth"] == 2 and ckpt["config"]["input_size"] == 16
    assert ckpt["train_config"]["steps"] == 4 and ckpt["flow"]["noise_scale"] == 1.0
    assert set(ckpt["model"]) == set(ckpt["ema1"]) == set(ckpt["ema2"])
    assert not any(k.startswith(("module.", "_orig_mod.", "net.")) for k in ckpt["model"])
    assert ckpt["epoch"] == 0 and ckpt["position"] == 4 and "state" in ckpt["optimizer"]
    loaded = jitrs.load_checkpoint(out / "checkpoint-0000004.pt")
    model = loaded.build("ema1")
    assert model.num_classes == 10
    # The EMA moved away from the live weights, the live weights away from their initialisation.
    assert not torch.equal(ckpt["model"]["final_layer.linear.weight"], ckpt["ema1"]["final_layer.linear.weight"])
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]  # log every 2 steps, plus a read-back before each checkpoint
    assert all(np.isfinite(r["loss"]) and r["bad_images"] == 0 for r in rows)
    # The wait for data is measured per window (the first window includes the loader's start-up).
    assert all(r["data_wait_s"] > 0 and 0 < r["data_wait_frac"] <= 1 for r in rows), rows
    with Image.open(out / "samples" / "step-0000004.png") as grid:
        # one labelled row per class, 10 seeds each, 16 px tiles shown at 48 px (layout: tests/test_grid.py)
        assert grid.format == "PNG" and grid.width > 10 * 48 and grid.height > 10 * 48
    scores = [json.loads(line) for line in (out / "quality.jsonl").read_text().splitlines()]
    assert [r["step"] for r in scores] == [2, 4] and all(r["images"] == 100 for r in scores)  # the grids, scored
    assert (out / "quality.png").is_file()
    with Image.open(out / "loss.png") as curve:
        assert curve.format == "PNG"
    assert list((out / "tb").glob("events.out.tfevents.*"))
    assert (out / "index.json").is_file()
    assert f"checkpoint:  {out / 'checkpoint-0000004.pt'}" in proc.stderr


@pytest.mark.parametrize("sharding", [[], ["--fsdp"]], ids=["ddp", "fsdp"])
def test_two_processes_match_one_process_with_accumulation(tmp_path: Path, env, sharding: list[str]) -> None:
    common = [*TINY, "--data", "digits", "--batch-size", "4", "--steps", "3", "--log-every", "1", "--blr", "1e-3",
              "--warmup-epochs", "0", "--sample-every", "2", "--grad-clip", "0.05"]  # fmt: skip
    run([*common, "--accum", "2", "--out", str(tmp_path / "one")], env)
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "jitrs",
         "train", *common, *sharding, "--out", str(tmp_path / "two")],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert ddp.returncode == 0, ddp.stderr
    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert (tmp_path / "two" / "samples" / "step-0000002.png").is_file()  # sampled mid-run, then trained on
    assert list(one) == list(two) == [1, 2, 3]
    np.testing.assert_allclose(list(two.values()), list(one.values()), rtol=1e-5)
    # The logged gradient norm is the whole model's (under FSDP a DTensor holds only this rank's partial sum).
    norms_one, norms_two = losses(tmp_path / "one", "grad_norm"), losses(tmp_path / "two", "grad_norm")
    assert min(norms_one.values()) > 0.05  # so the clipping was active
    np.testing.assert_allclose(list(norms_two.values()), list(norms_one.values()), rtol=1e-4)
    a = torch.load(tmp_path / "one" / "checkpoint-0000003.pt", weights_only=True)
    b = torch.load(tmp_path / "two" / "checkpoint-0000003.pt", weights_only=True)
    assert a["train_config"]["accum"] == 2 and b["optimizer"]["param_groups"][0]["lr"] == 1e-3 * 8 / 256
    for k in a["model"]:
        torch.testing.assert_close(b["model"][k], a["model"][k], rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_resume_may_switch_between_fsdp_ddp_and_accumulation(tmp_path: Path, env) -> None:
    common = [*TINY, "--data", "digits", "--batch-size", "4", "--log-every", "1", "--blr", "1e-3",
              "--warmup-epochs", "0", "--sample-every", "0"]  # fmt: skip
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "jitrs"]

    def launch(args: list[str]) -> None:
        proc = subprocess.run([*torchrun, "train", *args], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr

    launch([*common, "--fsdp", "--steps", "5", "--out", str(tmp_path / "full")])
    launch([*common, "--fsdp", "--steps", "2", "--out", str(tmp_path / "part")])
    launch(["--resume", str(tmp_path / "part"), "--steps", "3", "--no-fsdp"])  # DDP
    run(["--resume", str(tmp_path / "part"), "--steps", "5", "--no-fsdp", "--accum", "2"], env)  # 1 process
    assert losses(tmp_path / "full") == losses(tmp_path / "part")


def test_sigterm_saves_a_checkpoint_that_resumes(tmp_path: Path, env) -> None:
    out = tmp_path / "run"
    args = [*TINY, "--data", "digits", "--batch-size", "8", "--steps", "100000", "--log-every", "1",
            "--sample-every", "0", "--out", str(out)]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "jitrs", "train", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2):
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr  # saved, but not finished: a scheduler can tell
    stopped = steps_of(out)
    assert len(stopped) == 1 and "stopped by signal" in stderr
    assert max(losses(out)) == stopped[0]
    run(["--resume", str(out / f"checkpoint-{stopped[0]:07d}.pt"), "--steps", str(stopped[0] + 2)], env)
    assert list(losses(out)) == list(range(1, stopped[0] + 3))


def small_run(out: Path, *more: str) -> list[str]:
    return [*TINY, "--data", "digits", "--batch-size", "8", "--log-every", "1", "--sample-every", "0", "--out",
            str(out), *more]  # fmt: skip


def files_of(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}


def last_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    return proc.stderr.strip().splitlines()[-1]


def test_an_existing_run_is_never_trained_over_by_accident(tmp_path: Path, env) -> None:
    out = tmp_path / "run"
    run(small_run(out, "--steps", "3"), env)
    before = files_of(out)
    line = last_error(run(small_run(out, "--steps", "2"), env, check=False))
    assert f"--out {out}: already holds a run (newest checkpoint: step 3)" in line and "--overwrite" in line
    # A finished run, resumed with no more steps to take: refused, its final checkpoint is not rewritten.
    assert "--resume: the checkpoint" in last_error(run(["--resume", str(out)], env, check=False))
    assert "is at step 3" in last_error(run(["--resume", str(out), "--steps", "2"], env, check=False))
    line = last_error(run(["--resume", str(out), "--init", str(out), "--steps", "5"], env, check=False))
    assert "--init and --resume exclude each other" in line
    # Options that contradict the checkpoint: another architecture, another number of images per step.
    line = last_error(run(["--resume", str(out), "--steps", "5", "--model-arg", "depth=3"], env, check=False))
    assert line.startswith(f"error: --model-arg depth=3: {out}/checkpoint-0000003.pt was trained with depth=2"), line
    line = last_error(run(["--resume", str(out), "--steps", "5", "--batch-size", "4"], env, check=False))
    assert "was trained with 8 images per step and this run would take 4" in line, line
    assert files_of(out) == before  # nothing touched by any refusal
    # --init takes a run directory's newest checkpoint, into a new run.
    proc = run(small_run(tmp_path / "ft", "--steps", "1", "--init", str(out)), env)
    assert steps_of(tmp_path / "ft") == [1] and "Traceback" not in proc.stderr
    # --overwrite starts over, deleting the old run's checkpoints and logs.
    run(small_run(out, "--steps", "2", "--overwrite"), env)
    assert steps_of(out) == [2] and list(losses(out)) == [1, 2]


def test_a_second_job_on_a_directory_is_refused_and_a_dead_jobs_lock_is_taken_over(tmp_path: Path, env) -> None:
    out = tmp_path / "run"
    out.mkdir()
    with DirLock(out):  # held by this process, as by a trainer still running
        line = last_error(run(small_run(out, "--steps", "1"), env, check=False))
        assert f"another job is using this directory (pid {os.getpid()} on " in line
        assert not rundir.holds_run(out)
    # What a trainer killed with SIGKILL leaves: a lock file naming it, but no lock (the kernel dropped it).
    (out / ".lock").write_text("pid 999999999 on elsewhere")
    proc = run(small_run(out, "--steps", "1"), env)
    assert "took over the lock of pid 999999999 on elsewhere, which is no longer running" in proc.stderr
    assert steps_of(out) == [1] and (out / ".lock").read_text() == ""  # released on exit


def test_resume_survives_a_kill_mid_checkpoint_and_a_torn_log_line(tmp_path: Path, env) -> None:
    out = tmp_path / "run"
    args = small_run(out, "--steps", "6", "--ckpt-every", "2")
    # SIGKILLed from inside the second checkpoint write, half of the file written: the worst moment.
    killed = subprocess.run(kill_during_write("torch.save", 2, 1, "train", *args), env=env, capture_output=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert steps_of(out) == [2]  # the step-4 checkpoint never appeared under its name...
    (temp,) = out.glob(".checkpoint-0000004.pt.*.tmp")  # ...only as the killed writer's hidden temp file
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "lo')  # and a torn line, as a full disk or a power cut leaves an append
    proc = run(["--resume", str(out), "--steps", "6"], env)
    assert f"removed {temp.name}, the temp file of a write that was interrupted" in proc.stderr
    assert f"dropped 1 torn line(s) of {out / 'metrics.jsonl'}" in proc.stderr
    assert list(losses(out)) == [1, 2, 3, 4, 5, 6] and steps_of(out)[-1] == 6
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))


@pytest.mark.parametrize("name", ["set[v2]", "a[/]b", "[bold]x"])
def test_user_paths_are_printed_as_text_not_markup(tmp_path: Path, env, name: str) -> None:
    line = last_error(run(["--data", str(tmp_path / name), "--out", str(tmp_path / "run")], env, check=False))
    assert f"--data {tmp_path / name}: no such directory" in line
    assert not (tmp_path / "run").exists()  # a refused run leaves no directory behind


def test_a_full_disk_is_one_line_and_exit_code_1(tmp_path: Path, env) -> None:
    small = tmp_path / "small"
    small.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)]).returncode:
        pytest.skip("needs root to mount a 64 KB tmpfs")
    try:
        proc = run(small_run(small / "run", "--steps", "2"), env, check=False)
    finally:
        subprocess.run(["umount", str(small)], check=True)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    where = small / "run" / "checkpoint-0000002.pt"
    assert line == f"error: cannot write {where}: No space left on device; no checkpoint was saved"


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path, env) -> None:
    out = tmp_path / "run"
    proc = run(
        [*TINY, "--data", "digits", "--batch-size", "8", "--steps", "50", "--blr", "1e30", "--warmup-epochs", "0",
         "--log-every", "1", "--ckpt-every", "1", "--keep-last", "0", "--sample-every", "0", "--out", str(out)],
        env,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    pattern = (
        r"error: the loss became (nan|inf) by step (\d+); stopping without saving; the last good checkpoint is (\S+)"
    )
    m = re.search(pattern, proc.stderr)
    assert m, proc.stderr
    bad_step = int(m.group(2))
    assert steps_of(out) == list(range(1, bad_step))
    assert m.group(3).endswith(f"checkpoint-{bad_step - 1:07d}.pt")


def test_init_from_an_official_checkpoint(tmp_path: Path, env) -> None:
    """An official checkpoint-*.pth (pickled args, `net.`-prefixed weights) is a starting point for fine-tuning."""
    torch.manual_seed(1)
    nets = {kind: JiT.from_name("JiT-S/4", input_size=16, num_classes=10).state_dict() for kind in range(3)}
    official = {
        key: {f"net.{k}": v for k, v in nets[i].items()} for i, key in enumerate(["model", "model_ema1", "model_ema2"])
    }
    args = argparse.Namespace(model="JiT-S/4", img_size=16, class_num=10, noise_scale=2.0, P_mean=-0.8)
    torch.save({**official, "args": args, "epoch": 599}, tmp_path / "checkpoint-last.pth")
    out = tmp_path / "ft"
    run(["--data", "digits", "--res", "16", "--batch-size", "8", "--steps", "1", "--sample-every", "0",
         "--init", str(tmp_path / "checkpoint-last.pth"), "--out", str(out)], env)  # fmt: skip
    ckpt = torch.load(out / "checkpoint-0000001.pt", weights_only=True)
    assert ckpt["name"] == "JiT-S/4" and ckpt["flow"]["noise_scale"] == 2.0 and ckpt["config"]["depth"] == 6
    for k, v in nets[0].items():
        assert torch.equal(ckpt["model"][k], v)  # warmup starts at lr 0: still the official weights
    ema_decay = ckpt["train_config"]["ema"][0]
    k = "blocks.0.attn.qkv.weight"
    assert not torch.equal(nets[0][k], nets[1][k])
    torch.testing.assert_close(ckpt["ema1"][k], ema_decay * nets[1][k] + (1 - ema_decay) * nets[0][k])


def test_demo_preset_runs_and_scores_itself(tmp_path: Path, env) -> None:
    out = tmp_path / "demo"
    args = ["--demo", "--steps", "2", "--sample-every", "2", "--sample-steps", "2", "--quality-samples", "50"]
    proc = run([*args, "--out", str(out)], env)
    ckpt = torch.load(out / "checkpoint-0000002.pt", weights_only=True)
    assert ckpt["train_config"]["data"] == "builtin:mnist" and ckpt["config"]["input_size"] == 28
    assert ckpt["name"] is None  # the demo's model args changed JiT-S/4: no named model's settings apply
    assert "samples:" in proc.stderr and (out / "samples" / "step-0000002.png").is_file()
    score = json.loads((out / "quality.json").read_text())
    assert score["images"] == 50 and 0.97 <= score["classifier_accuracy"] <= 1
    assert f"quality of 50 samples ({out / 'quality.json'})" in proc.stderr
    # The score is the one `jitrs eval --ref builtin:mnist` gives for the same samples ...
    evaluated = subprocess.run(
        [sys.executable, "-m", "jitrs", "eval", "--samples", score["samples"], "--ref", "builtin:mnist",
         "--json", str(tmp_path / "eval.json")],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads((tmp_path / "eval.json").read_text()) == {k: v for k, v in score.items() if k != "samples"}
    # ... and they were drawn as `jitrs sample --ckpt RUN` draws by default: the run's guidance and steps.
    sampled = subprocess.run(
        [sys.executable, "-m", "jitrs", "sample", "--ckpt", str(out), "--n", "3", "--out", str(tmp_path / "s")],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert sampled.returncode == 0, sampled.stderr
    settings = json.loads((tmp_path / "s" / "manifest.json").read_text())["settings"]
    assert (settings["cfg"], settings["steps"]) == (DEMO["sample_cfg"], 2)


def test_demo_recipe_learns_digits(tmp_path: Path, env) -> None:
    """A third of the demo (with an EMA short enough for 600 steps) already makes digits that a classifier
    recognises far above chance and that are far closer to real digits than class-mean blobs: a broken recipe
    (flips back on, a wrong noise level, a broken sampler or loader) fails here."""
    out = tmp_path / "demo"
    args = ["--demo", "--steps", "600", "--ema", "0.98,0.99", "--sample-every", "300", "--quality-samples", "200"]
    run([*args, "--out", str(out)], {**env, "OMP_NUM_THREADS": "1"}, timeout=1500)
    score = json.loads((out / "quality.json").read_text())
    assert score["accuracy"] >= 0.5, score  # chance is 0.1
    assert score["fd"] < 0.5 * score["fd_blobs"], score
    grids = [json.loads(line) for line in (out / "quality.jsonl").read_text().splitlines()]
    assert [r["step"] for r in grids] == [300, 600]


@pytest.mark.gpu
def test_cuda_run_with_compile_and_bf16(tmp_path: Path, env) -> None:
    out = tmp_path / "run"
    args = [*TINY, "--data", "digits", "--batch-size", "16", "--log-every", "1", "--sample-every", "2"]
    run([*args, "--steps", "2", "--out", str(out)], env)  # compile and bf16 are on by default on CUDA
    run(["--resume", str(out), "--steps", "4"], env)
    curve = losses(out)
    assert list(curve) == [1, 2, 3, 4] and all(np.isfinite(v) for v in curve.values())
    ckpt = jitrs.load_checkpoint(out / "checkpoint-0000004.pt")
    assert ckpt.build("ema1").num_classes == 10 and ckpt.raw["train_config"]["compile"] is None
    assert (out / "samples" / "step-0000004.png").is_file()


@pytest.mark.slow
def test_full_demo(tmp_path: Path, env) -> None:
    """The README's first command meets the quality bar of the demo (see README, "The demo")."""
    proc = run(["--demo", "--out", str(tmp_path / "demo")], env, timeout=3600)
    score = json.loads((tmp_path / "demo" / "quality.json").read_text())
    assert score["images"] == 1000 and score["accuracy"] >= 0.9 and score["fd"] <= 4 * score["fd_real"], score
    assert "quality of 1000 samples" in proc.stderr


# ---------------------------------------------------------------------------------------------- helpers


def test_help_lists_every_option_with_its_default() -> None:
    from typer.testing import CliRunner

    from jitrs.cli import app

    result = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for name in TrainConfig.__dataclass_fields__:
        flag = "--model-arg" if name == "model_args" else f"--{name.replace('_', '-')}"
        assert flag in result.output, flag
    for shown in (
        "[default: 128]",
        "[default: 5e-05]",
        "[default: 0.9999,0.9996]",
        "[default: 600.0]",
        "JiT-B/32 at 512",
    ):
        assert shown in result.output, shown


def test_config_file_layers(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('data = "/x"\nbatch-size = 32\nblr = 1e-4\n[model_args]\ndepth = 3\n')
    opts = read_config_file(toml)
    assert opts == {"data": "/x", "batch_size": 32, "blr": 1e-4, "model_args": {"depth": 3}}
    cfg = build_config({"blr": 2e-4}, opts, demo=False, defaults=TrainConfig().to_dict())
    assert (cfg.data, cfg.batch_size, cfg.blr, cfg.model_args, cfg.epochs) == ("/x", 32, 2e-4, {"depth": 3}, 600.0)
    demo = build_config({}, {"steps": 7}, demo=True, defaults=TrainConfig().to_dict())
    assert (demo.data, demo.steps, demo.res, demo.flip) == ("builtin:mnist", 7, 28, False)
    merged = build_config({"model_args": {"depth": 2}}, {}, demo=True, defaults=TrainConfig().to_dict())
    assert merged.model_args == {**DEMO["model_args"], "depth": 2}  # --model-arg adds to the demo's, key by key
    both = tmp_path / "m.toml"  # the flag's own name, beside the table
    both.write_text('model-arg = ["depth=4", "proj_drop=0.1"]\n[model_args]\ndepth = 3\nnum_heads = 2\n')
    assert read_config_file(both) == {"model_args": {"depth": 4, "proj_drop": 0.1, "num_heads": 2}}
    (tmp_path / "n.toml").write_text("model-arg = 4\n")
    with pytest.raises(UserError, match="model-arg must be a list of KEY=VALUE strings"):
        read_config_file(tmp_path / "n.toml")
    with pytest.raises(UserError, match="demo = 'no' in the config file: use true or false"):
        build_config({}, {"demo": "no"}, demo=False, defaults=TrainConfig().to_dict())
    with pytest.raises(UserError, match="cannot parse"):
        (tmp_path / "bad.yaml").write_text("a: [1, 2\n")
        read_config_file(tmp_path / "bad.yaml")


def test_resume_accepts_the_runs_own_architecture_and_refuses_another() -> None:
    saved = {"model": "JiT-S/4", "res": 16, "model_args": {"depth": 2, "hidden_size": 32}}
    ckpt = Path("run/checkpoint-0000003.pt")
    refuse_changed_architecture({"model": "JiT-S/4", "res": 16, "model_args": {"depth": 2}, "blr": 1.0}, saved, ckpt)
    for explicit, words in [
        ({"model_args": {"depth": 3}}, "--model-arg depth=3: run/checkpoint-0000003.pt was trained with depth=2"),
        ({"model_args": {"num_heads": 4}}, "--model-arg num_heads=4: .* was trained with num_heads=its model default"),
        ({"model": "JiT-B/16"}, "--model JiT-B/16: .* was trained with --model JiT-S/4"),
        ({"res": 32}, "--res 32: .* was trained with --res 16"),
    ]:
        with pytest.raises(UserError, match=words):
            refuse_changed_architecture(explicit, saved, ckpt)


def test_paper_defaults_by_resolution() -> None:
    s256 = resolve(TrainConfig(data="x"), 1_281_167, 1000, world=8, ckpt_config=None)
    assert s256.model_name == "JiT-B/16" and s256.noise_scale == 1.0 and s256.accum == 1
    assert s256.plan.global_batch == 1024 and s256.peak_lr == pytest.approx(2e-4)
    assert s256.plan.steps_per_epoch == 1251 and s256.total_steps == 600 * 1251 and s256.warmup_steps == 5 * 1251
    s512 = resolve(TrainConfig(data="x", res=512, global_batch=1024), 1_281_167, 1000, world=2, ckpt_config=None)
    assert s512.model_name == "JiT-B/32" and s512.noise_scale == 2.0 and s512.accum == 4
    assert s512.model_config["input_size"] == 512 and s512.model_config["patch_size"] == 32
    assert resolve(TrainConfig(data="x", noise_scale=3.0), 5000, 10, 1, None).noise_scale == 3.0
    assert default_noise_scale(1024) == 4.0
    with pytest.raises(UserError, match="--global-batch 1000 is not a multiple"):
        resolve(TrainConfig(data="x", global_batch=1000), 5000, 10, 1, None)


def test_learning_rate_schedule() -> None:
    assert learning_rate(0, 1.0, 10, 100, "constant", 0.0) == 0.0
    assert learning_rate(5, 1.0, 10, 100, "constant", 0.0) == 0.5
    assert learning_rate(10, 1.0, 10, 100, "constant", 0.0) == learning_rate(99, 1.0, 10, 100, "constant", 0.0) == 1.0
    assert learning_rate(10, 1.0, 10, 110, "cosine", 0.1) == pytest.approx(1.0)
    assert learning_rate(60, 1.0, 10, 110, "cosine", 0.1) == pytest.approx(0.55)
    assert learning_rate(110, 1.0, 10, 110, "cosine", 0.1) == pytest.approx(0.1)


def test_weight_decay_spares_norms_biases_and_embeddings() -> None:
    model = JiT.from_name("JiT-S/4", depth=2, hidden_size=32, num_heads=2, in_context_start=1, num_classes=3)
    decay, no_decay = param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    spared = {names[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert "blocks.0.attn.qkv.weight" in decayed and "blocks.0.mlp.w12.weight" in decayed
    assert {"y_embedder.embedding_table.weight", "in_context_posemb", "blocks.0.attn.qkv.bias"} <= spared
    assert not any(n.endswith(("bias", "norm1.weight")) for n in decayed)
    assert "pos_embed" not in decayed | spared  # frozen: not optimised at all
    assert len(decayed | spared) == sum(p.requires_grad for p in model.parameters())


def test_ema_update_is_the_exponential_average() -> None:
    model = torch.nn.Linear(3, 2)
    ema = EMA(model, 0.9)
    start = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(list(model.parameters()))
    for e, s, p in zip(ema.module.parameters(), start, model.parameters(), strict=True):
        torch.testing.assert_close(e, 0.9 * s + 0.1 * p)
        assert not e.requires_grad


def test_image_grid_places_tiles_row_major() -> None:
    tiles = np.stack([np.full((2, 2, 3), 10 * i, np.uint8) for i in range(6)])
    grid = image_grid(tiles, cols=3, min_tile=4, pad=1)
    assert grid.shape == (2 * 4 + 1, 3 * 4 + 2, 3)
    tile_at = {(r, c): grid[r * 5 : r * 5 + 4, c * 5 : c * 5 + 4] for r in range(2) for c in range(3)}
    for (r, c), tile in tile_at.items():
        assert (tile == 10 * (3 * r + c)).all()
    assert (grid[4, :] == 128).all() and (grid[:, 4] == 128).all() and (grid[:, 9] == 128).all()
