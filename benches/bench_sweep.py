"""The cost of `jitrs sweep`'s coarse-to-fine CFG search against the naive 0.1 grid (31 points over 1.0-4.0).

    python benches/bench_sweep.py             # CPU: a tiny JiT at 16 px, 4 images per point, Heun 2 steps
    python benches/bench_sweep.py --n 1000    # CUDA: JiT-B/16 at 256 px (random weights), Heun 50

Both run in the same process on the same model, reference and feature network: the search through
`jitrs.sweep.sweep` (as the CLI runs it, one EMA), the naive grid by calling `scoring.score_model` at every 0.1
step. It prints the points evaluated, the images generated, the seconds and the ratios, and whether both found
the same scale. The Inception weights are random (written like the published file; no download), which changes
the FID values but not the cost: an evaluation costs its sampling, the Inception passes and one 2048x2048
eigenvalue problem.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import machine, warn_if_debug_build
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # testkit

import jitrs
from jitrs import scoring
from jitrs.sample import _flow
from jitrs.sweep import NAIVE_STEP, SweepOptions, _grid, sweep
from testkit.checkpoints import TINY, make_checkpoint
from testkit.feature_nets import random_inception_weights


def main() -> None:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000 if cuda else 4, help="images per point")
    p.add_argument("--steps", type=int, default=50 if cuda else 2)
    p.add_argument("--cfg", default="1.0:4.0")
    args = p.parse_args()
    warn_if_debug_build()
    lo, hi = (float(v) for v in args.cfg.split(":"))
    root = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    if cuda:
        torch.manual_seed(0)
        net = jitrs.JiT.from_name("JiT-B/16")
        payload = jitrs.checkpoint_payload(net, name=None, flow={"noise_scale": 1.0}, ema1=net.state_dict())
        ckpt_path = root / "b16.pt"
        jitrs.save_checkpoint(ckpt_path, payload)
    else:
        ckpt_path = make_checkpoint(root / "tiny.pt", TINY)
    ckpt = jitrs.load_checkpoint(ckpt_path)
    res, classes = int(ckpt.config["input_size"]), int(ckpt.config["num_classes"])
    weights = random_inception_weights(root / "w")
    data = root / "data" / "c"
    data.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(8):
        Image.fromarray(rng.integers(0, 256, (res, res, 3), dtype=np.uint8)).save(data / f"{k}.png")
    ref = root / "ref.npz"
    scoring.make_reference(data.parent, res, ref, "fid", weights, batch_size=8)
    print(f"machine: {machine()}; device: {torch.cuda.get_device_name() if cuda else 'cpu'}")
    print(f"model: {'JiT-B/16 256 px' if cuda else 'tiny JiT 16 px'}, {args.n} images per point, Heun {args.steps}")

    opt = SweepOptions(
        ckpt=ckpt_path, ref=ref, out=root / "sweep", n=args.n, cfg=(lo, hi), ema="1", steps=args.steps,
        inception_weights=weights, batch_size=256 if cuda else 4,
    )  # fmt: skip
    start = time.perf_counter()
    summary = sweep(opt)
    search_s = time.perf_counter() - start
    assert summary is not None

    device = torch.device("cuda" if cuda else "cpu")
    scorer = scoring.Scorer("fid,is", ref, device, inception_weights=weights)
    net = ckpt.build(ema="ema1", device=device).eval()
    model = torch.compile(net) if cuda else net
    flow = _flow(ckpt_path, ckpt.flow, ckpt.noise_scale)
    grid = _grid(lo, hi, NAIVE_STEP)
    start = time.perf_counter()
    fids = {}
    for cfg in grid:
        r = scoring.score_model(
            model, flow, scorer, args.n, range(classes), steps=args.steps, cfg=cfg, seed=0,
            batch_size=opt.batch_size, device=device,
        )  # fmt: skip
        fids[cfg] = r["fid"]
    naive_s = time.perf_counter() - start
    naive_best = min(fids, key=lambda c: (fids[c], c))

    points = summary["evaluations"]
    print(f"{'':22}{'points':>8}{'images':>10}{'seconds':>10}")
    print(f"{'coarse-to-fine search':22}{points:>8}{points * args.n:>10}{search_s:>10.1f}")
    print(f"{'naive 0.1 grid':22}{len(grid):>8}{len(grid) * args.n:>10}{naive_s:>10.1f}")
    print(f"ratio: {len(grid) / points:.2f}x fewer images, {naive_s / search_s:.2f}x less time")
    print(f"best cfg: search {summary['best']['cfg']:g} (FID {summary['best']['fid']:.3f}), "
          f"grid {naive_best:g} (FID {fids[naive_best]:.3f})")  # fmt: skip


if __name__ == "__main__":
    main()
