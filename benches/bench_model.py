"""JiT training-step and sampling throughput: jitrs.JiT versus the official-code baseline, side by side.

    python benches/bench_model.py                      # defaults chosen by device (GPU: JiT-B/16; CPU: JiT-S/4)
    python benches/bench_model.py --model JiT-L/16 --batch 64 --sample-batch 128

Both sides run in this process on the same device with the same flow, data and schedule:
- jitrs: `jitrs.JiT` (fused SDPA, RoPE buffers) under `torch.compile` on a GPU, bf16 autocast, fused AdamW,
  and `Flow.sample` (cond + uncond batched in one forward, uncond skipped outside the CFG interval).
- baseline: testkit/official_jit.py, the literal re-creation of the official forward (hand-written float32
  attention with a per-call zero bias; its blocks and final layer compiled as the official decorators do),
  bf16 autocast, AdamW with torch's default (foreach) kernel, and the official sampler (cond and uncond as two
  separate forwards that always both run).
Training step = forward + backward + AdamW step (the flow's v-loss on random images). Sampling = 50-step Heun
(99 network evaluations) with CFG over the interval (0.1, 1). MFU (GPU only) = achieved / peak dense bf16 FLOP/s,
with FLOPs from `JiT.flops_per_image` (training counts forward + backward as 3× forward).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import cpu_model, timed

import jitrs
from testkit.official_jit import OfficialJiT, official_sample

# Peak dense bf16 tensor-core FLOP/s from the vendor spec sheets, matched on the device name.
PEAK_BF16 = (("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("A100", 312e12), ("L40S", 362e12))


@dataclass
class Result:
    what: str
    ours: float  # images per second
    baseline: float
    mfu_ours: float | None = None
    mfu_baseline: float | None = None
    # Useful FLOPs per image of each side (the FLOP counts behind the MFUs), for MFU against another peak.
    flops_ours: float = 0.0
    flops_baseline: float = 0.0

    @property
    def speedup(self) -> float:
        return self.ours / self.baseline


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16 if key in name), None)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({cpu_model()}, {torch.get_num_threads()} threads)"


def sync(device: torch.device) -> Callable[[], None]:
    """What makes the clock wait for queued work on `device` (nothing on the CPU)."""
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)


def build_pair(args: argparse.Namespace, device: torch.device) -> tuple[jitrs.JiT, OfficialJiT]:
    """Our model and the baseline with the same (random, non-zero) weights."""
    torch.manual_seed(0)
    overrides = {k: json.loads(v) for k, _, v in (item.partition("=") for item in args.model_arg)}
    overrides |= {"input_size": args.size} if args.size else {}
    ours = jitrs.JiT.from_name(args.model, **overrides)
    with torch.no_grad():
        for p in ours.parameters():
            if p.requires_grad:
                p.normal_(0, 0.02)
    base = OfficialJiT(**ours.config, device=device)
    base.load_state_dict(ours.state_dict(), strict=True)
    return ours.to(device), base.to(device)


def train_throughput(net: torch.nn.Module, fused: bool, args: argparse.Namespace, device: torch.device) -> float:
    """Images/s of forward + backward + AdamW on random data, bf16 autocast on a GPU."""
    flow = jitrs.Flow()
    size = net.input_size
    gen = torch.Generator(device).manual_seed(1)
    x = torch.rand(args.batch, 3, size, size, device=device, generator=gen) * 2 - 1
    y = torch.randint(0, net.num_classes, (args.batch,), device=device, generator=gen)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.0, fused=fused)
    net.train()

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = flow.loss(net, x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    return args.batch / timed(step, args.iters, sync(device))


def sample_throughput(
    sampler: Callable[[torch.Tensor, int], torch.Tensor],
    num_classes: int,
    args: argparse.Namespace,
    device: torch.device,
) -> float:
    """Images/s of one full sampling run (after a 2-step warm-up run that compiles every shape)."""
    labels = torch.arange(args.sample_batch, device=device) % num_classes
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        sampler(labels, 2)
        return args.sample_batch / timed(lambda: sampler(labels, args.sample_steps), 1, sync(device))


def guided_evaluations(steps: int, interval: tuple[float, float]) -> tuple[int, int]:
    """(network evaluations, of which with guidance) of the Heun sampler on the uniform grid."""
    grid = torch.linspace(0.0, 1.0, steps + 1)
    times = [grid[i] for i in range(steps)] + [grid[i + 1] for i in range(steps - 1)]
    lo, hi = interval
    guided = sum(1 for t in times if t < hi and (lo == 0 or t > lo))
    return len(times), guided


def run(args: argparse.Namespace) -> list[Result]:
    device = torch.device(args.device)
    compile_ = device.type == "cuda" and not args.no_compile
    ours, base = build_pair(args, device)
    flops = ours.flops_per_image()
    peak = peak_flops(device)
    print(f"device: {device_name(device)}   torch {torch.__version__}   {datetime.date.today()}")
    print(
        f"model: {args.model} at {ours.input_size} px ({sum(p.numel() for p in ours.parameters()) / 1e6:.1f}M "
        f"params, {flops / 1e9:.1f} GFLOP/img forward)   compile: {compile_}   "
        f"bf16 autocast: {device.type == 'cuda'}"
    )
    # Static shapes: one graph each for the training batch and the sampler's B and 2B batches.
    ours_net: torch.nn.Module = torch.compile(ours, dynamic=False) if compile_ else ours
    if compile_:  # the official code decorates JiTBlock.forward and FinalLayer.forward with @torch.compile
        for module in [*base.blocks, base.final_layer]:
            module.compile()

    def mfu(images_per_s: float, flops_per_image: float) -> float | None:
        return images_per_s * flops_per_image / peak if peak else None

    results = []
    train_ours = train_throughput(ours_net, device.type == "cuda", args, device)
    train_base = train_throughput(base, False, args, device)
    results.append(
        Result(
            f"train step, batch {args.batch}",
            train_ours,
            train_base,
            mfu(train_ours, 3 * flops),
            mfu(train_base, 3 * flops),
            3 * flops,
            3 * flops,
        )
    )

    ours_net.eval()
    base.eval()
    flow = jitrs.Flow(noise_scale=args.noise_scale)
    cfg, interval = 3.0, (0.1, 1.0)

    def ours_sampler(labels: torch.Tensor, steps: int) -> torch.Tensor:
        return flow.sample(ours_net, labels, steps=steps, method="heun", cfg=cfg, interval=interval)

    def base_sampler(labels: torch.Tensor, steps: int) -> torch.Tensor:
        return official_sample(
            base,
            labels,
            num_classes=base.num_classes,
            img_size=base.input_size,
            steps=steps,
            cfg=cfg,
            interval=interval,
            noise_scale=args.noise_scale,
        )

    sample_ours = sample_throughput(ours_sampler, ours.num_classes, args, device)
    sample_base = sample_throughput(base_sampler, ours.num_classes, args, device)
    nfe, guided = guided_evaluations(args.sample_steps, interval)
    # Useful work: FLOPs the jitrs sampler runs (the uncond half only where guided); the baseline runs 2 × nfe.
    flops_ours = flops * (nfe + guided)
    results.append(
        Result(
            f"sample {args.sample_steps}-step Heun, CFG (0.1,1), batch {args.sample_batch}",
            sample_ours,
            sample_base,
            mfu(sample_ours, flops_ours),
            mfu(sample_base, flops * 2 * nfe),
            flops_ours,
            flops * 2 * nfe,
        )
    )
    return results


def print_table(results: list[Result]) -> None:
    def pct(x: float | None) -> str:
        return f"{100 * x:.1f}%" if x is not None else "-"

    header = (
        f"{'benchmark':<48} {'jitrs img/s':>12} {'baseline img/s':>15} {'speedup':>8} {'MFU jitrs':>10} {'MFU base':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.what:<48} {r.ours:>12.1f} {r.baseline:>15.1f} {r.speedup:>7.2f}x "
            f"{pct(r.mfu_ours):>10} {pct(r.mfu_baseline):>9}"
        )


def parser() -> argparse.ArgumentParser:
    gpu = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if gpu else "cpu")
    p.add_argument("--model", default="JiT-B/16" if gpu else "JiT-S/4", choices=list(jitrs.JiT_models))
    p.add_argument("--size", type=int, default=None, help="input size (default: the named config's)")
    p.add_argument(
        "--model-arg", action="append", default=[], metavar="KEY=VALUE", help="override a JiT constructor argument"
    )
    p.add_argument("--batch", type=int, default=128 if gpu else 8, help="training batch")
    p.add_argument("--sample-batch", type=int, default=256 if gpu else 8, help="sampling batch (labels)")
    p.add_argument("--sample-steps", type=int, default=50 if gpu else 10, help="Heun steps")
    p.add_argument("--warmup", type=int, default=5 if gpu else 2, help="untimed training steps first")
    p.add_argument("--iters", type=int, default=20 if gpu else 5, help="timed training steps")
    p.add_argument("--noise-scale", type=float, default=1.0)
    p.add_argument("--no-compile", action="store_true", help="eager mode on the GPU too (for both sides)")
    return p


def main(argv: list[str] | None = None) -> list[Result]:
    args = parser().parse_args(argv)
    results = run(args)
    print_table(results)
    return results


if __name__ == "__main__":
    main()
