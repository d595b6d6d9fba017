"""The toy experiment's options (`jitrs toy`), validated; free of torch so the command line can show them."""

from __future__ import annotations

from dataclasses import dataclass

from jitrs.errors import UserError


@dataclass(frozen=True)
class ToyConfig:
    """One toy run; the defaults make the README figure in a few minutes on 2 CPU cores.

    Field names match the CLI options (train_steps is --train-steps). Invalid values raise UserError.
    """

    dims: tuple[int, ...] = (2, 8, 16, 512)
    train_steps: int = 1500
    batch_size: int = 128
    lr: float = 1e-3
    sample_steps: int = 50
    samples: int = 1000
    reference: int = 10000
    seed: int = 0
    threads: int = 1  # OpenMP barriers cost more than they save on these small matmuls, ruinously under load

    def __post_init__(self) -> None:
        if not self.dims:
            raise UserError("--dims needs at least one dimension.")
        bad = [d for d in self.dims if d < 2]
        if bad:
            raise UserError(f"--dims: every D must be at least 2 (the data is 2-D), got {bad[0]}.")
        if len(set(self.dims)) != len(self.dims):
            raise UserError(f"--dims lists a dimension twice: {','.join(map(str, self.dims))}.")
        for name in ("train_steps", "batch_size", "sample_steps", "samples", "reference", "threads"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}.")
        if not self.lr > 0:
            raise UserError(f"--lr must be positive, got {self.lr}.")
