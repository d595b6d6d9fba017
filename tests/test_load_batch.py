"""jitrs.load_batch: equal to per-image decode + center_crop, equal to the official Pillow pipeline, the
out= path, error handling and threading."""

from __future__ import annotations

import io
import multiprocessing
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import jitrs


def adm_center_crop(im: Image.Image, size: int) -> np.ndarray:
    """The official JiT/ADM center crop, with Pillow: halve with BOX while the short side is at least
    2*size, BICUBIC to short side `size`, crop the middle."""
    while min(im.size) >= 2 * size:
        im = im.resize(tuple(x // 2 for x in im.size), resample=Image.BOX)
    scale = size / min(im.size)
    im = im.resize(tuple(round(x * scale) for x in im.size), resample=Image.BICUBIC)
    arr = np.asarray(im)
    top, left = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    return arr[top : top + size, left : left + size]


def pillow_pipeline(path: Path, size: int, flip: bool) -> np.ndarray:
    """The reference data path: Pillow decode, ADM crop, horizontal flip."""
    with Image.open(path) as im:
        arr = adm_center_crop(im.convert("RGB"), size)
    return arr[:, ::-1] if flip else arr


@pytest.fixture(scope="module")
def image_files(tmp_path_factory: pytest.TempPathFactory, real_photos: list[Path]) -> list[Path]:
    """The real photographs plus variants made from them: sizes around and below the crop size,
    progressive, grayscale, CMYK, a PNG named .JPEG."""
    out = tmp_path_factory.mktemp("images")
    paths = list(real_photos)
    with Image.open(real_photos[0]) as im:
        photo = im.convert("RGB")
    variants = [
        ("wide.jpg", photo.resize((1031, 300)), {"quality": 90}),
        ("tall.jpg", photo.resize((250, 777)), {"quality": 80, "progressive": True}),
        ("small.jpg", photo.resize((45, 37)), {"quality": 95, "subsampling": "4:4:4"}),
        ("gray.jpg", photo.resize((500, 375)).convert("L"), {"quality": 85}),
        ("cmyk.jpg", photo.resize((375, 500)).convert("CMYK"), {"quality": 90}),
    ]
    for name, im, options in variants:
        im.save(out / name, "JPEG", **options)
        paths.append(out / name)
    photo.resize((300, 260)).save(out / "png_named.JPEG", "PNG")
    paths.append(out / "png_named.JPEG")
    return paths


def test_batch_equals_per_image_decode_and_center_crop(image_files: list[Path]) -> None:
    # NOTE: needs jitrs.center_crop, which lands with the crop branch.
    size = 64
    flips = [i % 2 == 1 for i in range(len(image_files))]
    batch = jitrs.load_batch(image_files, size, flip=flips)
    assert batch.shape == (len(image_files), size, size, 3) and batch.dtype == np.uint8
    assert batch.flags.c_contiguous and batch.flags.writeable
    for got, path, flip in zip(batch, image_files, flips, strict=True):
        expected = jitrs.center_crop(jitrs.decode(path), size)
        np.testing.assert_array_equal(got, expected[:, ::-1] if flip else expected, err_msg=str(path))


@pytest.mark.parametrize("size", [32, 256])
def test_batch_matches_the_official_pillow_pipeline(image_files: list[Path], size: int) -> None:
    flips = [i % 3 == 0 for i in range(len(image_files))]
    batch = jitrs.load_batch(image_files, size, flip=flips)
    expected = np.stack([pillow_pipeline(p, size, f) for p, f in zip(image_files, flips, strict=True)])
    diff = np.abs(batch.astype(np.int16) - expected)
    # The bar: at least 99.9% of values equal, none off by more than 1.
    assert (diff == 0).mean() >= 0.999, f"{(diff == 0).mean():.6%} equal"
    assert diff.max() <= 1


def test_out_is_filled_in_place_and_returned(image_files: list[Path]) -> None:
    paths = image_files[:4]
    out = np.full((4, 48, 48, 3), 7, dtype=np.uint8)
    result = jitrs.load_batch(paths, 48, flip=[True, False, True, False], out=out)
    assert result is out
    np.testing.assert_array_equal(out, jitrs.load_batch(paths, 48, flip=[True, False, True, False]))


def test_out_may_be_a_view_of_a_larger_buffer(image_files: list[Path]) -> None:
    # Pinned host memory is typically one big buffer; a C-contiguous slice of it must be accepted.
    storage = np.zeros((10, 32, 32, 3), dtype=np.uint8)
    view = storage[2:5]
    assert jitrs.load_batch(image_files[:3], 32, out=view) is view
    np.testing.assert_array_equal(storage[2:5], jitrs.load_batch(image_files[:3], 32))
    assert not storage[:2].any() and not storage[5:].any()


@pytest.mark.parametrize(
    ("out", "error", "message"),
    [
        (np.zeros((2, 32, 32, 3), np.float32), TypeError, "dtype uint8, got float32"),
        (np.zeros((2, 32, 32, 4), np.uint8), ValueError, r"shape \(2, 32, 32, 3\), got \(2, 32, 32, 4\)"),
        (np.zeros((3, 32, 32, 3), np.uint8), ValueError, r"shape \(2, 32, 32, 3\), got \(3, 32, 32, 3\)"),
        (np.zeros((2, 32, 32), np.uint8), ValueError, r"got \(2, 32, 32\)"),
        (np.zeros((2, 32, 64, 3), np.uint8)[:, :, ::2], ValueError, "C-contiguous"),
        (np.zeros((2, 32, 32, 3), np.uint8, order="F"), ValueError, "C-contiguous"),
        ([[0]], TypeError, "numpy.ndarray, got list"),
    ],
)
def test_unusable_out_is_refused(image_files: list[Path], out: object, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        jitrs.load_batch(image_files[:2], 32, out=out)


def test_read_only_out_is_refused(image_files: list[Path]) -> None:
    out = np.zeros((2, 32, 32, 3), np.uint8)
    out.setflags(write=False)
    with pytest.raises(ValueError, match="out= cannot be written"):
        jitrs.load_batch(image_files[:2], 32, out=out)


@pytest.fixture
def bad_files(tmp_path: Path) -> dict[str, Path]:
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    text = tmp_path / "notes.JPEG"
    text.write_text("not an image\n")
    return {"missing": tmp_path / "missing.jpg", "corrupt": corrupt, "text": text}


def test_on_error_raise_names_the_first_bad_file_by_index(image_files: list[Path], bad_files: dict[str, Path]) -> None:
    good = image_files[0]
    with pytest.raises(FileNotFoundError, match=re.escape(str(bad_files["missing"]))):
        jitrs.load_batch([good, bad_files["missing"], bad_files["corrupt"]], 32)
    with pytest.raises(jitrs.DecodeError, match=re.escape(str(bad_files["corrupt"]))):
        jitrs.load_batch([good, good, bad_files["corrupt"], bad_files["missing"]] + [good] * 20, 32)


def test_on_error_skip_zeroes_bad_slots_and_lists_them(image_files: list[Path], bad_files: dict[str, Path]) -> None:
    good = image_files[:3]
    paths = [good[0], bad_files["missing"], good[1], bad_files["text"], bad_files["corrupt"], good[2]]
    out = np.full((len(paths), 40, 40, 3), 255, dtype=np.uint8)
    batch, failures = jitrs.load_batch(paths, 40, out=out, on_error="skip")
    assert batch is out
    assert [index for index, _ in failures] == [1, 3, 4]
    reasons = dict(failures)
    assert "no such file" in reasons[1] and str(bad_files["missing"]) in reasons[1]
    assert "not a JPEG or PNG" in reasons[3]
    assert str(bad_files["corrupt"]) in reasons[4]
    assert not batch[[1, 3, 4]].any(), "failed slots are zeroed"
    np.testing.assert_array_equal(batch[[0, 2, 5]], jitrs.load_batch(good, 40))
    clean, none_failed = jitrs.load_batch(good, 40, on_error="skip")
    assert none_failed == []
    np.testing.assert_array_equal(clean, batch[[0, 2, 5]])


def test_thread_counts_give_identical_batches(image_files: list[Path]) -> None:
    paths = image_files * 3
    flips = [i % 2 == 0 for i in range(len(paths))]
    one = jitrs.load_batch(paths, 96, flip=flips, threads=1)
    np.testing.assert_array_equal(one, jitrs.load_batch(paths, 96, flip=flips, threads=2))
    np.testing.assert_array_equal(one, jitrs.load_batch(paths, 96, flip=flips))


def _load_in_child(paths: list[Path]) -> np.ndarray:
    return jitrs.load_batch(paths, 32, threads=2)


def test_a_forked_child_can_load_after_the_parent_did(image_files: list[Path]) -> None:
    # A DataLoader forks workers after the parent may have used load_batch: the child must not wait
    # on the parent's pool threads, which do not exist in it.
    expected = jitrs.load_batch(image_files[:4], 32, threads=2)
    with multiprocessing.get_context("fork").Pool(1) as pool:
        got = pool.apply_async(_load_in_child, (image_files[:4],)).get(timeout=120)
    np.testing.assert_array_equal(got, expected)


def test_paths_and_flips_accept_common_types(image_files: list[Path]) -> None:
    as_str = jitrs.load_batch([str(p) for p in image_files[:3]], 24, flip=np.array([True, False, True]))
    as_path = jitrs.load_batch(tuple(image_files[:3]), 24, flip=(True, False, True))
    np.testing.assert_array_equal(as_str, as_path)
    assert jitrs.load_batch([], 24).shape == (0, 24, 24, 3)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"size": 0}, ValueError, "size must be a positive integer, got 0"),
        ({"flip": [True]}, ValueError, "flip has 1 entries for 2 images"),
        ({"flip": [1, 0]}, TypeError, r"flip\[0\] must be a bool, got int"),
        ({"threads": 0}, ValueError, "threads must be between 1 and 1024, got 0"),
        ({"on_error": "ignore"}, ValueError, "on_error must be 'raise' or 'skip'"),
        ({"max_pixels": -1}, ValueError, "max_pixels must be a positive integer"),
    ],
)
def test_bad_arguments_are_refused(
    image_files: list[Path], kwargs: dict[str, object], error: type, message: str
) -> None:
    arguments: dict[str, object] = {"sources": image_files[:2], "size": 32, **kwargs}
    with pytest.raises(error, match=message):
        jitrs.load_batch(**arguments)


def test_sources_must_be_a_sequence_of_sources(image_files: list[Path]) -> None:
    with pytest.raises(TypeError, match="not a single str"):
        jitrs.load_batch(str(image_files[0]), 32)
    with pytest.raises(TypeError, match=r"sources\[1\] must be a path \(str or os.PathLike\), bytes, or a"):
        jitrs.load_batch([image_files[0], 3], 32)
    with pytest.raises(TypeError, match=r"sources\[0\] must be \(path, offset, length\)"):
        jitrs.load_batch([(image_files[0], -1, 10)], 32)
    with pytest.raises(TypeError, match=r"sources\[0\] must be \(path, offset, length\)"):
        jitrs.load_batch([(image_files[0], 0)], 32)
    with pytest.raises(ValueError, match="names has 1 entries for 2 images"):
        jitrs.load_batch(image_files[:2], 32, names=["a"])
    with pytest.raises(TypeError, match=r"names\[0\] must be a str, got int"):
        jitrs.load_batch(image_files[:1], 32, names=[0])


def test_max_pixels_applies_to_each_image(image_files: list[Path]) -> None:
    small = next(p for p in image_files if p.name == "small.jpg")
    batch, failures = jitrs.load_batch([small, image_files[0]], 16, on_error="skip", max_pixels=45 * 37)
    assert [index for index, _ in failures] == [1]
    assert "max_pixels" in failures[0][1]
    assert batch[0].any()


# ----------------------------------------------------------------------------------------------------
# sources other than paths: bytes, byte ranges of a tar shard, names


@pytest.fixture(scope="module")
def shard(tmp_path_factory: pytest.TempPathFactory, image_files: list[Path]) -> tuple[Path, dict[str, tuple[int, int]]]:
    """An uncompressed tar (as webdataset shards are) of the image files plus a corrupt member, with
    each member's (offset, length) as tarfile reports them."""
    path = tmp_path_factory.mktemp("shard") / "train-000001.tar"
    with tarfile.open(path, "w") as tar:
        for file in image_files:
            tar.add(file, arcname=file.name)
        corrupt = b"\xff\xd8\xff\xe0 this is not really a JPEG"
        info = tarfile.TarInfo("corrupt.JPEG")
        info.size = len(corrupt)
        tar.addfile(info, io.BytesIO(corrupt))
    with tarfile.open(path) as tar:
        members = {m.name: (m.offset_data, m.size) for m in tar.getmembers()}
    return path, members


def test_bytes_and_tar_ranges_load_like_paths(image_files: list[Path], shard: tuple[Path, dict]) -> None:
    tar, members = shard
    flips = [i % 2 == 0 for i in range(len(image_files))]
    expected = jitrs.load_batch(image_files, 48, flip=flips)
    as_ranges = [(tar, *members[p.name]) for p in image_files]
    np.testing.assert_array_equal(jitrs.load_batch(as_ranges, 48, flip=flips), expected)
    as_bytes = [p.read_bytes() for p in image_files]
    np.testing.assert_array_equal(jitrs.load_batch(as_bytes, 48, flip=flips), expected)
    # Every kind in one batch, str and PathLike paths, bytearray and memoryview buffers.
    kinds = [str, lambda p: p, lambda p: p.read_bytes(), lambda p: bytearray(p.read_bytes())]
    kinds += [lambda p: memoryview(p.read_bytes()), lambda p: (str(tar), *members[p.name])]
    mixed = [kinds[i % len(kinds)](p) for i, p in enumerate(image_files)]
    np.testing.assert_array_equal(jitrs.load_batch(mixed, 48, flip=flips, threads=2), expected)


def test_errors_and_skip_reports_name_the_member(image_files: list[Path], shard: tuple[Path, dict]) -> None:
    tar, members = shard
    offset, length = members["corrupt.JPEG"]
    good = (tar, *members[image_files[0].name])
    sources = [good, (tar, offset, length), (tar, offset, length - 4), b"GIF89a junk", good]
    names = [f"{tar.name}:{n}" for n in ["a.JPEG", "corrupt.JPEG", "cut.JPEG", "junk.JPEG", "b.JPEG"]]
    with pytest.raises(jitrs.DecodeError, match=re.escape("cannot decode train-000001.tar:corrupt.JPEG: ")):
        jitrs.load_batch(sources, 32, names=names)
    batch, failures = jitrs.load_batch(sources, 32, names=names, on_error="skip")
    assert [i for i, _ in failures] == [1, 2, 3]
    for i, reason in failures:
        assert reason.startswith(f"cannot decode {names[i]}: "), reason
    np.testing.assert_array_equal(batch[[0, 4]], jitrs.load_batch([image_files[0]] * 2, 32))
    # Without names: a range is called path[start:end], bytes by their place in the batch.
    _, failures = jitrs.load_batch(sources, 32, on_error="skip")
    reasons = dict(failures)
    assert reasons[1].startswith(f"cannot decode {tar}[{offset}:{offset + length}]: ")
    assert reasons[3].startswith("cannot decode <bytes #3>: not a JPEG or PNG")


def test_a_range_past_the_end_or_a_missing_shard_is_an_os_error_naming_the_file(
    image_files: list[Path], shard: tuple[Path, dict]
) -> None:
    tar, _ = shard
    size = tar.stat().st_size
    with pytest.raises(OSError, match=re.escape(f"{tar}: bytes {size - 10}..{size + 90} run past its end")) as caught:
        jitrs.load_batch([image_files[0], (tar, size - 10, 100)], 32, names=["ok", "shard.tar:last.JPEG"])
    assert "shard.tar:last.JPEG" in str(caught.value)
    missing = tar.with_name("missing.tar")
    with pytest.raises(FileNotFoundError) as caught:
        jitrs.load_batch([(missing, 0, 10)], 32, names=["missing.tar:x.JPEG"])
    assert caught.value.filename == str(missing) and "missing.tar:x.JPEG" in str(caught.value)
    _, failures = jitrs.load_batch([(missing, 0, 10)], 32, on_error="skip")
    assert failures == [(0, f"{missing}[0:10]: {missing}: no such file")]
