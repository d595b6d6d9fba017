"""jitrs.patchify / unpatchify throughput vs numpy (reshape + transpose + ascontiguousarray) and vs a
plain copy of the same bytes, measured side by side: np.copyto into a preallocated array (memory
bandwidth alone) and x.copy() (the same bytes into a fresh array, which pays the first-touch page
faults every new output pays).

    python benches/bench_patchify.py [--repeats 5]

Targets: >= 2x numpy, >= 60% of the copy's GB/s. GB/s counts the output bytes once (every column
reads and writes that many bytes). Best of --repeats wall-clock runs; run on a quiet machine.
"""

from __future__ import annotations

import argparse

import numpy as np
from common import best_seconds, machine, warn_if_debug_build

import jitrs


def numpy_patchify(x: np.ndarray, p: int) -> np.ndarray:
    b, h, w, c = x.shape
    t = x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return np.ascontiguousarray(t).reshape(b, -1, p * p * c)


def numpy_unpatchify(t: np.ndarray, p: int, h: int, w: int) -> np.ndarray:
    b, _, d = t.shape
    c = d // (p * p)
    x = t.reshape(b, h // p, w // p, p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return np.ascontiguousarray(x).reshape(b, h, w, c)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    warn_if_debug_build()
    print(f"machine: {machine()}; jitrs build: {jitrs._native.BUILD_PROFILE}; numpy {np.__version__}")

    rng = np.random.default_rng(0)
    cases = [
        ("(256,256,256,3) uint8 p=16", rng.integers(0, 256, (256, 256, 256, 3), dtype=np.uint8), 16),
        ("(64,512,512,3) float32 p=32", rng.standard_normal((64, 512, 512, 3), dtype=np.float32), 32),
    ]
    rows = []
    for name, x, p in cases:
        h, w = x.shape[1:3]
        tokens = jitrs.patchify(x, p)
        assert np.array_equal(tokens, numpy_patchify(x, p))
        gb = x.nbytes / 1e9
        dst = np.empty_like(x)
        copy = best_seconds(lambda x=x, dst=dst: np.copyto(dst, x), args.repeats)
        fresh = best_seconds(lambda x=x: x.copy(), args.repeats)
        channel_first = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        flipped = x[:, ::-1]
        timings = {
            "patchify": (
                best_seconds(lambda x=x, p=p: jitrs.patchify(x, p), args.repeats),
                best_seconds(lambda x=x, p=p: numpy_patchify(x, p), args.repeats),
            ),
            "unpatchify": (
                best_seconds(lambda t=tokens, p=p, h=h, w=w: jitrs.unpatchify(t, p, h, w), args.repeats),
                best_seconds(lambda t=tokens, p=p, h=h, w=w: numpy_unpatchify(t, p, h, w), args.repeats),
            ),
            "patchify channel-first": (
                best_seconds(lambda c=channel_first, p=p: jitrs.patchify(c, p, channels_last=False), args.repeats),
                best_seconds(lambda c=channel_first, p=p: numpy_patchify(c.transpose(0, 2, 3, 1), p), args.repeats),
            ),
            "unpatchify channel-first": (
                best_seconds(
                    lambda t=tokens, p=p, h=h, w=w: jitrs.unpatchify(t, p, h, w, channels_last=False),
                    args.repeats,
                ),
                best_seconds(
                    lambda t=tokens, p=p, h=h, w=w: np.ascontiguousarray(
                        numpy_unpatchify(t, p, h, w).transpose(0, 3, 1, 2)
                    ),
                    args.repeats,
                ),
            ),
            # Strided input: read in place by Rust vs numpy's copy to contiguous first, then Rust.
            "patchify x[:, ::-1] (in place)": (
                best_seconds(lambda f=flipped, p=p: jitrs.patchify(f, p), args.repeats),
                best_seconds(lambda f=flipped, p=p: numpy_patchify(f, p), args.repeats),
            ),
            "patchify x[:, ::-1] (copy first)": (
                best_seconds(lambda f=flipped, p=p: jitrs.patchify(np.ascontiguousarray(f), p), args.repeats),
                best_seconds(lambda f=flipped, p=p: numpy_patchify(f, p), args.repeats),
            ),
        }
        for op, (ours, theirs) in timings.items():
            rows.append(
                (
                    name,
                    op,
                    gb / ours,
                    gb / theirs,
                    gb / copy,
                    gb / fresh,
                    theirs / ours,
                    copy / ours,
                    fresh / ours,
                )
            )
        del dst, channel_first

    header = (
        "case",
        "op",
        "jitrs GB/s",
        "numpy GB/s",
        "copyto GB/s",
        "x.copy GB/s",
        "vs numpy",
        "of copyto",
        "of x.copy",
    )
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) if i < 2 else 11 for i in range(len(header))]
    print("  ".join(h.ljust(wd) for h, wd in zip(header, widths, strict=True)))
    for r in rows:
        cells = [r[0].ljust(widths[0]), r[1].ljust(widths[1])]
        cells += [f"{v:11.2f}" for v in r[2:6]] + [
            f"{r[6]:10.2f}x",
            f"{100 * r[7]:10.0f}%",
            f"{100 * r[8]:10.0f}%",
        ]
        print("  ".join(cells))


if __name__ == "__main__":
    main()
