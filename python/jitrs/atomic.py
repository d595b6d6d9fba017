"""Atomic file writes, the one durability policy of jitrs: write a temporary file in the target's directory,
fsync it, rename it over the target, fsync the directory. A reader sees the old file or the new one, never a
torn one, and a crash leaves at most a hidden `.NAME.*.tmp` file behind."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from jitrs.errors import UserError

# mkstemp creates files 0600; outputs get the mode any other file of the user gets. Read once, at import, as
# reading the umask means setting it (process-wide) for a moment.
_UMASK = os.umask(0)
os.umask(_UMASK)
FILE_MODE, DIR_MODE = 0o666 & ~_UMASK, 0o777 & ~_UMASK


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # some filesystems do not open directories; the rename itself is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def naming(path: Path | str, instead_of: Path | None = None) -> Iterator[None]:
    """Give an OSError raised inside the block `path` as its file name when it names none (or names `instead_of`,
    a temporary file): a failed write() on a full disk names no file, and the CLI's one-line error must say
    which file could not be written."""
    try:
        yield
    except OSError as e:
        if e.filename is not None and (instead_of is None or os.fspath(e.filename) != os.fspath(instead_of)):
            raise
        raise OSError(e.errno, e.strerror or str(e), str(path)) from e


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` for the caller to write; on success it replaces `path` durably.

    The temporary name ends in .tmp: writers that pick a format by extension must be told the format.
    """
    path = Path(path)
    with naming(path):
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        with naming(path, instead_of=tmp):
            yield tmp
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.chmod(tmp, FILE_MODE)
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def writable_dir(directory: Path, param: str = "out", value: object = None) -> None:
    """Create `directory` if needed and prove a file can be written in it, before any long work; UserError naming
    `param` (given as `value`, default the directory) otherwise."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as e:
        shown = directory if value is None else value
        raise UserError(f"cannot write there ({e.strerror or e})", param=param, value=shown) from None
