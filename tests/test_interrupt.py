"""Ctrl-C during a long GIL-free call: a real SIGINT to a real child process must raise KeyboardInterrupt
before the call has done all its work, and leave only complete output files behind."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.skipif(os.name != "posix", reason="needs SIGINT and named pipes")

LOAD_CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    import jitrs

    paths = sys.argv[1:]
    out = np.full((len(paths), 32, 32, 3), 7, np.uint8)  # 7 everywhere: a slot still all 7 was never loaded
    print("started", flush=True)
    try:
        jitrs.load_batch(paths, 32, threads=1, out=out)
    except KeyboardInterrupt:
        untouched = (out == 7).all(axis=(1, 2, 3))
        print("interrupted", int(untouched.sum()), int(untouched[0]), flush=True)
    else:
        print("finished", flush=True)
    """
)


def test_ctrl_c_stops_load_batch_after_the_chunk_in_progress(tmp_path: Path, real_photos: list[Path]) -> None:
    # The first file is a named pipe: load_batch blocks reading it until this process writes the image, so the
    # SIGINT provably arrives while the call is running, whatever the machine's speed.
    fifo = tmp_path / "first.jpg"
    os.mkfifo(fifo)
    photo = real_photos[0]
    paths = [fifo] + [photo] * 300
    child = subprocess.Popen([sys.executable, "-c", LOAD_CHILD, *map(str, paths)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "started\n"
        # Opening without blocking fails (ENXIO) until load_batch has opened the pipe for reading.
        deadline = time.monotonic() + 120
        while True:
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError as e:
                if e.errno != errno.ENXIO:
                    raise
                assert child.poll() is None and time.monotonic() < deadline, "load_batch never opened the pipe"
                time.sleep(0.001)
        child.send_signal(signal.SIGINT)
        os.set_blocking(fd, True)
        with os.fdopen(fd, "wb") as pipe:
            pipe.write(photo.read_bytes())
        output, _ = child.communicate(timeout=300)
    finally:
        child.kill()
    word, untouched, first_untouched = output.split()
    assert word == "interrupted"
    # The chunk holding the pipe was finished (the pipe's image is loaded); the rest of the batch was not loaded.
    assert first_untouched == "0"
    assert 0 < int(untouched) < len(paths)


WRITE_CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    import jitrs

    directory, count = sys.argv[1], int(sys.argv[2])
    images = np.random.default_rng(0).integers(0, 256, (count, 64, 64, 3), dtype=np.uint8)
    paths = [f"{directory}/{i:05d}.png" for i in range(count)]
    print("started", flush=True)
    try:
        jitrs.write_pngs(images, paths, threads=2)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    else:
        print("finished", flush=True)
    """
)


def test_ctrl_c_stops_write_pngs_leaving_only_complete_files(tmp_path: Path) -> None:
    count = 4000
    out = tmp_path / "pngs"
    out.mkdir()
    child = subprocess.Popen(
        [sys.executable, "-c", WRITE_CHILD, str(out), str(count)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "started\n"
        # The first finished file proves write_pngs is running; the deadline only stops a hung test.
        deadline = time.monotonic() + 120
        while not any(name.endswith(".png") for name in os.listdir(out)):
            assert child.poll() is None and time.monotonic() < deadline, "write_pngs never wrote a file"
            time.sleep(0.001)
        child.send_signal(signal.SIGINT)
        output, _ = child.communicate(timeout=300)
    finally:
        child.kill()
    assert output == "interrupted\n"
    names = sorted(os.listdir(out))
    assert all(name.endswith(".png") and not name.startswith(".") for name in names), "no temporary files"
    assert 0 < len(names) < count
    images = np.random.default_rng(0).integers(0, 256, (count, 64, 64, 3), dtype=np.uint8)
    for name in names:
        with Image.open(out / name) as im:
            np.testing.assert_array_equal(np.array(im), images[int(name[:5])])
