"""jitrs.patchify / jitrs.unpatchify against numpy reshape/transpose and JiT's own unpatchify."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import jitrs

DTYPES = [np.uint8, np.float16, np.float32, np.float64]


def random_bits(rng: np.random.Generator, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """Arbitrary bit patterns (NaN payloads, -0.0, infinities included), so equality is bit-exactness."""
    dt = np.dtype(dtype)
    bits = rng.integers(0, 2 ** (8 * dt.itemsize), size=shape, dtype=np.dtype(f"u{dt.itemsize}"))
    return bits.view(dt)


def bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.dtype(f"u{a.dtype.itemsize}"))


def ref_patchify(x: np.ndarray, p: int, channels_last: bool = True) -> np.ndarray:
    """(B,H,W,C) or (H,W,C) (channel-first with channels_last=False) -> tokens, by reshape/transpose."""
    batched = x.ndim == 4
    if not batched:
        x = x[None]
    if not channels_last:
        x = x.transpose(0, 2, 3, 1)
    b, h, w, c = x.shape
    t = x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    t = t.reshape(b, (h // p) * (w // p), p * p * c)
    return t if batched else t[0]


def ref_unpatchify(t: np.ndarray, p: int, h: int, w: int, channels_last: bool = True) -> np.ndarray:
    batched = t.ndim == 3
    if not batched:
        t = t[None]
    b, _, d = t.shape
    c = d // (p * p)
    x = t.reshape(b, h // p, w // p, p, p, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
    if not channels_last:
        x = x.transpose(0, 3, 1, 2)
    return x if batched else x[0]


def strided_variants(x: np.ndarray) -> dict[str, np.ndarray]:
    """The same logical array stored in different ways: every variant equals x element for element."""
    big = np.zeros((x.shape[0] * 2, *x.shape[1:]), x.dtype)
    big[::2] = x
    flipped = np.ascontiguousarray(x[::-1, ..., ::-1])[::-1, ..., ::-1]
    transposed = np.ascontiguousarray(np.moveaxis(x, -1, 0))
    return {
        "contiguous": x,
        "step-slice": big[::2],
        "negative": flipped,
        "last-axis-first-in-memory": np.moveaxis(transposed, 0, -1),
        "fortran": np.asfortranarray(x),
    }


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("p", [1, 2, 4])
def test_patchify_matches_numpy_and_round_trips(dtype, channels_last, batched, p):
    rng = np.random.default_rng(0)
    hw_c = (8, 12, 3) if channels_last else (3, 8, 12)
    x = random_bits(rng, (2, *hw_c) if batched else hw_c, dtype)
    for name, view in strided_variants(x).items():
        tokens = jitrs.patchify(view, p, channels_last=channels_last)
        assert tokens.dtype == x.dtype and tokens.flags.c_contiguous, name
        np.testing.assert_array_equal(bits(tokens), bits(ref_patchify(x, p, channels_last)), err_msg=name)
        back = jitrs.unpatchify(tokens, p, 8, 12, channels_last=channels_last)
        assert back.shape == x.shape and back.dtype == x.dtype
        np.testing.assert_array_equal(bits(back), bits(x), err_msg=name)


@pytest.mark.parametrize("dtype", DTYPES)
def test_unpatchify_reads_strided_tokens(dtype):
    rng = np.random.default_rng(1)
    tokens = random_bits(rng, (3, 6, 4 * 4 * 2), dtype)
    for name, view in strided_variants(tokens).items():
        for channels_last in (True, False):
            got = jitrs.unpatchify(view, 4, 8, 12, channels_last=channels_last)
            want = ref_unpatchify(tokens, 4, 8, 12, channels_last)
            np.testing.assert_array_equal(bits(got), bits(want), err_msg=f"{name} {channels_last}")


def test_token_layout_is_jits_unpatchify():
    """JiT's final layer output goes through reshape (N,h,w,p,p,C) + einsum 'nhwpqc->nchpwq'."""
    n, h, w, p, c = 2, 3, 5, 4, 3
    tokens = torch.randn(n, h * w, p * p * c)
    x = tokens.reshape(n, h, w, p, p, c)
    jit_images = torch.einsum("nhwpqc->nchpwq", x).reshape(n, c, h * p, w * p).numpy()
    ours = jitrs.unpatchify(tokens.numpy(), p, h * p, w * p, channels_last=False)
    np.testing.assert_array_equal(ours, jit_images)
    # And patchify of the image gives back the model's patch vectors.
    np.testing.assert_array_equal(jitrs.patchify(jit_images, p, channels_last=False), tokens.numpy())


def test_large_inputs_use_the_parallel_path_correctly():
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (6, 256, 256, 3), dtype=np.uint8)  # 1.2 MB: above the single-thread limit
    np.testing.assert_array_equal(jitrs.patchify(x, 16), ref_patchify(x, 16))
    xf = rng.standard_normal((4, 3, 256, 256), dtype=np.float32)
    tokens = jitrs.patchify(xf, 32, channels_last=False)
    np.testing.assert_array_equal(tokens, ref_patchify(xf, 32, channels_last=False))
    np.testing.assert_array_equal(jitrs.unpatchify(tokens, 32, 256, 256, channels_last=False), xf)
    np.testing.assert_array_equal(
        jitrs.unpatchify(tokens[::-1], 32, 256, 256), ref_unpatchify(tokens[::-1], 32, 256, 256)
    )


def test_output_is_a_fresh_writable_array():
    x = np.arange(4 * 4 * 3, dtype=np.float32).reshape(4, 4, 3)
    tokens = jitrs.patchify(x, 2)
    assert not np.shares_memory(tokens, x) and tokens.flags.writeable
    tokens[:] = 0
    assert x.sum() > 0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batched", [True, False])
def test_out_is_filled_in_place_and_returned(dtype, batched):
    rng = np.random.default_rng(4)
    x = random_bits(rng, (2, 8, 12, 3) if batched else (8, 12, 3), dtype)
    tokens = np.full(ref_patchify(x, 4).shape, 7, dtype)
    assert jitrs.patchify(x, 4, out=tokens) is tokens
    np.testing.assert_array_equal(bits(tokens), bits(ref_patchify(x, 4)))
    for channels_last in (True, False):
        want = ref_unpatchify(tokens, 4, 8, 12, channels_last)
        image = np.empty(want.shape, dtype)
        assert jitrs.unpatchify(tokens, 4, 8, 12, channels_last=channels_last, out=image) is image
        np.testing.assert_array_equal(bits(image), bits(want))


@pytest.mark.parametrize(
    ("shape", "dtype", "p"), [((48, 256, 256, 3), np.uint8, 16), ((4, 512, 512, 3), np.float32, 32)]
)
def test_large_outputs_exact_whatever_their_alignment(shape, dtype, p):
    """Outputs of 8 MB and more are written with streaming stores when 16-byte aligned; an out= view one
    element into a buffer is aligned for its dtype but not to 16 bytes, and must come out the same."""
    rng = np.random.default_rng(5)
    x = random_bits(rng, shape, dtype)
    want = ref_patchify(x, p)
    assert want.nbytes >= 8 << 20
    np.testing.assert_array_equal(bits(jitrs.patchify(x, p)), bits(want))
    storage = np.zeros(want.size + 1, dtype)
    shifted = storage[1:].reshape(want.shape)
    assert shifted.ctypes.data % 16 != 0
    np.testing.assert_array_equal(bits(jitrs.patchify(x, p, out=shifted)), bits(want))
    assert storage[0] == 0
    image = np.empty(shape, dtype)
    np.testing.assert_array_equal(bits(jitrs.unpatchify(want, p, *shape[1:3], out=image)), bits(x))


def test_unusable_out_is_refused_before_anything_is_written():
    x = np.arange(2 * 8 * 8 * 3, dtype=np.float32).reshape(2, 8, 8, 3)
    good = ref_patchify(x, 4)
    read_only = np.zeros_like(good)
    read_only.flags.writeable = False
    cases = [
        (np.zeros((2, 4, 47), np.float32), ValueError, "patchify: out= must have shape (2, 4, 48), got (2, 4, 47)"),
        (np.zeros_like(good, dtype=np.float64), TypeError, "patchify: out= must have dtype float32, got float64"),
        (np.zeros((2, 4, 96), np.float32)[..., ::2], ValueError, "C-contiguous"),
        (read_only, ValueError, "cannot be written"),
        ([[0.0]], TypeError, "patchify: out= must be a numpy.ndarray, got list"),
    ]
    for out, exc, message in cases:
        with pytest.raises(exc) as info:
            jitrs.patchify(x, 4, out=out)
        assert message in str(info.value)
        if isinstance(out, np.ndarray):
            assert not out.any()
    # out= sharing memory with the input would read already-overwritten values.
    buffer = np.arange(2 * 4 * 48, dtype=np.float32)
    with pytest.raises(ValueError, match="out= shares memory with the input"):
        jitrs.patchify(buffer.reshape(2, 8, 8, 3), 4, out=buffer.reshape(2, 4, 48))
    np.testing.assert_array_equal(buffer, np.arange(2 * 4 * 48, dtype=np.float32))
    with pytest.raises(ValueError, match="unpatchify: out= shares memory"):
        jitrs.unpatchify(good, 4, 8, 8, out=good.reshape(2, 8, 8, 3))
    # A wrong token shape is named as such, not as an out= mismatch.
    with pytest.raises(ValueError, match="expected 4 tokens"):
        jitrs.unpatchify(good[:, :3], 4, 8, 8, out=np.zeros((2, 8, 8, 3), np.float32))


def test_out_in_the_same_buffer_as_the_input_but_apart_from_it_is_accepted():
    x = np.arange(2 * 8 * 8 * 3, dtype=np.float32).reshape(2, 8, 8, 3)
    buffer = np.zeros(2 * x.size, np.float32)
    src, out = buffer[: x.size].reshape(x.shape), buffer[x.size :].reshape(2, 4, 48)
    src[...] = x
    assert jitrs.patchify(src, 4, out=out) is out
    np.testing.assert_array_equal(out, ref_patchify(x, 4))
    np.testing.assert_array_equal(src, x)


def test_a_batch_of_several_chunks_is_exact():
    """Outputs over 64 MiB are produced in chunks of the batch (Ctrl-C is checked between them); a reversed batch
    axis makes each chunk start from a different place in the input."""
    rng = np.random.default_rng(6)
    x = random_bits(rng, (44, 256, 256, 3), np.float64)[::-1]
    want = ref_patchify(x, 16)
    assert want.nbytes > 64 << 20
    tokens = jitrs.patchify(x, 16)
    np.testing.assert_array_equal(bits(tokens), bits(want))
    np.testing.assert_array_equal(bits(jitrs.unpatchify(tokens, 16, 256, 256)), bits(x))


def test_unaligned_and_byteswapped_inputs():
    x = np.random.default_rng(3).standard_normal((8, 8, 3)).astype(np.float32)
    raw = bytearray(x.nbytes + 1)
    unaligned = np.frombuffer(raw, dtype=np.float32, offset=1, count=x.size).reshape(x.shape)
    unaligned.flags.writeable = True
    unaligned[...] = x
    assert not unaligned.flags.aligned
    np.testing.assert_array_equal(jitrs.patchify(unaligned, 4), ref_patchify(x, 4))
    swapped = x.astype(">f4")
    tokens = jitrs.patchify(swapped, 4)
    assert tokens.dtype == np.dtype(">f4")
    np.testing.assert_array_equal(tokens, ref_patchify(x, 4))


def test_broadcast_and_read_only_inputs():
    x = np.broadcast_to(np.arange(3, dtype=np.float32), (2, 4, 4, 3))  # zero strides
    np.testing.assert_array_equal(jitrs.patchify(x, 2), ref_patchify(x, 2))
    y = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    y.flags.writeable = False
    np.testing.assert_array_equal(jitrs.patchify(y, 2), ref_patchify(y, 2))


def test_empty_batch():
    x = np.zeros((0, 32, 32, 3), np.uint8)
    assert jitrs.patchify(x, 16).shape == (0, 4, 768)
    assert jitrs.unpatchify(np.zeros((0, 4, 768), np.uint8), 16, 32, 32).shape == (0, 32, 32, 3)


@settings(max_examples=60, deadline=None)
@given(
    dtype=st.sampled_from(DTYPES),
    p=st.integers(1, 5),
    grid=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    c=st.integers(1, 4),
    batch=st.one_of(st.none(), st.integers(0, 3)),
    channels_last=st.booleans(),
    variant=st.sampled_from(["contiguous", "step-slice", "negative", "last-axis-first-in-memory", "fortran"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_round_trip_and_reference(dtype, p, grid, c, batch, channels_last, variant, seed):
    h, w = grid[0] * p, grid[1] * p
    image = (h, w, c) if channels_last else (c, h, w)
    shape = image if batch is None else (batch, *image)
    x = random_bits(np.random.default_rng(seed), shape, dtype)
    view = strided_variants(x)[variant] if x.size else x
    tokens = jitrs.patchify(view, p, channels_last=channels_last)
    np.testing.assert_array_equal(bits(tokens), bits(ref_patchify(x, p, channels_last)))
    back = jitrs.unpatchify(tokens, p, h, w, channels_last=channels_last)
    np.testing.assert_array_equal(bits(back), bits(x))


@pytest.mark.parametrize(
    ("call", "exc", "parts"),
    [
        (
            lambda: jitrs.patchify(np.zeros((2, 30, 32, 3), np.uint8), 16),
            ValueError,
            ["(2, 30, 32, 3)", "p=16"],
        ),
        (lambda: jitrs.patchify(np.zeros((32, 32, 3), np.uint8), 0), ValueError, ["(32, 32, 3)", "p=0"]),
        (lambda: jitrs.patchify(np.zeros((32, 32, 3), np.uint8), -2), ValueError, ["p=-2", ">= 1"]),
        (lambda: jitrs.patchify(np.zeros((32, 32), np.uint8), 16), ValueError, ["(32, 32)", "(H, W, C)"]),
        (
            lambda: jitrs.patchify(np.zeros((1, 1, 32, 32, 3), np.float32), 16, channels_last=False),
            ValueError,
            ["(1, 1, 32, 32, 3)", "(C, H, W)"],
        ),
        (lambda: jitrs.patchify(np.zeros((32, 32, 3), np.int32), 16), TypeError, ["int32"]),
        (lambda: jitrs.patchify(np.zeros((32, 32, 3), bool), 16), TypeError, ["bool"]),
        (lambda: jitrs.patchify([[1, 2]], 1), TypeError, ["numpy array", "list"]),
        (
            lambda: jitrs.unpatchify(np.zeros((4, 768), np.float32), 16, 32, 48),
            ValueError,
            ["(4, 768)", "p=16", "height=32", "width=48", "expected 6 tokens"],
        ),
        (
            lambda: jitrs.unpatchify(np.zeros((4, 700), np.float32), 16, 32, 32),
            ValueError,
            ["(4, 700)", "p=16", "p*p=256"],
        ),
        (
            lambda: jitrs.unpatchify(np.zeros((4, 768), np.float32), 16, 30, 32),
            ValueError,
            ["(4, 768)", "multiples of p=16"],
        ),
        (
            lambda: jitrs.unpatchify(np.zeros(768, np.float32), 16, 16, 16),
            ValueError,
            ["(768,)", "(N, p*p*C)"],
        ),
        (lambda: jitrs.unpatchify(np.zeros((1, 768), np.float32), 16, -16, 16), ValueError, ["height=-16"]),
        (lambda: jitrs.unpatchify(np.zeros((1, 768), np.complex64), 16, 16, 16), TypeError, ["complex64"]),
    ],
)
def test_errors_name_shape_and_p(call, exc, parts):
    with pytest.raises(exc) as info:
        call()
    for part in parts:
        assert part in str(info.value)
