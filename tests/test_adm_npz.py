"""The streaming ADM .npz writer/reader against numpy's own np.load / np.savez."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from jitrs import adm_npz
from jitrs.errors import UserError


def test_streamed_file_is_what_np_load_reads(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 5, 6, 3), dtype=np.uint8)
    labels = np.arange(7, dtype=np.int64)
    path = tmp_path / "s.npz"
    adm_npz.write(path, images.shape, [images[:3], images[3:4], images[4:]], labels)
    with np.load(path) as f:
        assert np.array_equal(f["arr_0"], images) and np.array_equal(f["arr_1"], labels)
    assert not list(tmp_path.glob("*.tmp"))


def test_reading_in_batches_matches_np_savez(tmp_path: Path) -> None:
    images = np.random.default_rng(1).integers(0, 256, size=(10, 4, 4, 3), dtype=np.uint8)
    path = tmp_path / "ref.npz"
    np.savez(path, images, mu=np.zeros(3))
    assert adm_npz.image_shape(path) == (10, 4, 4, 3)
    assert set(adm_npz.keys(path)) == {"arr_0", "mu"}
    chunks = list(adm_npz.read_images(path, 4))
    assert [len(c) for c in chunks] == [4, 4, 2] and chunks[0].flags.writeable
    assert np.array_equal(np.concatenate(chunks), images)
    assert np.array_equal(np.concatenate(list(adm_npz.read_images(path, 4, limit=5))), images[:5])


def test_a_short_stream_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s.npz"
    with pytest.raises(ValueError, match="got 2 images"):
        adm_npz.write(path, (3, 2, 2, 3), [np.zeros((2, 2, 2, 3), np.uint8)], np.zeros(3, np.int64))
    assert not list(tmp_path.iterdir())


def test_bad_files_are_user_errors(tmp_path: Path) -> None:
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match=r"junk\.npz"):
        adm_npz.keys(tmp_path / "junk.npz")
    np.savez(tmp_path / "float.npz", np.zeros((2, 4, 4, 3), np.float32))
    with pytest.raises(UserError, match="uint8"):
        adm_npz.image_shape(tmp_path / "float.npz")
