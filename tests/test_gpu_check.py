"""benches/gpu_check.py, the GPU acceptance command, in its tiny CPU mode: real processes, real report files, so the
command cannot rot between the rare sessions that have a GPU."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from testkit.cli import PYTHONPATH

SCRIPT = Path(__file__).resolve().parents[1] / "benches" / "gpu_check.py"
STAGES = ["env", "pytest", "bench", "train", "sample", "ddp"]
FINAL = {"passed", "failed", "skipped", "timed_out"}


def command(out: Path, *more: str) -> list[str]:
    return [sys.executable, str(SCRIPT), "--out", str(out), "--tiny", *more]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": PYTHONPATH}


def report(out: Path) -> dict[str, Any]:
    return json.loads((out / "report.json").read_text())


def numbers(figures: dict[str, Any], *keys: str) -> list[float]:
    values = [figures[k] for k in keys]
    for key, value in zip(keys, values, strict=True):
        assert isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value), (key, value)
    return values


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("gpu-check") / "report"
    proc = subprocess.run(command(out), capture_output=True, text=True, env=env(), timeout=900)
    return proc, out


def test_tiny_mode_passes_every_stage_and_reports_it(tiny) -> None:
    proc, out = tiny
    doc = report(out)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}\n" + json.dumps(doc["stages"], indent=1)[-6000:]
    assert doc["mode"] == "tiny" and doc["passed"] is True and doc["finished"]
    assert [s["name"] for s in doc["stages"]] == STAGES
    for s in doc["stages"]:
        assert s["status"] in FINAL and isinstance(s["seconds"], float), s
        assert s["error"] is None, s
    by = {s["name"]: s for s in doc["stages"]}
    assert by["env"]["status"] == "passed" and by["env"]["figures"]["gpu_count"] == 0
    assert by["env"]["figures"]["build_profile"] in ("release", "debug")
    # No CUDA here: tests/test_gpu.py runs and every test skips itself.
    pytest_stage = by["pytest"]
    assert pytest_stage["status"] == "skipped", pytest_stage
    outcomes = pytest_stage["figures"]["outcomes"]
    assert pytest_stage["figures"]["skipped"] == len(outcomes) >= 4 and pytest_stage["figures"]["passed"] == 0
    assert "SKIPPED tests/test_gpu.py::test_bf16_heun_cfg_sampling_stays_close_to_float32" in outcomes
    assert "SKIPPED tests/test_gpu.py::test_two_gpus_sample_exactly_the_images_of_one" in outcomes
    for name in ("bench", "train", "sample", "ddp"):
        assert by[name]["status"] == "passed", by[name]
    bench = by["bench"]["figures"]
    rates = numbers(bench, "train_img_s", "train_img_s_baseline", "sample_img_s", "sample_img_s_baseline")
    assert min(rates) > 0
    speedup, peak, mfu = numbers(bench, "train_speedup", "peak_bf16_tflops_measured", "train_mfu")
    assert speedup == pytest.approx(rates[0] / rates[1]) and peak > 0 and 0 < mfu < 1
    train = by["train"]["figures"]
    assert train["steps"] == 6 and train["compile_backend"] in ("aot_eager", "inductor")
    img_s, loader_img_s, _, _ = numbers(train, "img_s", "loader_img_s", "loss_first", "loss_last")
    assert img_s > 0 and loader_img_s > 0
    assert train["images"] == 48
    sample = by["sample"]["figures"]
    numbers(sample, "img_s", "process_s", "resample_process_s")
    # Every 4th image made again with another batch size: byte-identical files.
    assert sample["resampled"] == 3 and sample["identical_files"] == 3 and sample["differing_files"] == 0
    assert sample["batch"] != sample["resample_batch"]
    ddp = by["ddp"]["figures"]
    assert ddp["weights_close"] is True and numbers(ddp, "loss_max_rel_diff")[0] <= 1e-4
    md = (out / "report.md").read_text()
    assert doc["device"] and doc["device"].startswith("CPU") and doc["device"] in md
    assert "**PASSED**" in md
    for name in STAGES:
        assert f"## {name}:" in md
    assert (out / "logs" / "train.log").is_file()


GPU_TESTS = """
import pytest


@pytest.mark.gpu
def test_measures(record_property):
    record_property("bf16_mean_abs_diff", 0.25)
    record_property("bf16_max_abs_diff", 7)


@pytest.mark.gpu
@pytest.mark.parametrize("k", [1, 2])
def test_fails(k):
    assert k == 1


@pytest.mark.gpu
def test_skips():
    pytest.skip("needs 2 GPUs")


def test_not_gpu_marked_so_not_run():
    pass
"""


def test_the_pytest_stage_counts_outcomes_and_reads_measurements(tmp_path: Path) -> None:
    """The stage's own pytest command on a real test file, under the repository's settings (filterwarnings =
    error: record_property must not warn)."""
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(SCRIPT.parent))
    tests = tmp_path / "test_fake_gpu.py"
    tests.write_text(GPU_TESTS)
    junit, log = tmp_path / "junit.xml", tmp_path / "pytest.log"
    with open(log, "w") as f:
        rc = subprocess.run(
            gpu_check.pytest_command([str(tests)], junit), stdout=f, stderr=subprocess.STDOUT
        ).returncode
    assert rc == 1, log.read_text()
    counts = gpu_check.pytest_counts(log)
    assert (counts["passed"], counts["failed"], counts["skipped"], counts["errors"]) == (2, 1, 1, 0), counts
    assert gpu_check.junit_properties(junit) == {"bf16_mean_abs_diff": 0.25, "bf16_max_abs_diff": 7}
    assert "test_fails[2]" in gpu_check.failure_summary(log)


def test_a_failing_stage_is_recorded_and_the_check_goes_on(tmp_path: Path) -> None:
    """The train stage fails for real (jitrs refuses the flag), the sample stage that needs its checkpoint is
    skipped, and the exit code says so."""
    out = tmp_path / "report"
    proc = subprocess.run(
        command(out, "--stages", "train,sample", "--train-arg=--loader-workers=0"),
        capture_output=True,
        text=True,
        env=env(),
        timeout=600,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    doc = report(out)
    assert doc["passed"] is False
    by = {s["name"]: s for s in doc["stages"]}
    assert list(by) == ["env", "train", "sample"]
    assert by["env"]["status"] == "passed"
    assert by["train"]["status"] == "failed"
    assert "--loader-workers must be at least 1" in by["train"]["error"]
    assert by["sample"]["status"] == "skipped" and "checkpoint" in by["sample"]["notes"][-1]
    assert "--loader-workers must be at least 1" in (out / "report.md").read_text()


def test_a_killed_check_leaves_a_report(tmp_path: Path) -> None:
    out = tmp_path / "report"
    # --work: SIGKILL leaves no chance to remove the scratch folder, so it lives in tmp_path.
    cmd = command(out, "--work", str(tmp_path / "work"))
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env(), start_new_session=True
    )
    try:
        give_up = time.monotonic() + 300
        while time.monotonic() < give_up and proc.poll() is None:
            if (out / "report.json").is_file() and report(out)["stages"][0]["status"] in FINAL:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the check ended before it could be killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    doc = report(out)
    assert doc["finished"] is None and doc["passed"] is None
    statuses = [s["status"] for s in doc["stages"]]
    assert statuses[0] == "passed" and set(statuses[1:]) <= {"pending", "running"}, statuses
    assert "incomplete" in (out / "report.md").read_text()
