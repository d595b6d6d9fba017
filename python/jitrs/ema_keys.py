"""How a run's EMAs are named and which decays are valid; free of torch, so the CLI checks --ema without it.

A run keeps any number of EMAs, keyed "ema1", "ema2", ... "emaK" in the order of their decays (the official code's
model_ema1 / model_ema2 are ema1 / ema2); checkpoints store them under those keys.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

EMA_KEY = re.compile(r"ema([1-9][0-9]*)")  # "ema1".."emaK": checkpoint keys of the weight sets after "model"


def ema_key(index: int) -> str:
    """The key of the EMA at 0-based position `index` of a run's decays: 0 -> "ema1"."""
    return f"ema{index + 1}"


def ema_index(key: str) -> int | None:
    """The 0-based position of an EMA key ("ema3" -> 2), or None for any other string."""
    m = EMA_KEY.fullmatch(key)
    return int(m.group(1)) - 1 if m else None


def check_decays(decays: Sequence[float], what: str = "--ema") -> None:
    """Each decay in (0, 1), no two equal (the decay names its EMA for `--ema 0.9998`); raises ValueError."""
    if not decays:
        raise ValueError(f"{what}: give at least one EMA decay, e.g. 0.9999,0.9996")
    for d in decays:
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0.0 < d < 1.0:
            raise ValueError(f"{what}: each EMA decay must be a number in (0, 1), got {d!r}")
    if len(set(decays)) != len(decays):
        raise ValueError(f"{what}: the EMA decays must be distinct, got {','.join(map(str, decays))}")
