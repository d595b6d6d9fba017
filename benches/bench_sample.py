"""End-to-end `jitrs sample` images/s vs an official-style sampling loop, same model, same device, same run.

    python benches/bench_sample.py            # CUDA: JiT-B/16 at 256, Heun 50 + CFG 3.0, batch 256, 1024 images
    python benches/bench_sample.py --n 64     # CPU: a tiny JiT-S/4 at 32 px, Heun 10 (defaults pick by device)

jitrs: `jitrs.sample.sample` exactly as the CLI runs it (per-image seeded noise, cond+uncond in one batched pass
and no unconditional pass outside the guidance interval, bf16 + torch.compile on CUDA, PNGs written by the Rust
encoder on a writer thread while the next batch samples). Baseline: the official Denoiser.generate structure
(separate conditional and unconditional passes at every step, bf16 autocast on CUDA, eager) followed by a
synchronous Pillow PNG save of each image, as the official evaluation loop does. Both use the same weights
(random: speed does not depend on them) and the same model code, so the ratio is the sampling job's own gain.
"""

from __future__ import annotations

import argparse
import tempfile
from contextlib import nullcontext
from pathlib import Path

import torch
from common import cpu_model, timed, warn_if_debug_build
from PIL import Image
from rich.console import Console

import jitrs
from jitrs.sample import OFFICIAL_CFG, SampleOptions, sample


def make_checkpoint(path: Path, name: str) -> None:
    torch.manual_seed(0)
    net = jitrs.JiT.from_name(name)
    jitrs.save_checkpoint(
        path, jitrs.checkpoint_payload(net, name=name, flow={"noise_scale": 1.0}, emas={"ema1": net.state_dict()})
    )


@torch.no_grad()
def official_style(net: jitrs.JiT, n: int, batch: int, steps: int, cfg: float, out: Path, device: torch.device) -> None:
    """Heun with the last step Euler, two forward passes per evaluation, then one Pillow PNG per image."""
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    labels = torch.arange(n, device=device) % net.num_classes
    grid = torch.linspace(0.0, 1.0, steps + 1, device=device)

    def velocity(z: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        tb = t.expand(z.shape[0])
        with autocast:
            x_cond = net(z, tb, y).float()
            x_uncond = net(z, tb, torch.full_like(y, net.num_classes)).float()
        v_cond = (x_cond - z) / (1.0 - t).clamp_min(0.05)
        v_uncond = (x_uncond - z) / (1.0 - t).clamp_min(0.05)
        scale = torch.where((t < 1.0) & (t > 0.1), cfg, 1.0)
        return v_uncond + scale * (v_cond - v_uncond)

    for start in range(0, n, batch):
        y = labels[start : start + batch]
        z = torch.randn(y.shape[0], 3, net.input_size, net.input_size, device=device)
        for i in range(steps):
            t, t_next = grid[i], grid[i + 1]
            v = velocity(z, t, y)
            if i < steps - 1:
                v = 0.5 * (v + velocity(z + (t_next - t) * v, t_next, y))
            z = z + (t_next - t) * v
        images = ((z + 1) / 2).clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        for k, img in enumerate(images):
            Image.fromarray(img).save(out / f"{start + k:06d}.png")


def main() -> None:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="JiT-B/16" if cuda else "JiT-S/4")
    parser.add_argument("--n", type=int, default=1024 if cuda else 32)
    parser.add_argument("--batch-size", type=int, default=256 if cuda else 16)
    parser.add_argument("--steps", type=int, default=50 if cuda else 10)
    args = parser.parse_args()
    device = torch.device("cuda" if cuda else "cpu")
    name = torch.cuda.get_device_name() if cuda else f"CPU ({cpu_model()}), {torch.get_num_threads()} threads"
    cfg = OFFICIAL_CFG.get(args.model, 3.0)
    warn_if_debug_build()
    print(f"device: {name}; torch {torch.__version__}; jitrs native build: {jitrs._native.BUILD_PROFILE}")
    print(f"{args.model}, {args.n} images, batch {args.batch_size}, Heun {args.steps} steps, CFG {cfg} on (0.1, 1)")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ckpt = root / "bench.pt"
        make_checkpoint(ckpt, args.model)
        base = {"ckpt": ckpt, "n": args.n, "steps": args.steps, "batch_size": args.batch_size, "cfg": cfg}

        # Warm-up: one batch each, so compilation and allocator growth are not timed.
        quiet = Console(quiet=True)
        sample(SampleOptions(out=root / "warm", **base | {"n": args.batch_size}), quiet)
        net = jitrs.load_checkpoint(ckpt).build(device=device)
        (root / "warm_official").mkdir()
        official_style(net, args.batch_size, args.batch_size, args.steps, cfg, root / "warm_official", device)

        (root / "official").mkdir()
        sync = torch.cuda.synchronize if cuda else lambda: None
        t_official = timed(
            lambda: official_style(net, args.n, args.batch_size, args.steps, cfg, root / "official", device), sync=sync
        )
        t_jitrs = timed(
            lambda: sample(SampleOptions(out=root / "jitrs", **base), quiet),
            sync=sync,
        )
        written = len(list((root / "jitrs").glob("[0-9]*.png")))
        assert written == args.n and len(list((root / "official").glob("*.png"))) == args.n

    rows = [("official-style loop", t_official), ("jitrs sample", t_jitrs)]
    print(f"{'':<22}{'seconds':>10}{'images/s':>12}{'ratio':>8}")
    for label, seconds in rows:
        print(f"{label:<22}{seconds:>10.2f}{args.n / seconds:>12.2f}{t_official / seconds:>7.2f}x")
    flops = net.flops_per_image() * args.n * (2 * args.steps - 1)
    print(
        f"model: {net.flops_per_image() / 1e9:.1f} GFLOP per image per pass; jitrs sample sustains "
        f"{flops / t_jitrs / 1e9:.1f} GFLOP/s counting only the conditional pass of each evaluation"
    )


if __name__ == "__main__":
    main()
