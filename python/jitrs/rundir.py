"""The layout of a run directory written by `jitrs train --out RUN`: its checkpoints, whether it holds a run, its
lock, and the temp files a killed writer left."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import socket
from pathlib import Path

from jitrs.atomic import FILE_MODE
from jitrs.errors import UserError

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)\.pt$")
LOCK_NAME = ".lock"


def checkpoint_path(run_dir: Path, step: int) -> Path:
    """RUN/checkpoint-0001234.pt: zero-padded so names sort like steps."""
    return run_dir / f"checkpoint-{step:07d}.pt"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint in run_dir, oldest first; temp files of interrupted writes are ignored."""
    found = []
    for p in run_dir.iterdir():
        m = CHECKPOINT_RE.match(p.name)
        if m and p.is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def resolve_checkpoint(path: str | Path, param: str = "ckpt") -> Path:
    """A checkpoint file as given, or the newest checkpoint of a run directory; UserError when there is none."""
    p = Path(path)
    if p.is_dir():
        found = list_checkpoints(p)
        if not found:
            raise UserError("the directory holds no checkpoint-*.pt file", param=param, value=p)
        return found[-1][1]
    if not p.exists():
        raise UserError("no such file or directory", param=param, value=p)
    return p


# A directory holding a checkpoint or one of these has seen training steps: it holds a run. (A run refused before
# its first step leaves at most index.json, and may be started again with corrected options.)
RUN_MARKERS = ("metrics.jsonl", "loss.png", "quality.jsonl", "quality.json")
RUN_FILES = (*RUN_MARKERS, "index.json", "bad_images.log")
RUN_DIRS = ("tb", "samples", "eval")


def holds_run(run_dir: Path) -> bool:
    """True when run_dir already holds (part of) a training run."""
    if not run_dir.is_dir():
        return False
    return bool(list_checkpoints(run_dir)) or any((run_dir / name).exists() for name in RUN_MARKERS)


def clear_run(run_dir: Path) -> None:
    """Delete what a run wrote (--overwrite), and nothing else the directory holds."""
    for _, path in list_checkpoints(run_dir):
        path.unlink()
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
    for name in RUN_DIRS:
        if (run_dir / name).is_dir():
            shutil.rmtree(run_dir / name)


def remove_if_unused(run_dir: Path) -> bool:
    """Delete run_dir when it holds nothing but what a job refused before its first step writes (its lock, the
    data index, an empty TensorBoard log): a failed validation leaves no directory behind. Returns True if gone."""
    if holds_run(run_dir):
        return False
    if any(p.name not in (LOCK_NAME, "index.json", "tb") for p in run_dir.iterdir()):
        return False
    shutil.rmtree(run_dir)
    return True


def remove_stale_temps(run_dir: Path) -> list[Path]:
    """Delete the hidden temp files (`.NAME.*.tmp`, jitrs.atomic) that writers killed mid-write left; only safe
    while holding the directory's lock. Returns what was removed."""
    stale = sorted(run_dir.glob(".*.tmp"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


class DirLock:
    """An exclusive lock on a job's output directory, held for the life of the job (`with DirLock(dir):`).

    An advisory `flock` on DIR/.lock: the kernel drops it when the holder exits however it exits, so a lock left by
    a dead process is taken over (and said so, from the pid the file still names). A second job on the directory
    gets a UserError naming the holder.
    """

    def __init__(self, directory: Path, param: str = "out") -> None:
        self.path, self.param = directory / LOCK_NAME, param
        self.directory = directory
        self._fd: int | None = None
        self.took_over: str | None = None  # the dead holder's description, when its lock was taken over

    def __enter__(self) -> DirLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise UserError(
                f"another job is using this directory ({holder}); wait for it to finish or stop it",
                param=self.param,
                value=self.directory,
            ) from None
        previous = os.pread(fd, 200, 0).decode(errors="replace").strip()
        self.took_over = previous or None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # a clean exit leaves no holder to report
            os.close(self._fd)
            self._fd = None
