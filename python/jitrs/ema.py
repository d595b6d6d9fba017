"""Exponential moving averages of a model's weights, updated with one fused foreach op per step."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """A frozen copy of `model` whose parameters track ema ← decay·ema + (1 − decay)·p after every update().

    `module` is an ordinary eval-mode nn.Module (sample from it, save its state_dict).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, params: list[torch.Tensor]) -> None:
        """One step towards `params` (the live model's parameters, same order as model.parameters())."""
        # Listed per call, not cached: sharding the module (FSDP) replaces its parameter objects.
        torch._foreach_lerp_(list(self.module.parameters()), params, 1.0 - self.decay)
