"""Shared fixtures: real photographs that ship with the test dependencies (no downloads)."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import pytest
import sklearn
import torch

# As jitrs does wherever it computes on a CPU (jitrs.device): denormals are slow on x86 and JiT's zero-initialised
# layers produce them early in training.
torch.set_flush_denormal(True)

_SKLEARN_IMAGES = Path(sklearn.__file__).parent / "datasets" / "images"

REAL_PHOTOS: dict[str, Path] = {
    "china": _SKLEARN_IMAGES / "china.jpg",  # 640x427, 4:2:0
    "flower": _SKLEARN_IMAGES / "flower.jpg",  # 640x427, 4:2:0
    "grace_hopper": Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg",  # 512x600
}


@pytest.fixture(params=sorted(REAL_PHOTOS))
def real_photo(request: pytest.FixtureRequest) -> Path:
    """Each real JPEG photograph in turn."""
    return REAL_PHOTOS[request.param]


@pytest.fixture(scope="session")
def real_photos() -> list[Path]:
    """All the real JPEG photographs, in a fixed order."""
    return [REAL_PHOTOS[name] for name in sorted(REAL_PHOTOS)]


# `make test` runs pytest-xdist workers (one per core). Each worker computes on one thread so that two workers do
# not fight over the cores; a module's expensive module/session fixtures are built once, by keeping its tests on
# one worker (an xdist_group); and the longest tests and groups start first, so the run does not end waiting on
# one of them.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

# Modules whose tests share an expensive fixture (a trained classifier, shared training runs, Inception features).
_GROUPS = {
    "test_builtin": "judge",
    "test_ema": "ema-runs",
    "test_online_eval": "ema-runs",
    "test_eval": "eval-sets",
    "test_sweep": "sweep",
    "test_toy": "toy-grid",
    "test_scoring": "scoring",
}
# Tests or groups that take a minute or more on a 2-core machine, longest first.
_LONG_FIRST = ["test_demo_recipe_learns_digits", "judge", "test_gpu_check", "eval-sets", "ema-runs", "test_wheel"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def module(item: pytest.Item) -> str:
        return item.path.stem

    for item in items:
        if group := _GROUPS.get(module(item)):
            item.add_marker(pytest.mark.xdist_group(group))

    def rank(item: pytest.Item) -> int:
        keys = [item.name.partition("[")[0], module(item), _GROUPS.get(module(item), "")]
        return min((_LONG_FIRST.index(k) for k in keys if k in _LONG_FIRST), default=len(_LONG_FIRST))

    items.sort(key=rank)  # stable: the rest keep their order
