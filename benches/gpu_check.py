"""The GPU acceptance check: one command that proves the CUDA path of jitrs in <= 8 minutes on a CUDA machine
without network, and leaves a JSON and a markdown report however it ends.

    python3 benches/gpu_check.py --out DIR            (or: make gpu-check PY=python3 OUT=DIR)
    python3 benches/gpu_check.py --out DIR --tiny     (the same stages, tiny; chosen when there is no CUDA device)

Stages, each with a time budget (a stage that would overrun is killed and recorded as timed out; the next runs):
  env     device, driver / CUDA / torch / Python versions, GPUs, jitrs build profile, a matmul on each GPU
  pytest  `pytest -m gpu` (tests/test_gpu.py and the gpu tests of test_train/test_loader/test_sample)
  bench   benches/bench_model.py: training step and 50-step Heun + CFG sampling, jitrs vs the official hot path,
          MFU against the measured bf16 matmul peak of this device, the targets met or missed
  train   `jitrs train` JiT-B/16 at 256 px, torch.compile + bf16, on generated ImageNet-like JPEGs (Rust loader)
  sample  `jitrs sample` of 1,000 images with CFG from that checkpoint, then every 4th image again with another
          batch size (a resume of the same directory): compared byte for byte
  ddp     2 GPUs (torchrun, DDP) against 1 GPU with gradient accumulation: losses and weights (>= 2 GPUs)

The report (DIR/report.json, DIR/report.md, DIR/logs/) is rewritten after every stage, so a killed run still leaves
one. A failing stage is recorded with the last lines of its error and the check goes on; the exit code is 0 when no
stage failed or timed out (skipped stages do not count), 1 otherwise. --stages runs a subset (env always runs).

The parent process needs only the standard library: every stage runs in child processes (this file with
--worker, `jitrs`, pytest, torchrun), so a crash, a hang or a CUDA error of one stage cannot take the report with it.

Tiny mode runs every stage on the CPU with a model of a few thousand parameters, so that tests/test_gpu_check.py
exercises the script on every change, torch.compile and bf16 autocast included; streams, pinned memory, NCCL and
the gpu tests themselves (collected, not run) excepted. Inductor's C++ code generation costs ~95 s for the tiny
training step on a 2-core CPU (and ~80 s for the sampler), so tiny mode compiles only the training step, with the
aot_eager backend (dynamo graph capture and AOTAutograd, forward and backward, without inductor's code generation:
~12 s) through torch's TORCH_COMPILE_OVERRIDE_BACKENDS; --tiny-inductor compiles it with inductor instead.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
REPORT_VERSION = 1
STATUSES = ("pending", "running", "passed", "failed", "skipped", "timed_out")
PYTEST_FILES = ("tests/test_gpu.py", "tests/test_train.py", "tests/test_loader.py", "tests/test_sample.py")

# The acceptance targets (README "GPU acceptance"; the same as benches/bench_gpu.py).
TRAIN_SPEEDUP, SAMPLE_SPEEDUP, TRAIN_MFU = 1.8, 2.5, 0.40

# The least time each stage gets; they add up to the time limit (8 minutes on the GPU machine, less the start-up and
# the report). A stage may use what earlier stages left over and what skipped later ones (ddp on 1 GPU) need not.
FULL_BUDGETS = {"env": 30, "pytest": 110, "bench": 130, "train": 95, "sample": 75, "ddp": 30}
TINY_BUDGETS = {"env": 90, "pytest": 60, "bench": 90, "train": 150, "sample": 120, "ddp": 90}
FULL_TIME_LIMIT, TINY_TIME_LIMIT = float(sum(FULL_BUDGETS.values())), float(sum(TINY_BUDGETS.values()))

# A JiT of a few thousand parameters (tests/test_train.py's TINY): seconds per stage on a 2-core CPU.
TINY_MODEL_ARGS = {
    "depth": 2,
    "hidden_size": 32,
    "num_heads": 2,
    "in_context_len": 2,
    "in_context_start": 1,
    "bottleneck_dim": 8,
}


@dataclass(frozen=True)
class Settings:
    """The sizes of every stage in one mode."""

    tiny: bool
    model: str
    model_args: dict[str, int]
    res: int
    bench_batch: int
    bench_sample_batch: int
    bench_sample_steps: int
    bench_warmup: int
    bench_iters: int
    peak_n: int  # the bf16 matmul of the peak measurement is peak_n³
    images: int  # the generated JPEG set
    classes: int
    long_side: tuple[int, int]  # most images: this long side; the set's range
    train_batch: int
    train_steps: int
    log_every: int
    sample_n: int
    sample_batch: int
    resample_batch: int
    sample_steps: int
    ddp_res: int
    ddp_batch: int
    ddp_steps: int

    def model_flags(self) -> list[str]:
        flags = ["--model", self.model]
        for key, value in self.model_args.items():
            flags += ["--model-arg", f"{key}={value}"]
        return flags


FULL = Settings(
    tiny=False,
    model="JiT-B/16",
    model_args={},
    res=256,
    bench_batch=128,
    bench_sample_batch=256,
    bench_sample_steps=50,
    bench_warmup=5,
    bench_iters=20,
    peak_n=8192,
    images=3000,
    classes=10,
    long_side=(500, 200),
    train_batch=128,
    train_steps=200,
    log_every=20,
    sample_n=1000,
    sample_batch=250,  # 1000 = 4 × 250: no ragged last batch, so no extra compiled shape
    resample_batch=50,
    sample_steps=50,
    ddp_res=32,
    ddp_batch=16,
    ddp_steps=4,
)
TINY = Settings(
    tiny=True,
    model="JiT-S/4",
    model_args=TINY_MODEL_ARGS,
    res=16,
    bench_batch=8,
    bench_sample_batch=4,
    bench_sample_steps=5,
    bench_warmup=1,
    bench_iters=3,
    peak_n=512,
    images=48,
    classes=3,
    long_side=(64, 40),
    train_batch=8,
    train_steps=6,
    log_every=2,
    sample_n=12,
    sample_batch=4,
    resample_batch=2,
    sample_steps=5,
    ddp_res=16,
    ddp_batch=4,
    ddp_steps=2,
)


# ----------------------------------------------------------------------------------------------------
# the report


@dataclass
class StageResult:
    name: str
    title: str
    budget_s: float
    status: str = "pending"
    seconds: float | None = None
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: str | None = None  # the last lines of what failed


class Report:
    """report.json and report.md in --out, rewritten atomically whenever something changes."""

    def __init__(self, out: Path, mode: str, argv: list[str], time_limit: float) -> None:
        self.out = out
        self.data: dict[str, Any] = {
            "report_version": REPORT_VERSION,
            "tool": "benches/gpu_check.py",
            "mode": mode,
            "command": argv,
            "started": now_iso(),
            "finished": None,
            "time_limit_s": time_limit,
            "elapsed_s": None,
            "device": None,
            "passed": None,
        }
        self.stages: list[StageResult] = []

    def write(self) -> None:
        doc = {**self.data, "stages": [asdict(s) for s in self.stages]}
        atomic_write(self.out / "report.json", json.dumps(doc, indent=2, default=str) + "\n")
        atomic_write(self.out / "report.md", markdown(doc))


def now_iso() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return {True: "yes", False: "no", None: "-"}[value]
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:,.0f}"
    if isinstance(value, list):
        return ", ".join(fmt(v) for v in value)
    return str(value)


def headline(doc: dict[str, Any]) -> dict[str, str]:
    """The README results row: device, date and the figures the acceptance is about."""
    by = {s["name"]: s["figures"] for s in doc["stages"]}
    bench, train, sample = by.get("bench", {}), by.get("train", {}), by.get("sample", {})

    def pct(x: Any) -> str:
        return f"{100 * x:.1f}%" if isinstance(x, (int, float)) else "-"

    def speed(x: Any) -> str:
        return f"{x:.2f}x" if isinstance(x, (int, float)) else "-"

    def rate(x: Any) -> str:
        return f"{x:,.1f}" if isinstance(x, (int, float)) else "-"

    return {
        "device": (doc.get("device") or "-"),
        "date": doc["started"][:10],
        "train img/s (jitrs / official)": f"{rate(bench.get('train_img_s'))} / "
        f"{rate(bench.get('train_img_s_baseline'))}",
        "train speedup": speed(bench.get("train_speedup")),
        "MFU (measured peak)": pct(bench.get("train_mfu")),
        "sample img/s (jitrs / official)": f"{rate(bench.get('sample_img_s'))} / "
        f"{rate(bench.get('sample_img_s_baseline'))}",
        "sample speedup": speed(bench.get("sample_speedup")),
        "e2e train img/s": rate(train.get("img_s")),
        "e2e sample img/s": rate(sample.get("img_s")),
    }


def markdown(doc: dict[str, Any]) -> str:
    lines = [
        f"# jitrs GPU acceptance ({doc['mode']} mode)",
        "",
        f"- device: **{doc.get('device') or 'unknown'}**",
        f"- started {doc['started']}, finished {doc['finished'] or '(still running, or killed)'}, "
        f"elapsed {fmt(doc['elapsed_s'])} s of a {fmt(doc['time_limit_s'])} s limit",
        f"- result: **{ {True: 'PASSED', False: 'FAILED', None: 'incomplete'}[doc['passed']] }**",
        f"- command: `{' '.join(doc['command'])}`",
        "",
        "| " + " | ".join(headline(doc)) + " |",
        "|" + "---|" * len(headline(doc)),
        "| " + " | ".join(headline(doc).values()) + " |",
        "",
        "| stage | status | seconds | budget s | what |",
        "|---|---|---|---|---|",
    ]
    for s in doc["stages"]:
        lines.append(f"| {s['name']} | {s['status']} | {fmt(s['seconds'])} | {fmt(s['budget_s'])} | {s['title']} |")
    for s in doc["stages"]:
        lines += ["", f"## {s['name']}: {s['title']} — {s['status']}", ""]
        lines += [f"- {note}" for note in s["notes"]]
        if s["figures"]:
            lines += ["", "| figure | value |", "|---|---|"]
            lines += [f"| {key} | {fmt(value)} |" for key, value in s["figures"].items()]
        if s["error"]:
            lines += ["", "```", s["error"].rstrip(), "```"]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------
# running things


class StageFailed(Exception):
    """The stage ran and its check did not hold (or its command failed); `tail` is what to show."""

    def __init__(self, message: str, tail: str = "") -> None:
        super().__init__(message)
        self.tail = tail


class StageSkipped(Exception):
    pass


class StageTimeout(Exception):
    def __init__(self, message: str, tail: str = "") -> None:
        super().__init__(message)
        self.tail = tail


@dataclass
class Proc:
    rc: int
    seconds: float
    log: Path

    def tail(self, lines: int = 25) -> str:
        return tail_of(self.log, lines)


def tail_of(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    # Progress bars redraw with carriage returns: keep each line's last state.
    kept = [line.rsplit("\r", 1)[-1] for line in text.splitlines()]
    return "\n".join(kept[-lines:])


class Context:
    """What the stages share: the mode, the folders, the clock, and the results of earlier stages."""

    def __init__(self, args: argparse.Namespace, settings: Settings, out: Path, work: Path) -> None:
        self.args, self.s, self.out, self.work = args, settings, out, work
        self.logs = out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.t0 = time.monotonic()
        self.deadline = self.t0 + args.time_limit
        self.stage_deadline = self.deadline
        self.env: dict[str, Any] = {}
        self.run_dir: Path | None = None  # the train stage's run (a checkpoint for the sample stage)

    @property
    def tiny(self) -> bool:
        return self.s.tiny

    def remaining(self) -> float:
        return self.stage_deadline - time.monotonic()

    def child_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("JITRS_CACHE", str(self.work / "cache"))
        env["PYTHONUNBUFFERED"] = "1"
        env.pop("CUDA_LAUNCH_BLOCKING", None)
        if self.tiny:
            env.setdefault("OMP_NUM_THREADS", "1")  # tiny tensors: more threads only wait for each other
        return {**env, **(extra or {})}

    def compile_env(self) -> dict[str, str]:
        """Tiny mode: torch.compile through aot_eager (see the module docstring); a torch without the override
        ignores the variable and compiles with inductor."""
        if self.tiny and not self.args.tiny_inductor:
            return {"TORCH_COMPILE_OVERRIDE_BACKENDS": ">=0:aot_eager"}
        return {}

    def compile_backend(self) -> str:
        if not self.compile_env():
            return "inductor"
        known = self.env.get("compile_backend_override")
        return "aot_eager" if known else "inductor" if known is False else "aot_eager (if this torch can)"

    def run(self, name: str, cmd: list[str], env: dict[str, str] | None = None, timeout: float | None = None) -> Proc:
        """Run cmd in its own process group, output to logs/<name>.log, killed (the whole group) at the stage's
        deadline; StageTimeout then."""
        log = self.logs / f"{name}.log"
        budget = self.remaining() if timeout is None else min(timeout, self.remaining())
        if budget <= 1:
            raise StageTimeout(f"no time left for {name}")
        start = time.monotonic()
        with open(log, "w") as f:
            f.write(f"$ {' '.join(cmd)}\n")
            f.flush()
            proc = subprocess.Popen(
                cmd, stdout=f, stderr=subprocess.STDOUT, env=self.child_env(env), cwd=REPO, start_new_session=True
            )
            try:
                rc = proc.wait(timeout=budget)
            except subprocess.TimeoutExpired:
                kill_group(proc)
                raise StageTimeout(f"{name} ran past its {budget:.0f} s and was killed", tail_of(log)) from None
            except BaseException:  # KeyboardInterrupt, SIGTERM of the check itself: leave no orphan behind
                kill_group(proc)
                raise
        return Proc(rc, time.monotonic() - start, log)

    def run_ok(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> Proc:
        proc = self.run(name, cmd, env)
        if proc.rc != 0:
            raise StageFailed(f"{name} exited with {proc.rc}", proc.tail())
        return proc

    def worker(self, name: str, params: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, Any]:
        """This file's --worker `name` in a child process; its JSON result."""
        result = self.logs / f"{name}.result.json"
        result.unlink(missing_ok=True)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--params", json.dumps(params)]
        proc = self.run_ok(f"worker-{name}", [*cmd, "--result", str(result)], env)
        try:
            return json.loads(result.read_text())
        except (OSError, ValueError):
            raise StageFailed(f"worker {name} wrote no result", proc.tail()) from None


def kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM the process group (torchrun and its ranks included), SIGKILL what is left after 5 s."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def jitrs_cmd(*args: str | int | float | Path) -> list[str]:
    return [sys.executable, "-m", "jitrs", *map(str, args)]


def torchrun_cmd(nproc: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "jitrs"]


def number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


# ----------------------------------------------------------------------------------------------------
# the stages


def stage_env(ctx: Context, r: StageResult) -> None:
    info = ctx.worker("env", {"tiny": ctx.tiny})
    ctx.env = info
    r.figures.update(
        {k: info[k] for k in ("python", "torch", "torch_cuda", "driver", "gpu_count", "gpus", "build_profile")}
    )
    r.figures.update(
        {
            "jitrs": info["jitrs"],
            "jitrs_path": info["jitrs_path"],
            "cpu": info["cpu"],
            "cpu_cores": info["cpu_cores"],
            "compile_backend_tiny": ctx.compile_backend() if ctx.tiny else "inductor",
        }
    )
    if not ctx.tiny and not info["gpu_count"]:
        raise StageFailed(f"full mode needs a CUDA device that torch {info['torch']} can use; none is (try --tiny)")
    if info.get("gpu_matmul_ok") is False:
        raise StageFailed("a matmul on a GPU did not match the CPU's", json.dumps(info.get("gpu_matmul"), indent=1))
    if info["build_profile"] != "release":
        r.notes.append(f"jitrs._native is a {info['build_profile']} build: the timings below mean little")
    if ctx.tiny and not info.get("compile_backend_override") and not ctx.args.tiny_inductor:
        r.notes.append("this torch has no TORCH_COMPILE_OVERRIDE_BACKENDS: tiny mode compiles with inductor (slow)")


def device_name(ctx: Context) -> str:
    e = ctx.env
    if e.get("gpu_count"):
        names = [g["name"] for g in e["gpus"]]
        return f"{len(names)}× {names[0]}" if len(set(names)) == 1 else ", ".join(names)
    return f"CPU: {e.get('cpu', 'unknown')} ({e.get('cpu_cores', '?')} cores)"


def pytest_command(files: list[str], junit: Path) -> list[str]:
    """`pytest -m gpu` on `files` with this repository's settings, one line per test (-v), the record_property
    values of the tests in `junit` (junit_family xunit1: under xunit2 record_property warns, and the repository's
    filterwarnings = error would fail the test)."""
    return [
        sys.executable, "-m", "pytest", "-c", str(REPO / "pyproject.toml"), "--rootdir", str(REPO), "-m", "gpu",
        "-p", "no:cacheprovider", "-o", "console_output_style=classic", "-o", "junit_family=xunit1",
        "-v", "-rfEs", f"--junitxml={junit}", *files,
    ]  # fmt: skip


def stage_pytest(ctx: Context, r: StageResult) -> None:
    # On the CPU only tests/test_gpu.py, whose tests skip themselves without CUDA (the other files' gpu tests
    # would fail): the command and its parsing still run, and the regular suite imports every file anyway.
    wanted = PYTEST_FILES[:1] if ctx.tiny else PYTEST_FILES
    files = [f for f in wanted if (REPO / f).is_file()]
    missing = sorted(set(wanted) - set(files))
    if missing:
        r.notes.append(f"not found: {', '.join(missing)}")
    junit = ctx.logs / "pytest.xml"
    try:
        proc = ctx.run("pytest", pytest_command(files, junit))
    except StageTimeout as e:
        r.figures.update(pytest_counts(ctx.logs / "pytest.log"))
        raise StageTimeout(f"{e} (counts so far above)", e.tail) from None
    counts = pytest_counts(proc.log)
    r.figures.update(counts)
    r.figures.update(junit_properties(junit))  # what the tests measured (record_property), e.g. bf16 vs float32
    ran = counts["passed"] + counts["failed"] + counts["errors"] + counts["skipped"]
    if proc.rc not in (0, 1) or counts["failed"] or counts["errors"] or not ran:
        raise StageFailed(f"pytest exited with {proc.rc}", failure_summary(proc.log))
    if ctx.tiny:
        raise StageSkipped(f"no CUDA device: the {ran} tests of {files[0]} ran and skipped themselves")
    if not counts["passed"]:
        raise StageFailed("no gpu test passed", failure_summary(proc.log))


PYTEST_LINE = re.compile(r"^(\S*::\S+)\s+(PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)")


def pytest_counts(log: Path) -> dict[str, Any]:
    """Outcome counts from `pytest -v` lines (also of a run that was killed half way)."""
    outcomes: dict[str, str] = {}
    for line in log.read_text(errors="replace").splitlines():
        m = PYTEST_LINE.match(line)
        if m:
            # a test that passes and then errors in teardown prints two lines: the error wins
            outcomes[m.group(1)] = "ERROR" if outcomes.get(m.group(1)) == "ERROR" else m.group(2)
    values = list(outcomes.values())
    return {
        "passed": values.count("PASSED") + values.count("XFAIL"),
        "failed": values.count("FAILED") + values.count("XPASS"),
        "errors": values.count("ERROR"),
        "skipped": values.count("SKIPPED"),
        "outcomes": [f"{outcome} {test}" for test, outcome in outcomes.items()],
    }


def junit_properties(path: Path) -> dict[str, Any]:
    """The record_property values of a junit XML file, as numbers where they are numbers."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return {}
    out: dict[str, Any] = {}
    for prop in root.iter("property"):
        name, value = prop.get("name"), prop.get("value")
        if name is None or value is None:
            continue
        try:
            out[name] = int(value) if re.fullmatch(r"-?\d+", value) else float(value)
        except ValueError:
            out[name] = value
    return out


def failure_summary(log: Path) -> str:
    """pytest's short test summary (the -rfEs block), else the log's tail."""
    text = log.read_text(errors="replace")
    at = text.rfind("short test summary info")
    return text[text.rfind("\n", 0, at) + 1 :][-4000:] if at >= 0 else tail_of(log, 40)


def stage_bench(ctx: Context, r: StageResult) -> None:
    s = ctx.s
    params = {
        "device": "cpu" if ctx.tiny else "cuda",
        "model": s.model,
        "model_args": s.model_args,
        "size": s.res,
        "batch": s.bench_batch,
        "sample_batch": s.bench_sample_batch,
        "sample_steps": s.bench_sample_steps,
        "warmup": s.bench_warmup,
        "iters": s.bench_iters,
        "peak_n": s.peak_n,
    }
    f = ctx.worker("bench", params)
    r.figures.update(f)
    if ctx.tiny:
        r.notes.append("targets not judged: they are for JiT-B/16 on a GPU")
        return
    targets = {
        f"train speedup >= {TRAIN_SPEEDUP}x": f["train_speedup"] >= TRAIN_SPEEDUP,
        f"train MFU >= {TRAIN_MFU:.0%} of the measured peak": f["train_mfu"] >= TRAIN_MFU,
        f"sample speedup >= {SAMPLE_SPEEDUP}x": f["sample_speedup"] >= SAMPLE_SPEEDUP,
    }
    for name, met in targets.items():
        r.notes.append(f"{'met' if met else 'MISSED'}: {name}")
    r.figures["targets_met"] = sum(targets.values())
    r.figures["targets_missed"] = len(targets) - sum(targets.values())
    if not all(targets.values()):
        raise StageFailed("missed: " + "; ".join(k for k, met in targets.items() if not met))


def stage_train(ctx: Context, r: StageResult) -> None:
    s = ctx.s
    data = ctx.work / "images"
    gen = ctx.worker(
        "data",
        {
            "root": str(data),
            "n": s.images,
            "classes": s.classes,
            "long_side": list(s.long_side),
            "seed": 0,
            "res": s.res,
            "batch": s.train_batch,
            "batches": 6 if ctx.tiny else 30,
            "device": "cpu" if ctx.tiny else "cuda",
        },
    )
    r.figures["images"] = gen["images"]
    r.figures["images_mean_size"] = gen["mean_size"]
    r.figures["image_generation_s"] = gen["seconds"]
    r.figures["loader_img_s"] = gen["loader_img_s"]
    r.figures["loader_threads"] = gen["loader_threads"]
    run_dir = ctx.work / "run"
    cmd = jitrs_cmd(
        "train", "--data", data, "--out", run_dir, "--res", s.res, *s.model_flags(),
        "--batch-size", s.train_batch, "--steps", s.train_steps, "--log-every", s.log_every,
        "--sample-every", 0, "--sample-steps", s.sample_steps, "--compile", "--bf16", "--warmup-epochs", 1,
        *ctx.args.train_arg,
    )  # fmt: skip
    if ctx.tiny:
        cmd += ["--device", "cpu"]
    r.figures["compile_backend"] = ctx.compile_backend()
    proc = ctx.run_ok("train", cmd, ctx.compile_env())
    r.figures["train_process_s"] = proc.seconds
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    if not rows or rows[-1]["step"] != s.train_steps:
        raise StageFailed(f"metrics.jsonl ends at step {rows[-1]['step'] if rows else None}", proc.tail())
    losses = [row["loss"] for row in rows]
    if not all(math.isfinite(v) for v in losses):
        raise StageFailed(f"non-finite loss: {losses}")
    steady = rows[1:] or rows
    # Equal windows of log_every steps: images / time over them is the harmonic mean of the rates.
    img_s = len(steady) / sum(1 / row["images_per_s"] for row in steady)
    window = s.log_every * s.train_batch
    r.figures.update(
        {
            "steps": rows[-1]["step"],
            "batch": s.train_batch,
            "res": s.res,
            "model": s.model,
            "img_s": img_s,
            "img_s_first_window": rows[0]["images_per_s"],
            # The first window also holds the compilation and the first steps' allocations.
            "first_window_overhead_s": window / rows[0]["images_per_s"] - window / img_s,
            "loss_first": losses[0],
            "loss_last": losses[-1],
        }
    )
    wait_keys = sorted({k for row in rows for k in row if "wait" in k})
    if wait_keys:
        for key in wait_keys:
            values = [row[key] for row in steady if number(row.get(key))]
            if values:
                r.figures[f"{key}_mean"] = sum(values) / len(values)
    else:
        r.figures["data_wait_fraction"] = "not logged"
        r.notes.append(
            "metrics.jsonl has no data-wait field (rows hold " + ", ".join(rows[-1]) + "): the fraction of step time "
            "spent waiting for data is not known; the loader alone is timed instead (loader_img_s, loader_headroom)"
        )
    # > 1: the loader alone delivers more than training consumes, so the loop need not wait on data.
    r.figures["loader_headroom"] = gen["loader_img_s"] / img_s
    ctx.run_dir = run_dir


def stage_sample(ctx: Context, r: StageResult) -> None:
    if ctx.run_dir is None or not list(ctx.run_dir.glob("checkpoint-*.pt")):
        raise StageSkipped("needs the checkpoint of the train stage")
    s = ctx.s
    out = ctx.work / "samples"
    common = ["--ckpt", ctx.run_dir, "--out", out, "--n", s.sample_n, "--cfg", 3.0, "--steps", s.sample_steps]
    if ctx.tiny:
        # Compiling the sampler costs ~15 s a run on 2 cores even with aot_eager; the train stage compiles.
        common += ["--device", "cpu", "--no-compile"]
        r.notes.append("tiny mode: sampling eager (the train stage covers torch.compile)")
    else:
        common += ["--compile"]
    first = ctx.run_ok("sample", jitrs_cmd("sample", *common, "--batch-size", s.sample_batch))
    pngs = sorted(out.glob("[0-9]*.png"))
    if len(pngs) != s.sample_n:
        raise StageFailed(f"{len(pngs)} PNGs instead of {s.sample_n}", first.tail())
    # Steady rate from the files: from the first batch's last PNG to the last PNG, without start-up and compile.
    times = sorted(p.stat().st_mtime for p in pngs)
    span = times[-1] - times[s.sample_batch - 1]
    r.figures.update(
        {
            "n": s.sample_n,
            "batch": s.sample_batch,
            "steps": s.sample_steps,
            "cfg": 3.0,
            "img_s": (s.sample_n - s.sample_batch) / span if span > 0 else None,
            "img_s_with_startup": s.sample_n / first.seconds,
            "process_s": first.seconds,
        }
    )
    # Every 4th image again, with another batch size: moved aside, then the same command resumes the directory.
    again = [i for i in range(s.sample_n) if i % 4 == 3]
    kept = ctx.work / "samples-first"
    kept.mkdir(exist_ok=True)
    for i in again:
        shutil.move(out / f"{i:06d}.png", kept / f"{i:06d}.png")
    second = ctx.run_ok("resample", jitrs_cmd("sample", *common, "--batch-size", s.resample_batch))
    r.figures["resample_batch"] = s.resample_batch
    r.figures["resampled"] = len(again)
    r.figures["resample_process_s"] = second.seconds
    cmp = ctx.worker("compare-pngs", {"a": str(kept), "b": str(out), "indices": again})
    r.figures.update(cmp)
    # On the CPU every image is the same whatever the batch size. On CUDA another batch size may pick other GEMM
    # kernels, so bf16 rounding may differ (as tests/test_sample.py's CUDA test allows): the mean difference over
    # all pixels must stay below one level, and the report says how many files differ.
    mean_all = cmp["mean_abs_diff_of_differing"] * cmp["differing_files"] / len(again)
    r.figures["mean_abs_diff_all"] = mean_all
    exact = ctx.tiny
    if (exact and cmp["identical_files"] != len(again)) or mean_all >= 1.0:
        raise StageFailed(
            f"{len(again) - cmp['identical_files']} of {len(again)} images differ between batch sizes "
            f"{s.sample_batch} and {s.resample_batch} (mean {mean_all:.3f}, max pixel difference "
            f"{cmp['max_abs_diff']})"
        )


def stage_ddp(ctx: Context, r: StageResult) -> None:
    gpus = int(ctx.env.get("gpu_count") or 0)
    if not ctx.tiny and gpus < 2:
        raise StageSkipped(f"needs 2 GPUs, this machine has {gpus}")
    s = ctx.s
    # fp32 and eager: what is compared is the sharding and the gradient reduction, so any difference beyond the
    # reduction order of the sums is a bug.
    common = [
        "train", "--data", "builtin:digits", "--res", s.ddp_res, *TINY_FLAGS_FOR_DDP,
        "--batch-size", s.ddp_batch, "--steps", s.ddp_steps, "--log-every", 1, "--sample-every", 0,
        "--blr", "1e-3", "--warmup-epochs", 0, "--grad-clip", 0.05, "--no-compile", "--no-bf16",
    ]  # fmt: skip
    device = ["--device", "cpu"] if ctx.tiny else []
    one, two = ctx.work / "ddp-one", ctx.work / "ddp-two"
    first = ctx.run_ok("ddp-one", jitrs_cmd(*common, "--accum", 2, "--out", one, *device))
    cmd = [*torchrun_cmd(2), *map(str, common), "--out", str(two), *device]
    second = ctx.run_ok("ddp-two", cmd, {"OMP_NUM_THREADS": "1"} if ctx.tiny else None)
    r.figures["one_process_s"], r.figures["two_processes_s"] = first.seconds, second.seconds

    def rows(run: Path) -> dict[int, dict[str, Any]]:
        lines = (run / "metrics.jsonl").read_text().splitlines()
        return {row["step"]: row for row in map(json.loads, filter(str.strip, lines))}

    a, b = rows(one), rows(two)
    if list(a) != list(b) or list(a) != list(range(1, s.ddp_steps + 1)):
        raise StageFailed(f"logged steps differ: {list(a)} vs {list(b)}")
    loss_rel = max(abs(a[k]["loss"] - b[k]["loss"]) / abs(a[k]["loss"]) for k in a)
    norm_rel = max(abs(a[k]["grad_norm"] - b[k]["grad_norm"]) / abs(a[k]["grad_norm"]) for k in a)
    diff = ctx.worker("compare-ckpts", {"a": str(one), "b": str(two), "step": s.ddp_steps})
    r.figures.update({"steps": s.ddp_steps, "loss_max_rel_diff": loss_rel, "grad_norm_max_rel_diff": norm_rel})
    r.figures.update(diff)
    r.notes.append("tolerances: losses and gradient norms rel 1e-4; weights |a-b| <= 1e-5 + 1e-4·|a|")
    if loss_rel > 1e-4 or norm_rel > 1e-4 or not diff["weights_close"]:
        raise StageFailed(
            f"2 processes differ from 1 with accumulation: loss rel {loss_rel:.2e}, grad norm rel {norm_rel:.2e}, "
            f"weights max abs diff {diff['weights_max_abs_diff']:.2e}"
        )


TINY_FLAGS_FOR_DDP = ["--model", "JiT-S/4", *[f"--model-arg={k}={v}" for k, v in TINY_MODEL_ARGS.items()]]

STAGES: list[tuple[str, str, Callable[[Context, StageResult], None]]] = [
    ("env", "device, driver, CUDA, torch, Python, GPUs, jitrs build", stage_env),
    ("pytest", "pytest -m gpu", stage_pytest),
    ("bench", "training step and sampling vs the official hot path (benches/bench_model.py)", stage_bench),
    ("train", "jitrs train end to end (Rust loader, torch.compile, bf16)", stage_train),
    ("sample", "jitrs sample end to end, then another batch size byte for byte", stage_sample),
    ("ddp", "DDP on 2 GPUs equals 1 GPU with gradient accumulation", stage_ddp),
]


def will_run(ctx: Context, name: str) -> bool:
    """Whether a stage that has not started yet will need its time (as far as is known now)."""
    if not ctx.tiny and ctx.env and not ctx.env.get("gpu_count"):
        return name == "env"
    return name != "ddp" or ctx.tiny or not ctx.env or int(ctx.env.get("gpu_count") or 0) >= 2


def run_stage(
    ctx: Context, report: Report, r: StageResult, later: list[StageResult], fn: Callable[[Context, StageResult], None]
) -> None:
    """Run one stage. Its budget is what the later stages that will run leave of the check's time limit: never less
    than its own budget (the budgets add up to the limit), more when earlier stages finished early or a later one
    will be skipped."""
    start = time.monotonic()
    reserved = sum(s.budget_s for s in later if will_run(ctx, s.name))
    ctx.stage_deadline = ctx.deadline - reserved
    r.budget_s = round(max(0.0, ctx.stage_deadline - start), 1)
    if r.budget_s < 5:
        r.status = "skipped"
        r.notes.append(f"skipped: no time left of the check's {ctx.args.time_limit:.0f} s")
        return
    r.status = "running"
    report.write()
    try:
        if not ctx.tiny and r.name != "env" and not ctx.env.get("gpu_count"):
            raise StageSkipped("no CUDA device (see the env stage)")
        fn(ctx, r)
        r.status = "passed"
    except StageSkipped as e:
        r.status = "skipped"
        r.notes.append(f"skipped: {e}")
    except StageTimeout as e:
        r.status = "timed_out"
        r.error = f"{e}\n{e.tail}"
    except StageFailed as e:
        r.status = "failed"
        r.error = f"{e}\n{e.tail}".rstrip()
    except Exception as e:  # a bug of this script or an unexpected result: recorded, and the next stage runs
        r.status = "failed"
        r.error = "".join(traceback.format_exception(type(e), e, e.__traceback__))[-4000:]
    finally:
        r.seconds = round(time.monotonic() - start, 2)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    if args.worker:
        return run_worker(args.worker, json.loads(args.params), Path(args.result))
    tiny = args.tiny or (not args.full and not nvidia_gpu_present())
    settings = TINY if tiny else FULL
    if args.time_limit is None:
        args.time_limit = TINY_TIME_LIMIT if tiny else FULL_TIME_LIMIT
    budgets = dict(TINY_BUDGETS if tiny else FULL_BUDGETS)
    for item in args.budget:
        name, _, seconds = item.partition("=")
        if name not in budgets:
            parser().error(f"--budget {item}: no stage {name!r}")
        budgets[name] = float(seconds)
    wanted = args.stages.split(",") if args.stages else [name for name, _, _ in STAGES]
    unknown = sorted(set(wanted) - {name for name, _, _ in STAGES})
    if unknown:
        parser().error(f"--stages: unknown stage(s) {', '.join(unknown)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="jitrs-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    ctx = Context(args, settings, out, work)
    report = Report(out, "tiny" if tiny else "full", ["python3", "benches/gpu_check.py", *argv], args.time_limit)
    report.data["work"] = str(work)
    report.stages = [StageResult(name, title, budgets[name]) for name, title, _ in STAGES if name in wanted]
    report.stages.sort(key=lambda r: [n for n, _, _ in STAGES].index(r.name))
    if "env" not in wanted:
        report.stages.insert(0, StageResult("env", STAGES[0][1], budgets["env"]))  # every stage needs to know
    report.write()
    fns = {name: fn for name, _, fn in STAGES}
    print(f"gpu_check ({report.data['mode']} mode): report in {out}, scratch in {work}", flush=True)
    try:
        for k, r in enumerate(report.stages):
            print(f"[{time.monotonic() - ctx.t0:6.1f} s] {r.name}: {r.title}", flush=True)
            run_stage(ctx, report, r, report.stages[k + 1 :], fns[r.name])
            if r.name == "env":
                report.data["device"] = device_name(ctx) if ctx.env else None
            print(f"          {r.status} in {r.seconds} s (budget {r.budget_s:.0f} s)", flush=True)
            if r.error:
                print("          " + r.error.strip().splitlines()[0], flush=True)
            report.data["elapsed_s"] = round(time.monotonic() - ctx.t0, 1)
            report.write()
    finally:
        report.data["finished"] = now_iso()
        report.data["elapsed_s"] = round(time.monotonic() - ctx.t0, 1)
        report.data["passed"] = all(r.status in ("passed", "skipped") for r in report.stages)
        report.write()
        if not args.keep and not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print(f"gpu_check: {'PASSED' if report.data['passed'] else 'FAILED'} in {report.data['elapsed_s']} s; "
          f"{out / 'report.md'}")  # fmt: skip
    return 0 if report.data["passed"] else 1


def nvidia_gpu_present() -> bool:
    """An NVIDIA GPU as the driver shows it, without importing torch (whether torch sees it is the env stage's
    question, and full mode fails there if it does not)."""
    gpus = Path("/proc/driver/nvidia/gpus")
    return (gpus.is_dir() and any(gpus.iterdir())) or Path("/dev/nvidia0").exists()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/gpu-check", help="report folder (report.json, report.md, logs/)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--tiny", action="store_true", help="tiny mode (default when there is no CUDA device)")
    mode.add_argument("--full", action="store_true", help="full mode even without CUDA (to see it fail fast)")
    p.add_argument("--stages", help=f"comma-separated subset of {','.join(n for n, _, _ in STAGES)} (env always runs)")
    p.add_argument("--budget", action="append", default=[], metavar="STAGE=SECONDS", help="override a stage budget")
    p.add_argument("--time-limit", type=float, default=None, help="seconds for the whole check (full 470, tiny 600)")
    p.add_argument("--work", help="scratch folder (default: a new temp folder, removed at the end)")
    p.add_argument("--keep", action="store_true", help="keep the scratch folder")
    p.add_argument("--train-arg", action="append", default=[], help="extra flag for the train stage's jitrs train")
    p.add_argument("--tiny-inductor", action="store_true", help="tiny mode: compile with inductor (~95 s more)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--params", default="{}", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    return p


# ----------------------------------------------------------------------------------------------------
# workers: each runs in its own child process and writes one JSON result


def run_worker(name: str, params: dict[str, Any], result: Path) -> int:
    value = WORKERS[name](params)
    atomic_write(result, json.dumps(value, indent=1) + "\n")
    return 0


def work_env(p: dict[str, Any]) -> dict[str, Any]:
    import torch

    import jitrs

    sys.path.insert(0, str(HERE))
    from common import cpu_model, usable_cores

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "jitrs": getattr(jitrs, "__version__", None) or package_version("jitrs"),
        "jitrs_path": str(Path(jitrs.__file__).parent),
        "build_profile": jitrs._native.BUILD_PROFILE,
        "cpu": cpu_model(),
        "cpu_cores": usable_cores(),
        "platform": platform.platform(),
        "gpu_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "gpus": [],
        "driver": None,
        "compile_backend_override": hasattr(torch._dynamo.config, "debug_backend_override"),
    }
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        if smi.returncode == 0 and smi.stdout.strip():
            info["driver"] = smi.stdout.splitlines()[0].strip()
    checks = []
    for i in range(info["gpu_count"]):
        props = torch.cuda.get_device_properties(i)
        info["gpus"].append(
            {
                "name": props.name,
                "memory_gib": round(props.total_memory / 2**30, 1),
                "capability": f"{props.major}.{props.minor}",
                "multiprocessors": props.multi_processor_count,
            }
        )
        # The device computes: a float32 matmul (TF32 off) against the CPU's.
        g = torch.Generator().manual_seed(i)
        a, b = torch.randn(256, 256, generator=g), torch.randn(256, 256, generator=g)
        torch.backends.cuda.matmul.allow_tf32 = False
        err = float((a.to(f"cuda:{i}") @ b.to(f"cuda:{i}")).cpu().sub_(a @ b).abs().max())
        checks.append(err)
    if info["gpu_count"] and info["driver"] is None:
        info["driver"] = f"CUDA driver API {torch._C._cuda_getDriverVersion()}"
    if checks:
        info["gpu_matmul"] = checks
        info["gpu_matmul_ok"] = max(checks) < 1e-3
    return info


def package_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def matmul_peak(device: Any, n: int) -> float:
    """The fastest of a few timed rounds of n³ bf16 matmuls on `device`, in FLOP/s."""
    import torch

    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    reps = 10 if device.type == "cuda" else 2
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    best = float("inf")
    for _ in range(4):  # the first round is the warm-up (cuBLAS handles, clocks)
        sync()
        start = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b)
        sync()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 * reps / best


def work_bench(p: dict[str, Any]) -> dict[str, Any]:
    import torch

    sys.path.insert(0, str(HERE))
    import bench_model

    device = torch.device(p["device"])
    peak = matmul_peak(device, p["peak_n"])
    argv = ["--device", p["device"], "--model", p["model"], "--size", str(p["size"])]
    argv += ["--batch", str(p["batch"]), "--sample-batch", str(p["sample_batch"])]
    argv += ["--sample-steps", str(p["sample_steps"]), "--warmup", str(p["warmup"]), "--iters", str(p["iters"])]
    for key, value in p["model_args"].items():
        argv += ["--model-arg", f"{key}={value}"]
    train, sample = bench_model.main(argv)
    return {
        "model": p["model"] + (f" {p['model_args']}" if p["model_args"] else ""),
        "res": p["size"],
        "peak_bf16_tflops_measured": peak / 1e12,
        "train_batch": p["batch"],
        "train_img_s": train.ours,
        "train_img_s_baseline": train.baseline,
        "train_speedup": train.speedup,
        "train_mfu": train.ours * train.flops_ours / peak,
        "train_mfu_baseline": train.baseline * train.flops_baseline / peak,
        "train_mfu_spec_peak": train.mfu_ours,
        "sample_batch": p["sample_batch"],
        "sample_steps": p["sample_steps"],
        "sample_img_s": sample.ours,
        "sample_img_s_baseline": sample.baseline,
        "sample_speedup": sample.speedup,
        "sample_mfu": sample.ours * sample.flops_ours / peak,
        "sample_mfu_baseline": sample.baseline * sample.flops_baseline / peak,
    }


def _make_image(job: tuple[str, int, int, int, int]) -> tuple[int, int]:
    """One smooth random picture with some grain (so it decodes like a photo, not like a flat colour) as JPEG."""
    import numpy as np
    from PIL import Image

    path, i, seed, long_side, spread = job
    rng = np.random.default_rng([seed, i])
    draw = rng.random()
    side = long_side if draw < 0.8 else int(rng.integers(long_side - spread, long_side + spread))
    aspect = float(rng.choice([4 / 3] * 5 + [3 / 2, 1.0, 3 / 4, 2 / 3]))
    w, h = (side, round(side / aspect)) if aspect >= 1 else (round(side * aspect), side)
    coarse = rng.integers(0, 256, (max(2, h // 40), max(2, w // 40), 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC), dtype=np.int16)
    grain = rng.normal(0, 10, (h, w, 1))
    im = Image.fromarray(np.clip(smooth + grain, 0, 255).astype(np.uint8))
    if rng.random() < 0.05:
        im = im.convert("L")
    im.save(path, "JPEG", quality=int(rng.integers(75, 96)), progressive=bool(rng.random() < 0.1))
    return w, h


def work_data(p: dict[str, Any]) -> dict[str, Any]:
    """ImageFolder root/train/<class>/<i>.JPEG of `n` ImageNet-like JPEGs, written by a pool of processes (forked
    before torch starts any thread), then the loader's rate on them."""
    from concurrent.futures import ProcessPoolExecutor

    start = time.perf_counter()
    root = Path(p["root"])
    for c in range(p["classes"]):
        (root / "train" / f"n{c:08d}").mkdir(parents=True, exist_ok=True)
    long_side, spread = p["long_side"]
    jobs = [
        (str(root / "train" / f"n{i % p['classes']:08d}" / f"{i:05d}.JPEG"), i, p["seed"], long_side, spread)
        for i in range(p["n"])
    ]
    workers = max(1, min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1, 32))
    with ProcessPoolExecutor(workers) as pool:
        sizes = list(pool.map(_make_image, jobs, chunksize=16))
    return {
        "images": len(sizes),
        "mean_size": f"{sum(w for w, _ in sizes) / len(sizes):.0f}x{sum(h for _, h in sizes) / len(sizes):.0f}",
        "seconds": time.perf_counter() - start,
        **loader_rate(p),
    }


def loader_rate(p: dict[str, Any]) -> dict[str, Any]:
    """Images per second of the training loader alone (decode, crop, flip, pinned copy to the device)."""
    import torch

    from jitrs.dataset import build_index
    from jitrs.device import decode_threads, pick_device
    from jitrs.loader import Loader, Plan

    device = pick_device(p["device"])
    index = build_index(p["root"])
    plan = Plan(len(index), micro_batch=min(p["batch"], len(index)), seed=0)
    threads = decode_threads()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with Loader(index, p["res"], plan, device, threads=threads, workers=2) as loader:
        batches = iter(loader)
        for _ in range(3):  # warm-up: thread pools, pinned allocations
            next(batches)
        sync()
        start = time.perf_counter()
        for _ in range(p["batches"]):
            next(batches)
        sync()
        seconds = time.perf_counter() - start
    return {"loader_img_s": p["batches"] * plan.micro_batch / seconds, "loader_threads": threads}


def work_compare_pngs(p: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    from PIL import Image

    a, b = Path(p["a"]), Path(p["b"])
    identical, diffs, max_diff = 0, [], 0
    for i in p["indices"]:
        name = f"{i:06d}.png"
        if (a / name).read_bytes() == (b / name).read_bytes():
            identical += 1
            continue
        x = np.asarray(Image.open(a / name), dtype=np.int16)
        y = np.asarray(Image.open(b / name), dtype=np.int16)
        d = np.abs(x - y)
        diffs.append(float(d.mean()))
        max_diff = max(max_diff, int(d.max()))
    return {
        "identical_files": identical,
        "differing_files": len(p["indices"]) - identical,
        "max_abs_diff": max_diff,
        "mean_abs_diff_of_differing": sum(diffs) / len(diffs) if diffs else 0.0,
    }


def work_compare_ckpts(p: dict[str, Any]) -> dict[str, Any]:
    import torch

    name = f"checkpoint-{p['step']:07d}.pt"
    a = torch.load(Path(p["a"]) / name, map_location="cpu", weights_only=True)["model"]
    b = torch.load(Path(p["b"]) / name, map_location="cpu", weights_only=True)["model"]
    if a.keys() != b.keys():
        return {"weights_close": False, "weights_max_abs_diff": float("inf")}
    worst = max(float((a[k].double() - b[k].double()).abs().max()) for k in a)
    close = all(torch.allclose(b[k].double(), a[k].double(), rtol=1e-4, atol=1e-5) for k in a)
    return {"weights_close": close, "weights_max_abs_diff": worst, "tensors": len(a)}


WORKERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "env": work_env,
    "bench": work_bench,
    "data": work_data,
    "compare-pngs": work_compare_pngs,
    "compare-ckpts": work_compare_ckpts,
}


if __name__ == "__main__":
    sys.exit(main())
