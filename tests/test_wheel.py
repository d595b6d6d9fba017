"""The abi3 wheel: it installs into a venv of another CPython minor version than .venv's, and its extension
decodes there exactly as .venv's does; a build without nasm stops with one sentence.

scripts/setup.sh packs the wheel into dist/ and scripts/wheel_test_env.sh finds the other CPython and caches the
wheels of the light dependencies (numpy, typer, rich) under .venv/wheel-test/, so this runs offline. torch is
not installed there (2.6 GB): `import jitrs`, its data core and the command line's help do not need it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import jitrs

ROOT = Path(__file__).resolve().parents[1]
WHEEL_TEST = ROOT / ".venv" / "wheel-test"


def _run(cmd: list[str | Path], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300, **kwargs)


@pytest.fixture(scope="module")
def wheel() -> Path:
    wheels = sorted(ROOT.glob("dist/jitrs-*-abi3-*.whl"), key=lambda p: p.stat().st_mtime)
    assert wheels, "dist/ holds no jitrs abi3 wheel: run scripts/setup.sh (or make wheel)"
    return wheels[-1]


@pytest.fixture(scope="module")
def other_venv(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Path:
    """A venv of the other CPython with the wheel (not its deps) and numpy, typer, rich from the local cache."""
    if (WHEEL_TEST / "none").exists():
        pytest.skip("no CPython of another minor version than .venv's here (pyenv or python3.X on PATH)")
    assert (WHEEL_TEST / "python").exists(), "no .venv/wheel-test/python: run scripts/setup.sh"
    venv = tmp_path_factory.mktemp("abi3") / "venv"
    # Without its own pip, which takes seconds to install: .venv's pip installs into it (pip --python).
    made = _run([WHEEL_TEST / "python", "-m", "venv", "--without-pip", venv])
    assert made.returncode == 0, made.stderr
    # The cache holds exactly numpy, typer, rich and their dependencies: all of it, with no resolving to do.
    pip = [sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "-q", "--no-index"]
    installed = _run([*pip, "--no-deps", "--no-compile", *sorted((WHEEL_TEST / "wheels").glob("*.whl")), wheel])
    assert installed.returncode == 0, installed.stderr
    return venv


def test_other_venv_is_another_minor_version(other_venv: Path) -> None:
    out = _run([other_venv / "bin" / "python", "-c", "import sys; print(sys.version_info[:2])"])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() != str(sys.version_info[:2])


def test_wheel_load_batch_equals_venv(other_venv: Path, real_photos: list[Path], tmp_path: Path) -> None:
    flip = [i % 2 == 1 for i in range(len(real_photos))]
    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        import jitrs

        paths, out = sys.argv[1:-1], sys.argv[-1]
        flip = [i % 2 == 1 for i in range(len(paths))]
        np.save(out, jitrs.load_batch(paths, 96, flip=flip, threads=2))
        print(jitrs._native.__file__)
        """
    )
    out = tmp_path / "batch.npy"
    ran = _run([other_venv / "bin" / "python", "-c", script, *real_photos, out])
    assert ran.returncode == 0, ran.stderr
    assert Path(ran.stdout.strip()).is_relative_to(other_venv), ran.stdout  # the wheel's, not the repo's
    theirs = np.load(out)
    ours = jitrs.load_batch(real_photos, 96, flip=flip, threads=2)
    assert theirs.shape == (len(real_photos), 96, 96, 3)
    np.testing.assert_array_equal(theirs, ours)


def test_console_script_help_without_torch(other_venv: Path) -> None:
    ran = _run([other_venv / "bin" / "jitrs", "--help"])
    assert ran.returncode == 0, ran.stderr
    assert all(command in ran.stdout for command in ("train", "sample", "eval", "toy"))
    ran = _run([other_venv / "bin" / "jitrs", "train", "--help"])
    assert ran.returncode == 0 and "--overwrite" in ran.stdout, ran.stderr


def test_build_without_nasm_stops_with_one_sentence(tmp_path: Path) -> None:
    # PATH as it is, but a folder that holds an assembler is replaced by links to everything else in it.
    assemblers = {"nasm", "yasm"}
    dirs = []
    for i, d in enumerate(os.environ["PATH"].split(os.pathsep)):
        if any(Path(d, a).exists() for a in assemblers):
            mirror = tmp_path / f"bin{i}"
            mirror.mkdir()
            for entry in Path(d).iterdir():
                if entry.name not in assemblers:
                    (mirror / entry.name).symlink_to(entry)
            d = str(mirror)
        dirs.append(d)
    path = os.pathsep.join(dirs)
    assert shutil.which("nasm", path=path) is None and shutil.which("cargo", path=path) is not None
    env = {k: v for k, v in os.environ.items() if k != "ASM_NASM"}
    # Should the check ever let the build through, it fails at once instead of compiling for minutes.
    env |= {"PATH": path, "CARGO": "false", "CARGO_TARGET_DIR": str(tmp_path / "target")}
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-w", tmp_path, ROOT]
    ran = _run(cmd, env=env)
    assert ran.returncode != 0
    output = ran.stdout + ran.stderr
    assert "there is none on PATH: install it with `apt-get install nasm`" in output, output
    assert "panicked" not in output and "CMake Error" not in output, output
