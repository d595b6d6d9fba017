"""How a run's EMAs are named and which decays are valid; free of torch, so the CLI checks --ema without it.

A run keeps any number of EMAs, keyed "ema1", "ema2", ... "emaK" in the order of their decays (the official code's
model_ema1 / model_ema2 are ema1 / ema2); checkpoints store them under those keys.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

from jitrs.errors import UserError

RAW = ("none", "model")  # --ema values that select the raw (non-averaged) weights
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


def select_weight_set(spec: str | None, sets: Mapping[str, float | None], holder: str, param: str = "ema") -> str:
    """The key among `sets` (weight-set key -> EMA decay, None where unknown or not an EMA; "model" first, then
    ema1..emaK) that a user's `--ema` value names: "1".."K" (position), "ema3" (key), "0.9998" (decay), "none" or
    "model" (the raw weights); None takes "ema1" when held, else the only set. UserError naming `holder` and the
    sets it holds otherwise."""
    kind, wanted = _ema_request(spec, param)
    if kind is None and wanted is None:
        if "ema1" in sets or len(sets) != 1:
            kind, wanted = "ema1", "ema1"
        else:
            return next(iter(sets))
    if kind is None:  # a decay
        assert wanted is not None
        decay = float(wanted)
        emas = {k: d for k, d in sets.items() if ema_index(k) is not None and d is not None}
        kind = next((k for k, d in emas.items() if math.isclose(d, decay)), None)
        wanted = f"EMA of decay {wanted}"
    if kind is None or kind not in sets:
        flag = f"--{param.replace('_', '-')} {spec}: " if spec is not None else ""
        raise UserError(f"{flag}{holder} holds no {wanted} weights; it holds {describe_sets(sets)}")
    return kind


def describe_sets(sets: Mapping[str, float | None]) -> str:
    """The weight sets held, for messages: "model, ema1 (0.9999), ema2 (0.9996)"."""
    return ", ".join(
        k if ema_index(k) is None else f"{k} ({'decay unknown' if d is None else f'{d:g}'})" for k, d in sets.items()
    )


def check_ema_spec(spec: str | None, param: str = "ema") -> None:
    """Refuse an `--ema` value that can name no weight set in any checkpoint (before one is read)."""
    _ema_request(spec, param)


def _ema_request(spec: str | None, param: str) -> tuple[str | None, str | None]:
    """(key, what was asked) for a key, a position or the raw weights; (None, spec) for a decay; (None, None)
    for the default."""
    if spec is None:
        return None, None
    text = spec.strip().lower()
    if text in RAW:
        return "model", "raw model"
    if ema_index(text) is not None:
        return text, text
    if text.isdigit() and int(text) >= 1:
        return f"ema{int(text)}", f"ema{int(text)}"
    try:
        decay = float(text)
    except ValueError:
        decay = math.nan
    if not 0.0 < decay < 1.0:
        raise UserError(
            f"--{param.replace('_', '-')} {spec}: name a weight set by position (1, 2, ...), key (ema2), decay "
            f"(0.9996), or none for the raw model"
        )
    return None, text
