"""Feature networks with random weights, written by the test to a file the real loaders read.

Published weights (Inception, DINOv2) cannot be downloaded in tests; a random network of the same architecture
exercises every line of the loading, resizing and metric code, and its features still tell images apart.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch_fidelity.feature_extractor_inceptionv3 as tf_inception
from torch import nn

from jitrs.dinov2 import DinoV2


class _RandomInception(tf_inception.FeatureExtractorInceptionV3):
    """torch-fidelity's InceptionV3 left at a random init (its constructor insists on loading weights)."""

    def load_state_dict(self, state_dict, strict=True, assign=False):  # type: ignore[no-untyped-def]
        return None


def random_inception_weights(folder: Path, seed: int = 0) -> Path:
    """folder/random-inception.pth: a random Inception (He init, so features neither vanish nor blow up through
    90 layers), saved as a state dict like the published pt_inception-2015-12-05-6726825d.pth."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({}, folder / "empty.pth")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = _RandomInception(
            "inception-v3-compat", ["2048"], feature_extractor_weights_path=str(folder / "empty.pth")
        )
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        nn.init.normal_(net.fc.weight, std=2.0)
    path = folder / "random-inception.pth"
    torch.save(net.state_dict(), path)
    (folder / "empty.pth").unlink()
    return path


def random_dinov2_weights(folder: Path, dim: int = 64, depth: int = 2, seed: int = 0) -> Path:
    """folder/random-dinov2.pth: a narrow random DINOv2 ViT/14 (dim wide, depth blocks) with the published
    file's state dict keys, so the real loader reads it (the published ViT-L/14 is 1024 wide, 24 deep)."""
    folder.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = DinoV2(dim, depth)
        for p in net.parameters():
            nn.init.normal_(p, std=0.02 if p.ndim > 1 else 0.1)
        with torch.no_grad():
            for block in net.blocks:
                block.ls1.gamma.fill_(1.0)
                block.ls2.gamma.fill_(1.0)
            net.norm.weight.fill_(1.0)
    path = folder / "random-dinov2.pth"
    torch.save(net.state_dict(), path)
    return path
