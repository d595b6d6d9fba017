"""Exponential moving averages of a model's weights, updated with one fused foreach op per EMA and step.

A run keeps any number of EMAs, keyed "ema1", "ema2", ... "emaK" in the order of their decays (jitrs.ema_keys).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from jitrs.ema_keys import check_decays, ema_key


class EMA:
    """A frozen copy of `model` whose parameters track ema ← decay·ema + (1 − decay)·p after every update().

    `module` is an ordinary eval-mode nn.Module (sample from it, save its state_dict).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        check_decays([decay], "EMA")
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, params: list[torch.Tensor]) -> None:
        """One step towards `params` (the live model's parameters, same order as model.parameters())."""
        # Listed per call, not cached: sharding the module (FSDP) replaces its parameter objects.
        torch._foreach_lerp_(list(self.module.parameters()), params, 1.0 - self.decay)


class EMAs:
    """A run's EMAs of one model, keyed ema1..emaK in the order of `decays`; update() steps each with one fused op."""

    def __init__(self, model: nn.Module, decays: Sequence[float]) -> None:
        check_decays(decays)
        self.sets = {ema_key(i): EMA(model, d) for i, d in enumerate(decays)}

    def update(self, params: list[torch.Tensor]) -> None:
        for ema in self.sets.values():
            ema.update(params)

    def decays(self) -> dict[str, float]:
        return {key: ema.decay for key, ema in self.sets.items()}

    def modules(self) -> dict[str, nn.Module]:
        return {key: ema.module for key, ema in self.sets.items()}
