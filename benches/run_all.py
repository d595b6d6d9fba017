"""Run every CPU benchmark in benches/, one after another, each side by side with its baseline.

python benches/run_all.py            # what `make bench` runs
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

BENCHES = [
    "bench_load_batch.py",
    "bench_center_crop.py",
    "bench_patchify.py",
    "bench_png.py",
    "bench_loader.py",
    "bench_shards.py",
    "bench_model.py",
    "bench_sample.py",
    "bench_denormals.py",
]


def main() -> int:
    here = Path(__file__).parent
    failed = []
    for name in BENCHES:
        path = here / name
        print(f"\n=== {name} ({time.strftime('%Y-%m-%d %H:%M')})", flush=True)
        if subprocess.run([sys.executable, str(path)], check=False).returncode != 0:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
