"""The one GPU benchmark command: JiT-B/16 at 256 px, jitrs versus the official-code baseline, with targets.

    python benches/bench_gpu.py          (or: make bench-gpu)

Targets on one H100/H200 in bf16: training step >= 1.8x the baseline's img/s at batch 128, 50-step Heun
sampling with CFG >= 2.5x at batch 256, training MFU >= 40%. Exits 1 when a target is missed.
"""

from __future__ import annotations

import datetime
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_model

TRAIN_SPEEDUP, SAMPLE_SPEEDUP, TRAIN_MFU = 1.8, 2.5, 0.40


def main() -> int:
    if not torch.cuda.is_available():
        print("bench_gpu: no CUDA device here; run benches/bench_model.py for the CPU comparison")
        return 2
    print(f"bench_gpu  {datetime.datetime.now().isoformat(timespec='seconds')}  {torch.cuda.get_device_name()}")
    train, sample = bench_model.main(
        ["--model", "JiT-B/16", "--batch", "128", "--sample-batch", "256", "--sample-steps", "50"]
    )
    checks = [
        (f"training speedup >= {TRAIN_SPEEDUP}x", train.speedup >= TRAIN_SPEEDUP, f"{train.speedup:.2f}x"),
        (f"sampling speedup >= {SAMPLE_SPEEDUP}x", sample.speedup >= SAMPLE_SPEEDUP, f"{sample.speedup:.2f}x"),
        (
            f"training MFU >= {TRAIN_MFU:.0%}",
            train.mfu_ours is not None and train.mfu_ours >= TRAIN_MFU,
            f"{100 * train.mfu_ours:.1f}%" if train.mfu_ours is not None else "unknown peak for this GPU",
        ),
    ]
    print()
    for name, ok, value in checks:
        print(f"{'PASS' if ok else 'MISS'}  {name:<28} {value}")
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
