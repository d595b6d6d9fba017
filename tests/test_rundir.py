from pathlib import Path

import pytest

from jitrs.errors import UserError
from jitrs.rundir import checkpoint_path, list_checkpoints, resolve_checkpoint


def test_newest_checkpoint_of_a_run_dir_is_the_highest_step(tmp_path: Path):
    for step in (5, 1200, 40):
        checkpoint_path(tmp_path, step).write_bytes(b"x")
    (tmp_path / "checkpoint-9999999.pt.tmp").write_bytes(b"partial")  # an interrupted write
    (tmp_path / "metrics.jsonl").write_text("{}")
    assert [s for s, _ in list_checkpoints(tmp_path)] == [5, 40, 1200]
    assert resolve_checkpoint(tmp_path) == tmp_path / "checkpoint-0001200.pt"
    assert resolve_checkpoint(tmp_path / "checkpoint-0000005.pt") == tmp_path / "checkpoint-0000005.pt"


def test_missing_and_empty_are_one_clear_error(tmp_path: Path):
    with pytest.raises(UserError, match="no checkpoint"):
        resolve_checkpoint(tmp_path, "resume")
    with pytest.raises(UserError, match="no such file"):
        resolve_checkpoint(tmp_path / "nope.pt")
