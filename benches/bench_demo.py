"""The README's first command, measured: `jitrs train --demo` from a clean cache (the MNIST folder and the quality
classifier are built from scratch), then its quality figures next to those of real digits.

python benches/bench_demo.py [--keep DIR]     # about 12 minutes on the 2-core development VM

Prints the machine, the wall time of the whole command and of the training loop alone, and a table: recognised
fraction and Fréchet distance (classifier features) of the demo's 1,000 class-balanced samples, of 1,000 real
held-out digits and of 1,000 class-mean blobs, plus the classifier's own held-out accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine, warn_if_debug_build


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="write the run here (default: a temporary directory)")
    args = parser.parse_args()
    warn_if_debug_build()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        run = args.keep or Path(tmp) / "demo"
        env = {**os.environ, "JITRS_CACHE": str(Path(tmp) / "cache")}
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "jitrs", "train", "--demo", "--out", str(run)],
            env=env,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return 1
        trained = next(line for line in proc.stderr.splitlines() if line.startswith("trained"))
        score = json.loads((run / "quality.json").read_text())

        from jitrs.builtin import mnist_images
        from jitrs.quality import Judge, split

        digits, labels = mnist_images()
        _, held = split(labels)
        real = Judge("mnist", Path(tmp) / "cache").score(digits[held], labels[held])

    print(f"whole command: {wall:.0f} s (setup of the dataset and the classifier, training, final scoring)")
    print(trained)
    print(f"{'images':<34}{'recognised':>12}{'FD':>10}")
    print(f"{'demo samples (1,000)':<34}{score['accuracy']:>12.1%}{score['fd']:>10.2f}")
    print(f"{'real held-out digits (1,000)':<34}{real.accuracy:>12.1%}{real.fd:>10.2f}")
    print(f"{'class-mean blobs (1,000)':<34}{score['accuracy_blobs']:>12.1%}{score['fd_blobs']:>10.2f}")
    print(f"classifier on held-out real digits: {score['classifier_accuracy']:.1%}")
    ok = score["accuracy"] >= 0.9 and score["fd"] <= 4 * score["fd_real"]
    print(f"bar (>= 90% recognised, FD <= 4x real = {4 * score['fd_real']:.2f}): {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
