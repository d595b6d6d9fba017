"""What a training run shows and records (rank 0 only): metrics.jsonl, TensorBoard, the progress bar (plain
lines when the output is not a terminal), and the plots of the loss and of the quality score."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from jitrs.atomic import atomic_path, atomic_write_text, naming


class RunLog:
    """Rank 0's view of a run; every method is a no-op on the other ranks."""

    def __init__(self, run_dir: Path, start_step: int, total: int, enabled: bool) -> None:
        self.enabled = enabled
        self.console = Console(stderr=True)
        self.metrics = run_dir / "metrics.jsonl"
        self.quality = run_dir / "quality.jsonl"  # the built-in quality score of each sample grid
        self.tb = run_dir / "tb"
        self.progress: Progress | None = None
        self.writer: Any = None
        if not enabled:
            return
        # A resumed run rewinds the logs to its checkpoint, so re-run steps are not logged twice; a torn line (what
        # a full disk or a power cut leaves of an append) is dropped, and said so.
        for log in (self.metrics, self.quality):
            if log.exists():
                rows = [(line, _step(line)) for line in log.read_text(errors="replace").splitlines() if line.strip()]
                torn = sum(step is None for _, step in rows)
                if torn:
                    self.console.print(
                        f"dropped {torn} torn line(s) of {log}", markup=False, highlight=False, soft_wrap=True
                    )
                kept = [line for line, step in rows if step is not None and step <= start_step]
                atomic_write_text(log, "".join(line + "\n" for line in kept))
        from torch.utils.tensorboard import SummaryWriter

        threading.excepthook = _quiet_tensorboard_thread
        self.writer = SummaryWriter(str(self.tb), purge_step=start_step + 1)
        if self.console.is_terminal:
            self.progress = Progress(
                TextColumn("step {task.completed}/{task.total}"),
                BarColumn(),
                TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self.task = self.progress.add_task("train", total=total, completed=start_step, info="")
            self.progress.start()

    def print(self, msg: str) -> None:
        """Print a line of rich markup; user-supplied text inside it must go through `escape` first."""
        if self.enabled:
            self.console.print(msg, highlight=False, soft_wrap=True)

    def advance(self, step: int) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=step)

    def row(self, row: dict[str, Any]) -> None:
        """Append a row to metrics.jsonl and TensorBoard, and update the bar (or print a line)."""
        if not self.enabled:
            return
        _append(self.metrics, row)
        with naming(self.tb):
            for key in ("loss", "lr", "images_per_s", "grad_norm"):
                if key in row:
                    self.writer.add_scalar(f"train/{key}", row[key], row["step"])
        info = f"epoch {row['epoch']}  loss {row['loss']:.4f}  lr {row['lr']:.2e}  {row['images_per_s']:.0f} img/s"
        if self.progress is not None:
            self.progress.update(self.task, completed=row["step"], info=info)
        else:
            self.console.print(f"step {row['step']}  {info}", highlight=False)

    def quality_row(self, row: dict[str, Any]) -> None:
        """Append a quality score (jitrs.quality.Score fields and the step) to quality.jsonl and TensorBoard."""
        if not self.enabled:
            return
        _append(self.quality, row)
        with naming(self.tb):
            for key in ("accuracy", "fd"):
                self.writer.add_scalar(f"quality/{key}", row[key], row["step"])

    def eval_row(self, row: dict[str, Any]) -> None:
        """Append an online evaluation (step, fid, inception_score, ...) to metrics.jsonl and TensorBoard."""
        if not self.enabled:
            return
        with open(self.metrics, "a") as f:
            f.write(json.dumps(row) + "\n")
        for key in ("fid", "inception_score"):
            if key in row:
                self.writer.add_scalar(f"eval/{key}", row[key], row["step"])
        scores = f"FID {row['fid']:.2f}, IS {row['inception_score']:.2f}" if "fid" in row else ""
        self.print(
            f"step {row['step']}: {scores} ({row['eval_images']} samples of {row['eval_ema']}, "
            f"CFG {row['eval_cfg']:g}, {row['eval_s']:.0f} s)"
        )

    @staticmethod
    def rows(log: Path) -> list[dict[str, Any]]:
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
        if self.writer is not None:
            with naming(self.tb):
                self.writer.close()


def _append(log: Path, row: dict[str, Any]) -> None:
    with naming(log), open(log, "a") as f:
        f.write(json.dumps(row) + "\n")


def _quiet_tensorboard_thread(args: threading.ExceptHookArgs) -> None:
    """TensorBoard writes from a thread; a write failure there (a full disk) is raised again in the main thread at
    the next call, where the CLI turns it into one line, but the thread would first print a traceback of its own."""
    if not (type(args.thread).__name__ == "_AsyncWriterThread" and isinstance(args.exc_value, OSError)):
        threading.__excepthook__(args)


def _step(line: str) -> int | None:
    """The step of a log line; None for a line that is not a whole JSON row."""
    try:
        row = json.loads(line)
        return int(row.get("step", 0)) if isinstance(row, dict) else None
    except (ValueError, TypeError):
        return None


def plot_loss(rows: list[dict[str, Any]], out: Path) -> None:
    """The loss curve of a run (every row of metrics.jsonl that has a loss) as a PNG, written atomically."""
    fig, ax = new_figure()
    ax.plot([r["step"] for r in rows if "loss" in r], [r["loss"] for r in rows if "loss" in r], lw=1)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss (v-space MSE)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    save_figure(fig, out)


def plot_quality(rows: list[dict[str, Any]], out: Path) -> None:
    """Recognised fraction and Fréchet distance of each sample grid over the run (rows of quality.jsonl), with the
    real-digit and class-mean-blob yardsticks, as a PNG."""
    if not rows:
        return
    fig, (acc, fd) = new_figure(2)
    steps = [r["step"] for r in rows]
    acc.plot(steps, [100 * r["accuracy"] for r in rows], "o-", lw=1, label="samples")
    acc.axhline(100 * rows[-1]["classifier_accuracy"], color="g", ls="--", lw=1, label="real digits")
    acc.set_ylabel("recognised as their class (%)")
    acc.set_ylim(0, 100)
    fd.plot(steps, [r["fd"] for r in rows], "o-", lw=1, label="samples")
    fd.axhline(rows[-1]["fd_real"], color="g", ls="--", lw=1, label="real digits")
    fd.axhline(rows[-1]["fd_blobs"], color="r", ls=":", lw=1, label="class-mean blobs")
    fd.set_ylabel("Fréchet distance (classifier features)")
    fd.set_yscale("log")
    for ax in (acc, fd):
        ax.set_xlabel("optimiser step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save_figure(fig, out)


def new_figure(panels: int = 1) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7 * panels, 4), dpi=100)
    return fig, fig.subplots(1, panels)


def save_figure(fig: Any, out: Path) -> None:
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
