"""jitrs.patchify / unpatchify throughput vs numpy and vs a plain copy of the same bytes, side by side.

    python benches/bench_patchify.py [--repeats 7]

Two ways to get the result, each compared like with like:
- new array (the default call): jitrs vs numpy's reshape + transpose + ascontiguousarray; the copy baseline
  is x.copy(), which pays the same first-touch page faults as every freshly allocated output;
- out= (a preallocated array, as a training loop reuses): jitrs vs np.copyto(out view, transposed view);
  the copy baseline is np.copyto into a preallocated array (memory bandwidth alone).
"of copyto" is against np.copyto in both. Targets: >= 2x numpy, >= 60% of the copy's GB/s. GB/s counts the
output bytes once (every column reads and writes that many bytes). Best of --repeats wall-clock runs; jitrs
uses all cores (RAYON_NUM_THREADS to change), numpy one. Calls are interleaved round-robin, so a slow
spell hits every column alike. Run on a quiet machine.
"""

from __future__ import annotations

import argparse

import numpy as np
from common import best_seconds_interleaved, machine, warn_if_debug_build

import jitrs


def patch_view(x: np.ndarray, p: int) -> np.ndarray:
    """(B, H, W, C) seen as (B, H/p, W/p, p, p, C): the tokens' element order, no copy."""
    b, h, w, c = x.shape
    return x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)


def numpy_patchify(x: np.ndarray, p: int) -> np.ndarray:
    b, c = x.shape[0], x.shape[3]
    return np.ascontiguousarray(patch_view(x, p)).reshape(b, -1, p * p * c)


def numpy_unpatchify(t: np.ndarray, p: int, h: int, w: int) -> np.ndarray:
    b, _, d = t.shape
    c = d // (p * p)
    x = t.reshape(b, h // p, w // p, p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return np.ascontiguousarray(x).reshape(b, h, w, c)


def numpy_patchify_into(x: np.ndarray, p: int, out: np.ndarray) -> None:
    b, h, w, c = x.shape
    np.copyto(out.reshape(b, h // p, w // p, p, p, c), patch_view(x, p))


def numpy_unpatchify_into(t: np.ndarray, p: int, out: np.ndarray) -> None:
    b, h, w, c = out.shape
    np.copyto(patch_view(out, p), t.reshape(b, h // p, w // p, p, p, c))


Row = tuple[str, str, str, float, float, float, float, float, float]


def bench_case(name: str, x: np.ndarray, p: int, repeats: int) -> list[Row]:
    h, w = x.shape[1:3]
    tokens = jitrs.patchify(x, p)
    assert np.array_equal(tokens, numpy_patchify(x, p))
    tokens_out, image_out = np.empty_like(tokens), np.empty_like(x)
    assert jitrs.unpatchify(tokens, p, h, w, out=image_out) is image_out and np.array_equal(image_out, x)
    dst = np.empty_like(x)
    channel_first = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    flipped = x[:, ::-1]
    # (op, output, jitrs, numpy): each pair computes the same array.
    timed = [
        ("patchify", "new", lambda: jitrs.patchify(x, p), lambda: numpy_patchify(x, p)),
        ("unpatchify", "new", lambda: jitrs.unpatchify(tokens, p, h, w), lambda: numpy_unpatchify(tokens, p, h, w)),
        (
            "patchify",
            "out=",
            lambda: jitrs.patchify(x, p, out=tokens_out),
            lambda: numpy_patchify_into(x, p, tokens_out),
        ),
        (
            "unpatchify",
            "out=",
            lambda: jitrs.unpatchify(tokens, p, h, w, out=image_out),
            lambda: numpy_unpatchify_into(tokens, p, image_out),
        ),
        (
            "patchify channel-first",
            "new",
            lambda: jitrs.patchify(channel_first, p, channels_last=False),
            lambda: numpy_patchify(channel_first.transpose(0, 2, 3, 1), p),
        ),
        (
            "unpatchify channel-first",
            "new",
            lambda: jitrs.unpatchify(tokens, p, h, w, channels_last=False),
            lambda: np.ascontiguousarray(numpy_unpatchify(tokens, p, h, w).transpose(0, 3, 1, 2)),
        ),
        # Strided input: read in place by Rust vs numpy's copy to contiguous first, then Rust.
        (
            "patchify x[:, ::-1] (in place)",
            "new",
            lambda: jitrs.patchify(flipped, p),
            lambda: numpy_patchify(flipped, p),
        ),
        (
            "patchify x[:, ::-1] (copy first)",
            "new",
            lambda: jitrs.patchify(np.ascontiguousarray(flipped), p),
            lambda: numpy_patchify(flipped, p),
        ),
    ]
    fns = [lambda: np.copyto(dst, x), lambda: x.copy()] + [fn for _, _, *pair in timed for fn in pair]
    gbps = [x.nbytes / 1e9 / s for s in best_seconds_interleaved(fns, repeats)]
    copyto, fresh = gbps[:2]
    rows = []
    for k, (op, output, *_) in enumerate(timed):
        ours, theirs = gbps[2 + 2 * k], gbps[3 + 2 * k]
        copy = copyto if output == "out=" else fresh
        rows.append((name, op, output, ours, theirs, copy, ours / theirs, ours / copyto, ours / copy))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    warn_if_debug_build()
    print(f"machine: {machine()}; jitrs build: {jitrs._native.BUILD_PROFILE}; numpy {np.__version__}")
    rng = np.random.default_rng(0)
    rows = bench_case(
        "(256,256,256,3) uint8 p=16", rng.integers(0, 256, (256, 256, 256, 3), dtype=np.uint8), 16, args.repeats
    )
    rows += bench_case(
        "(64,512,512,3) float32 p=32", rng.standard_normal((64, 512, 512, 3), dtype=np.float32), 32, args.repeats
    )
    header = ("case", "op", "output", "jitrs GB/s", "numpy GB/s", "copy GB/s", "vs numpy", "of copyto", "of copy")
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) if i < 3 else 10 for i in range(len(header))]
    print("  ".join(h.ljust(wd) for h, wd in zip(header, widths, strict=True)))
    for r in rows:
        cells = [str(r[i]).ljust(widths[i]) for i in range(3)]
        cells += [f"{v:10.2f}" for v in r[3:6]] + [f"{r[6]:9.2f}x", f"{100 * r[7]:9.0f}%", f"{100 * r[8]:9.0f}%"]
        print("  ".join(cells))
    print("copy: np.copyto into a preallocated array for out= rows, x.copy() (a new array) for new-array rows")


if __name__ == "__main__":
    main()
