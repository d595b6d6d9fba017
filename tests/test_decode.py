"""jitrs.decode against Pillow's Image.open(...).convert('RGB'), and every kind of bad input."""

from __future__ import annotations

import io
import re
import resource
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import jitrs

# ----------------------------------------------------------------------------------------------------
# helpers


def pillow_rgb(source: Path | bytes) -> np.ndarray:
    """The reference: what Pillow decodes, converted to RGB."""
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
        return np.asarray(im.convert("RGB"))


def jpeg_bytes(im: Image.Image, **save_options: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", **save_options)
    return buf.getvalue()


def png_bytes(im: Image.Image, **save_options: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG", **save_options)
    return buf.getvalue()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def raw_png(width: int, height: int, bit_depth: int, color_type: int, rows: list[bytes], extra: bytes = b"") -> bytes:
    """A PNG written by hand (filter type 0 on every row), for modes Pillow cannot write."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    idat = zlib.compress(b"".join(b"\x00" + row for row in rows))
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + extra + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def segment_offset(data: bytes, marker: bytes) -> int:
    """Offset of the first JPEG marker segment `marker` (e.g. b"\\xff\\xc0"), walking segment lengths."""
    i = 2
    while data[i : i + 2] != marker:
        assert data[i] == 0xFF, "not at a marker"
        i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
    return i


@pytest.fixture(scope="module")
def photo(real_photos: list[Path]) -> Image.Image:
    """A real photograph as a Pillow RGB image, the source of every generated test image."""
    with Image.open(real_photos[0]) as im:
        return im.convert("RGB")


def max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----------------------------------------------------------------------------------------------------
# JPEG: real photographs and generated variants, pixel-identical to Pillow


def test_real_photos_decode_exactly_like_pillow(real_photo: Path) -> None:
    expected = pillow_rgb(real_photo)
    for source in (real_photo, str(real_photo), real_photo.read_bytes()):
        got = jitrs.decode(source)
        assert got.dtype == np.uint8 and got.flags.c_contiguous
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("subsampling", ["4:4:4", "4:2:2", "4:2:0"])
@pytest.mark.parametrize("progressive", [False, True])
@pytest.mark.parametrize("quality", [75, 95])
def test_generated_jpegs_match_pillow(photo: Image.Image, subsampling: str, progressive: bool, quality: int) -> None:
    data = jpeg_bytes(photo, subsampling=subsampling, progressive=progressive, quality=quality)
    np.testing.assert_array_equal(jitrs.decode(data), pillow_rgb(data))


def test_restart_intervals_and_optimized_huffman_match_pillow(photo: Image.Image) -> None:
    for options in ({"restart_marker_blocks": 3}, {"restart_marker_rows": 1}, {"optimize": True}):
        data = jpeg_bytes(photo, quality=85, **options)
        if "restart_marker_blocks" in options or "restart_marker_rows" in options:
            assert b"\xff\xdd" in data, "Pillow wrote no DRI segment"
        np.testing.assert_array_equal(jitrs.decode(data), pillow_rgb(data), err_msg=str(options))


@pytest.mark.parametrize("size", [(1, 1), (17, 513), (513, 17), (2000, 3), (3, 2000), (33, 31)])
@pytest.mark.parametrize("subsampling", ["4:4:4", "4:2:0"])
def test_odd_sizes_match_pillow(photo: Image.Image, size: tuple[int, int], subsampling: str) -> None:
    data = jpeg_bytes(photo.resize(size, Image.BILINEAR), subsampling=subsampling, quality=90)
    got = jitrs.decode(data)
    assert got.shape == (size[1], size[0], 3)
    np.testing.assert_array_equal(got, pillow_rgb(data))


@pytest.mark.parametrize("progressive", [False, True])
def test_grayscale_jpeg_matches_pillow(photo: Image.Image, progressive: bool) -> None:
    data = jpeg_bytes(photo.convert("L"), quality=90, progressive=progressive)
    got = jitrs.decode(data)
    np.testing.assert_array_equal(got, pillow_rgb(data))
    np.testing.assert_array_equal(got[..., 0], got[..., 2])


def test_cmyk_jpeg_matches_pillow(photo: Image.Image) -> None:
    # Pillow writes CMYK JPEGs Adobe-style: inverted values and an APP14 "Adobe" segment.
    data = jpeg_bytes(photo.convert("CMYK"), quality=90)
    assert b"Adobe" in data
    expected = pillow_rgb(data)
    np.testing.assert_array_equal(jitrs.decode(data), expected)
    # It is a real colour image, not a degenerate one that would hide an inversion mistake.
    assert expected.std() > 30
    assert np.abs(expected.astype(int) - np.asarray(photo)).mean() < 10


def test_ycck_jpeg_matches_pillow(photo: Image.Image) -> None:
    # Adobe transform flag 2 declares YCCK; libjpeg then converts YCC->RGB->CMY before Pillow inverts.
    data = bytearray(jpeg_bytes(photo.convert("CMYK"), quality=90))
    transform_at = data.index(b"Adobe") + 11
    assert data[transform_at] == 0
    data[transform_at] = 2
    np.testing.assert_array_equal(jitrs.decode(bytes(data)), pillow_rgb(bytes(data)))


def test_cmyk_jpeg_without_adobe_segment_is_inverted_like_pillow(photo: Image.Image) -> None:
    data = jpeg_bytes(photo.convert("CMYK"), quality=90)
    start = segment_offset(data, b"\xff\xee")
    length = struct.unpack(">H", data[start + 2 : start + 4])[0]
    stripped = data[:start] + data[start + 2 + length :]
    assert b"Adobe" not in stripped
    np.testing.assert_array_equal(jitrs.decode(stripped), pillow_rgb(stripped))


def test_corrupt_data_that_pillow_tolerates_decodes_identically(photo: Image.Image) -> None:
    data = jpeg_bytes(photo, quality=90)
    # Garbage before EOI: libjpeg warns "extraneous bytes before marker 0xd9"; Pillow ignores it.
    extraneous = data[:-2] + b"\x12\x34\x56" + data[-2:]
    np.testing.assert_array_equal(jitrs.decode(extraneous), pillow_rgb(extraneous))
    # Damaged entropy-coded data: libjpeg warns and resynchronises; the pixels must still agree.
    sos = segment_offset(data, b"\xff\xda")
    damaged = bytearray(data)
    for offset in range(sos + 400, len(data) - 400, 997):
        damaged[offset] = 0x00 if damaged[offset - 1] == 0xFF else damaged[offset] ^ 0x5A
    np.testing.assert_array_equal(jitrs.decode(bytes(damaged)), pillow_rgb(bytes(damaged)))


def test_trailing_bytes_after_eoi_are_ignored(photo: Image.Image) -> None:
    data = jpeg_bytes(photo, quality=80)
    np.testing.assert_array_equal(jitrs.decode(data + b"\x00" * 100 + b"tail"), pillow_rgb(data))


def test_format_is_told_by_content_not_name(tmp_path: Path, photo: Image.Image) -> None:
    # ImageNet has a PNG (and CMYK JPEGs) named .JPEG.
    path = tmp_path / "n02105855_2933.JPEG"
    path.write_bytes(png_bytes(photo.resize((120, 90))))
    np.testing.assert_array_equal(jitrs.decode(path), pillow_rgb(path))
    jpeg_named_png = tmp_path / "photo.png"
    jpeg_named_png.write_bytes(jpeg_bytes(photo))
    np.testing.assert_array_equal(jitrs.decode(jpeg_named_png), pillow_rgb(jpeg_named_png))


# ----------------------------------------------------------------------------------------------------
# PNG: every mode, against Pillow


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "P", "1"])
def test_png_modes_match_pillow(photo: Image.Image, mode: str) -> None:
    im = photo.resize((97, 61))
    if mode == "RGBA" or mode == "LA":
        # Varying alpha: convert('RGB') drops it without compositing.
        alpha = Image.linear_gradient("L").resize(im.size)
        im = im.convert(mode[:-1])
        im.putalpha(alpha)
    else:
        im = im.convert(mode)
    data = png_bytes(im)
    got = jitrs.decode(data)
    assert got.shape == (61, 97, 3)
    np.testing.assert_array_equal(got, pillow_rgb(data))


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_low_bit_depth_palette_png_matches_pillow(photo: Image.Image, bits: int) -> None:
    im = photo.resize((50, 33)).quantize(colors=2**bits)
    data = png_bytes(im, bits=bits)
    assert data[24] == bits, "Pillow did not write the requested bit depth"
    np.testing.assert_array_equal(jitrs.decode(data), pillow_rgb(data))


def test_palette_png_with_transparency_matches_pillow(photo: Image.Image) -> None:
    im = photo.resize((40, 30)).quantize(colors=16)
    data = png_bytes(im, transparency=3)
    assert b"tRNS" in data
    np.testing.assert_array_equal(jitrs.decode(data), pillow_rgb(data))


@pytest.mark.parametrize("bits", [2, 4])
def test_low_bit_depth_gray_png_matches_pillow(bits: int) -> None:
    width, height = 11, 5
    values = np.arange(width * height).reshape(height, width) % (2**bits)
    per_byte = 8 // bits
    rows = []
    for row in values:
        padded = np.concatenate([row, np.zeros(-len(row) % per_byte, dtype=row.dtype)])
        groups = padded.reshape(-1, per_byte)
        shifts = bits * np.arange(per_byte - 1, -1, -1)
        rows.append(bytes((groups << shifts).sum(axis=1).astype(np.uint8)))
    data = raw_png(width, height, bits, 0, rows)
    got = jitrs.decode(data)
    np.testing.assert_array_equal(got, pillow_rgb(data))
    np.testing.assert_array_equal(got[..., 1], values * (255 // (2**bits - 1)))


def test_gray_png_with_trns_matches_pillow() -> None:
    rows = [bytes(range(i, i + 8)) for i in range(0, 48, 8)]
    data = raw_png(8, 6, 8, 0, rows, extra=png_chunk(b"tRNS", struct.pack(">H", 5)))
    np.testing.assert_array_equal(jitrs.decode(data), pillow_rgb(data))


@pytest.mark.parametrize("color_type", [2, 6])
def test_16_bit_colour_png_keeps_the_high_byte_like_pillow(color_type: int) -> None:
    rng = np.random.default_rng(0)
    channels = 3 if color_type == 2 else 4
    samples = rng.integers(0, 65536, size=(7, 9, channels), dtype=np.uint16)
    rows = [row.astype(">u2").tobytes() for row in samples]
    data = raw_png(9, 7, 16, color_type, rows)
    got = jitrs.decode(data)
    np.testing.assert_array_equal(got, pillow_rgb(data))
    np.testing.assert_array_equal(got, (samples[..., :3] >> 8).astype(np.uint8))


def test_16_bit_gray_png_keeps_the_high_byte_where_pillow_clamps() -> None:
    # Documented difference: Pillow's I;16 -> RGB clamps at 255 (nearly all white); we scale.
    samples = np.array([[0, 255, 256, 4660, 65535]], dtype=np.uint16)
    data = raw_png(5, 1, 16, 0, [samples[0].astype(">u2").tobytes()])
    got = jitrs.decode(data)
    np.testing.assert_array_equal(got[0, :, 0], [0, 0, 1, 0x12, 255])
    np.testing.assert_array_equal(pillow_rgb(data)[0, :, 0], [0, 255, 255, 255, 255])


# ----------------------------------------------------------------------------------------------------
# bad input: the right exception, naming the file and the reason


def test_missing_file_is_file_not_found(tmp_path: Path) -> None:
    path = tmp_path / "nope.jpg"
    with pytest.raises(FileNotFoundError, match=r"nope\.jpg") as info:
        jitrs.decode(path)
    assert info.value.filename == str(path)


def test_directory_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError, match=re.escape(str(tmp_path))):
        jitrs.decode(tmp_path)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty"),
        (b"just some text, not an image\n", "not a JPEG or PNG"),
        (bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8)), "not a JPEG or PNG"),
        (b"GIF89a" + bytes(100), "not a JPEG or PNG"),
    ],
)
def test_non_images_raise_decode_error_naming_the_file(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "bad.JPEG"
    path.write_bytes(content)
    with pytest.raises(jitrs.DecodeError, match=reason) as info:
        jitrs.decode(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.5, 0.9, 0.999])
@pytest.mark.parametrize("progressive", [False, True])
def test_truncated_jpeg_is_an_error_like_pillow(
    tmp_path: Path, photo: Image.Image, fraction: float, progressive: bool
) -> None:
    data = jpeg_bytes(photo, quality=90, progressive=progressive)
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(jitrs.DecodeError, match="truncated") as info:
        jitrs.decode(path)
    assert str(path) in str(info.value)
    with pytest.raises(OSError), Image.open(path) as im:  # Pillow refuses it too
        im.convert("RGB")


def test_truncated_after_a_tolerated_warning_is_still_an_error(photo: Image.Image) -> None:
    # libjpeg reports only its first warning: the cut must not hide behind an earlier one.
    data = jpeg_bytes(photo, quality=90, progressive=True)
    sos = segment_offset(data, b"\xff\xda")
    with_garbage = data[:sos] + b"\x00\x00\x00" + data[sos:]
    np.testing.assert_array_equal(jitrs.decode(with_garbage), pillow_rgb(with_garbage))
    with pytest.raises(jitrs.DecodeError, match="truncated"):
        jitrs.decode(with_garbage[: len(with_garbage) * 3 // 4])


def test_random_bytes_behind_a_jpeg_signature_raise_decode_error() -> None:
    rng = np.random.default_rng(2)
    for _ in range(20):
        junk = b"\xff\xd8\xff" + bytes(rng.integers(0, 256, 3000, dtype=np.uint8))
        with pytest.raises(jitrs.DecodeError):
            jitrs.decode(junk)


def test_truncated_and_corrupt_png_raise_decode_error(photo: Image.Image) -> None:
    data = png_bytes(photo.resize((64, 48)))
    with pytest.raises(jitrs.DecodeError, match="truncated"):
        jitrs.decode(data[: len(data) // 2])
    corrupt = bytearray(data)
    corrupt[data.index(b"IDAT") + 20] ^= 0xFF  # inside the compressed pixels
    with pytest.raises(jitrs.DecodeError, match="PNG"):
        jitrs.decode(bytes(corrupt))


def test_absurd_declared_jpeg_size_fails_fast_without_allocating(photo: Image.Image) -> None:
    data = bytearray(jpeg_bytes(photo.resize((64, 48)), quality=80))
    sof = segment_offset(data, b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 60000, 60000)  # height, width
    before = max_rss_mib()
    with pytest.raises(jitrs.DecodeError, match="max_pixels") as info:
        jitrs.decode(bytes(data))
    assert "60000x60000" in str(info.value)
    # 60000^2 RGB pixels would be 10 GB; the refusal comes before any pixel buffer.
    assert max_rss_mib() - before < 100


def test_absurd_declared_png_size_fails_fast_without_allocating() -> None:
    data = raw_png(2, 2, 8, 2, [bytes(6), bytes(6)])
    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    forged = data[:8] + png_chunk(b"IHDR", ihdr) + data[8 + 25 :]
    before = max_rss_mib()
    with pytest.raises(jitrs.DecodeError, match="max_pixels"):
        jitrs.decode(forged)
    assert max_rss_mib() - before < 100


def test_max_pixels_is_a_limit_on_the_declared_size(photo: Image.Image) -> None:
    data = jpeg_bytes(photo.resize((100, 50)))
    assert jitrs.decode(data, max_pixels=5000).shape == (50, 100, 3)
    with pytest.raises(jitrs.DecodeError, match="max_pixels=4999"):
        jitrs.decode(data, max_pixels=4999)
    assert jitrs._native.DEFAULT_MAX_PIXELS == 2 * Image.MAX_IMAGE_PIXELS


def test_bad_arguments_raise_type_and_value_errors(real_photo: Path) -> None:
    with pytest.raises(TypeError, match=r"source must be a path \(str or os.PathLike\), bytes, or a"):
        jitrs.decode(123)
    with pytest.raises(ValueError, match="max_pixels must be a positive integer"):
        jitrs.decode(real_photo, max_pixels=0)


def test_buffers_and_byte_ranges_decode_like_the_file(tmp_path: Path, real_photo: Path) -> None:
    data = real_photo.read_bytes()
    expected = pillow_rgb(real_photo)
    container = tmp_path / "container.bin"
    container.write_bytes(b"x" * 1000 + data + b"y" * 10)
    ranges = [(container, 1000, len(data)), (str(container), 1000, len(data))]
    for source in [data, bytearray(data), memoryview(data), *ranges]:
        np.testing.assert_array_equal(jitrs.decode(source), expected, err_msg=type(source).__name__)


def test_errors_call_the_image_by_its_name(tmp_path: Path) -> None:
    container = tmp_path / "shard.tar"
    container.write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG" + bytes(100))
    with pytest.raises(jitrs.DecodeError, match=re.escape("cannot decode shard.tar:a.JPEG: ")):
        jitrs.decode((container, 0, 50), name="shard.tar:a.JPEG")
    with pytest.raises(jitrs.DecodeError, match=re.escape(f"cannot decode {container}[0:50]: ")):
        jitrs.decode((container, 0, 50))
    with pytest.raises(jitrs.DecodeError, match=re.escape("cannot decode the image bytes: not a JPEG or PNG")):
        jitrs.decode(b"GIF89a")
    with pytest.raises(jitrs.DecodeError, match=re.escape("cannot decode upload.png: not a JPEG or PNG")):
        jitrs.decode(bytearray(b"GIF89a"), name="upload.png")
    with pytest.raises(OSError, match=re.escape(f"{container}: bytes 100..300 run past its end (122 bytes)")):
        jitrs.decode((container, 100, 200))
