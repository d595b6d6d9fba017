"""Does flushing denormal floats to zero (what jitrs.device does on a CPU) change training speed or losses?

python benches/bench_denormals.py [--steps 60]

For the demo's model (batch 64, 28 px) and JiT-S/4 (batch 8, 32 px), trains the same initial weights on the same
batches twice in this process, flush off then on, interleaved in blocks of 10 steps so machine load hits both
alike, and prints img/s of each and whether the losses are identical.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from common import machine

from jitrs.flow import Flow
from jitrs.model import JiT
from jitrs.train_config import DEMO


def trainer(model: JiT, batch: int, res: int) -> tuple[torch.optim.Optimizer, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, res, res, generator=g) * 2 - 1
    y = torch.randint(0, model.num_classes, (batch,), generator=g)
    return torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95)), x, y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    print(f"machine: {machine()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    cases = [
        ("demo model, batch 64, 28 px", JiT(input_size=28, num_classes=10, **DEMO["model_args"]), 64, 28),
        ("JiT-S/4, batch 8, 32 px", JiT.from_name("JiT-S/4", num_classes=10), 8, 32),
    ]
    flow = Flow(P_mean=-1.5)
    for name, model, batch, res in cases:
        copies = {flush: copy.deepcopy(model) for flush in (False, True)}
        runs = {flush: (m, *trainer(m, batch, res)) for flush, m in copies.items()}
        seconds = {False: 0.0, True: 0.0}
        losses: dict[bool, list[float]] = {False: [], True: []}
        for block in range(0, args.steps, 10):
            for flush in (False, True):
                torch.set_flush_denormal(flush)
                net, opt, x, y = runs[flush]
                start = time.perf_counter()
                for step in range(block, min(block + 10, args.steps)):
                    torch.manual_seed(step)
                    loss = flow.loss(net, x, y)
                    loss.backward()
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                    losses[flush].append(loss.item())
                seconds[flush] += time.perf_counter() - start
        rate = {f: args.steps * batch / s for f, s in seconds.items()}
        same = "identical" if losses[False] == losses[True] else "DIFFERENT"
        print(
            f"{name}: flush off {rate[False]:.0f} img/s, on {rate[True]:.0f} img/s "
            f"(on/off {rate[True] / rate[False]:.2f}x); losses over {args.steps} steps {same}"
        )
    torch.set_flush_denormal(True)


if __name__ == "__main__":
    main()
