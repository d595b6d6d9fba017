"""Small jitrs checkpoints of random networks whose samples differ by noise, time and label."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

import jitrs

# A JiT of a few thousand parameters at 16 px: samples in milliseconds on a CPU.
TINY: dict[str, Any] = {
    "input_size": 16,
    "patch_size": 4,
    "hidden_size": 32,
    "depth": 2,
    "num_heads": 2,
    "bottleneck_dim": 8,
    "in_context_len": 4,
    "in_context_start": 1,
    "num_classes": 3,
}


def make_checkpoint(
    path: Path, config: dict[str, Any], seed: int = 0, name: str | None = None, flow: dict[str, Any] | None = None
) -> Path:
    """A jitrs checkpoint of a randomly initialised JiT, perturbed so that x̂ depends on z, t and y.

    (The official init zeroes every output layer, which would make all samples collapse to the same values.)
    """
    torch.manual_seed(seed)
    net = jitrs.JiT(**config)
    with torch.no_grad():
        for p in net.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.2)
    sd = net.state_dict()
    ema2 = {k: v + 0.01 for k, v in sd.items()}
    stored = {"noise_scale": 1.0, "P_mean": -0.8, "P_std": 0.8, "t_eps": 0.05, "label_drop": 0.1}
    stored |= {"pred": "x", "loss_space": "v"} | (flow or {})
    payload = {"format": "jitrs", "version": 1, "config": net.config, "name": name, "flow": stored}
    payload |= {"model": sd, "ema1": sd, "ema2": ema2, "class_names": None, "step": 1}
    jitrs.save_checkpoint(path, payload)
    return path
