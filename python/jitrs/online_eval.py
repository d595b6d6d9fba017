"""Online evaluation in training (`jitrs train --eval-every N --eval-ref STATS`): FID and IS of one EMA's samples.

Everything that can be wrong (the reference file, its feature space or resolution, the Inception weights, the
EMA named) is checked by `OnlineEval.prepare`, before the first step. Each evaluation generates `--eval-n`
class-balanced samples exactly as `jitrs sample` would (jitrs.scoring.score_model, the same sampler and
labels), split over the ranks, with noise from generators seeded by (seed, step): the training RNG is never
drawn from, so a run's losses are the same with and without it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from jitrs.device import Dist
from jitrs.ema_keys import ema_key, select_weight_set
from jitrs.errors import UserError
from jitrs.flow import Flow
from jitrs.paper import CFG_INTERVAL
from jitrs.scoring import DEFAULT_METRICS, Scorer, score_model
from jitrs.train_config import TrainConfig

if TYPE_CHECKING:
    from torch.distributed.fsdp import FSDPModule


def eval_batch_size(n: int, world: int, largest: int, sharded: bool) -> int:
    """The sampling batch: `largest` at most; under FSDP also such that every rank runs the same number of
    batches (each forward of a sharded model is a collective call of all ranks)."""
    if not sharded:
        return max(1, min(largest, math.ceil(n / world)))
    for size in range(min(largest, n), 0, -1):
        if math.ceil(n / size) % world == 0:
            return size
    raise UserError(
        f"--eval-n {n} cannot be cut into the same number of batches on each of the {world} processes, as --fsdp "
        f"needs: choose a multiple of {world}"
    )


@dataclass
class OnlineEval:
    """What one evaluation needs: the scorer (networks and reference loaded once) and the sampling settings."""

    scorer: Scorer
    ema: str  # the EMA key evaluated
    n: int
    steps: int
    batch_size: int

    @classmethod
    def prepare(cls, cfg: TrainConfig, d: Dist) -> OnlineEval:
        """Check --eval-ref, --inception-weights and --eval-ema against this run; raises UserError naming them."""
        assert cfg.eval_ref is not None  # TrainConfig.validate
        sets = {ema_key(i): decay for i, decay in enumerate(cfg.ema)}
        ema = select_weight_set(cfg.eval_ema, sets, "this run (--ema)", "eval_ema")
        try:
            scorer = Scorer(
                DEFAULT_METRICS,
                Path(cfg.eval_ref),
                d.device,
                inception_weights=cfg.inception_weights,
                resolution=cfg.res,
            )
        except UserError as e:  # the scorer names its own parameters: here they are train's flags
            param = "eval_ref" if e.param == "ref" else e.param
            raise UserError(e.message, param=param, value=e.value) from None
        if cfg.fsdp:
            eval_batch_size(cfg.eval_n, d.world, cfg.batch_size, sharded=True)  # refused now, not at step N
        return cls(scorer, ema, cfg.eval_n, cfg.sample_steps, cfg.batch_size)

    def __call__(
        self,
        step: int,
        seed: int,
        module: nn.Module,
        flow: Flow,
        guidance: float,
        num_classes: int,
        d: Dist,
        sharded: bool,
    ) -> dict[str, Any]:
        """FID and IS of `module`'s samples at `step`, drawn with noise of `seed` (every rank calls it; all get the
        same numbers)."""
        start = time.perf_counter()
        result = score_model(
            module,
            flow,
            self.scorer,
            self.n,
            list(range(num_classes)),
            steps=self.steps,
            cfg=guidance,
            interval=CFG_INTERVAL,
            seed=seed,
            batch_size=eval_batch_size(self.n, d.world, self.batch_size, sharded),
            device=d.device,
        )
        if sharded:
            cast("FSDPModule", module).reshard()  # FSDP leaves the root gathered after a forward
        if d.device.type == "cuda":
            torch.cuda.synchronize(d.device)
        images = int(result.pop("images"))
        return {
            "step": step,
            **{k: float(v) for k, v in result.items()},
            "eval_images": images,
            "eval_ema": self.ema,
            "eval_cfg": guidance,
            "eval_s": time.perf_counter() - start,
        }
