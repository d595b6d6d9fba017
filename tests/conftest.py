"""Shared fixtures: real photographs that ship with the test dependencies (no downloads)."""

from __future__ import annotations

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
