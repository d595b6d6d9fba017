"""The layout of a run directory written by `jitrs train --out RUN`, and finding its newest checkpoint."""

from __future__ import annotations

import re
from pathlib import Path

from jitrs.errors import UserError

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)\.pt$")


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
