"""The one atomic-write policy and the writable-directory probe, on real files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jitrs.atomic import FILE_MODE, atomic_path, atomic_write_text, writable_dir
from jitrs.errors import UserError


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half of the ne")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert os.stat(target).st_mode & 0o777 == FILE_MODE  # not mkstemp's 0600


def test_writable_dir_creates_it_or_names_the_option(tmp_path: Path) -> None:
    writable_dir(tmp_path / "new" / "dir")
    assert (tmp_path / "new" / "dir").is_dir() and not list((tmp_path / "new" / "dir").iterdir())
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a directory")
    with pytest.raises(UserError) as caught:
        writable_dir(blocker / "out")
    assert caught.value.for_cli().startswith(f"--out {blocker / 'out'}: cannot write there")
