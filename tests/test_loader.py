"""The data plan (shuffle, shards, drop_last, flips) and the threaded loader (pixels, labels, resume, bad files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from jitrs.dataset import build_index
from jitrs.errors import UserError
from jitrs.loader import Batch, Loader, Plan

SIZE = 8
CPU = torch.device("cpu")


def test_plan_shards_are_disjoint_and_cover_each_global_batch() -> None:
    plan_args = {"num_images": 103, "micro_batch": 4, "accum": 3, "world_size": 2, "seed": 7}
    plans = [Plan(**plan_args, rank=r) for r in range(2)]
    assert plans[0].global_batch == 24 and plans[0].steps_per_epoch == 4  # 103 // 24, the tail is dropped
    for epoch in range(2):
        perm, _ = plans[0].epoch_order(epoch)
        seen: list[int] = []
        for step in range(epoch * 4, epoch * 4 + 4):
            batch_ids = []
            for plan in plans:
                for a in range(3):
                    e, where = plan.positions(step, a)
                    assert e == epoch
                    batch_ids += perm[where].tolist()
            k = step - epoch * 4
            assert sorted(batch_ids) == sorted(perm[k * 24 : (k + 1) * 24].tolist())
            seen += batch_ids
        assert len(seen) == len(set(seen)) == 96  # each image at most once per epoch over all ranks


def test_plan_same_global_batch_same_sub_batches_whatever_the_split() -> None:
    """2 ranks × 1 micro-step and 1 rank × 2 micro-steps decode the same images under the same sub-batch ids."""
    n = 50
    two_ranks = {
        Plan(n, 5, accum=1, world_size=2, rank=r).sub_batch(3, 0): Plan(n, 5, 1, 2, r).positions(3, 0) for r in range(2)
    }
    one_rank = {Plan(n, 5, accum=2).sub_batch(3, a): Plan(n, 5, accum=2).positions(3, a) for a in range(2)}
    assert two_ranks == one_rank


def test_epoch_order_depends_on_seed_and_epoch_only() -> None:
    plan = Plan(1000, 10, seed=3)
    perm, flips = plan.epoch_order(5)
    perm2, flips2 = Plan(1000, 20, world_size=2, rank=1, seed=3).epoch_order(5)
    assert np.array_equal(perm, perm2) and np.array_equal(flips, flips2)
    assert sorted(perm.tolist()) == list(range(1000))
    assert not np.array_equal(perm, plan.epoch_order(6)[0])
    assert not np.array_equal(perm, Plan(1000, 10, seed=4).epoch_order(5)[0])
    assert 0.4 < flips.mean() < 0.6


@pytest.fixture
def folder(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """3 classes of random SIZE×SIZE PNGs (the ADM crop leaves them unchanged), pixels kept for checking."""
    rng = np.random.default_rng(0)
    pixels = {}
    for c in range(3):
        (tmp_path / "train" / f"c{c}").mkdir(parents=True)
        for i in range(7):
            img = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
            path = tmp_path / "train" / f"c{c}" / f"{i}.png"
            Image.fromarray(img).save(path)
            pixels[str(path.resolve())] = img
    return tmp_path, pixels


def expected_batch(index, plan: Plan, pixels, step: int, a: int) -> tuple[np.ndarray, np.ndarray]:
    epoch, where = plan.positions(step, a)
    perm, flips = plan.epoch_order(epoch)
    imgs = []
    for i, flip in zip(perm[where], flips[where], strict=True):
        img = pixels[index.names([i])[0]]
        imgs.append(img[:, ::-1] if flip else img)
    return np.stack(imgs), index.labels[perm[where]]


def as_uint8(x: torch.Tensor) -> np.ndarray:
    """Invert the loader's x / 255 · 2 − 1 to NHWC uint8."""
    return ((x + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("device", [CPU, pytest.param(torch.device("cuda"), marks=pytest.mark.gpu)])
def test_loader_delivers_shuffled_flipped_scaled_batches(folder, device: torch.device) -> None:
    root, pixels = folder
    index = build_index(root)
    plan = Plan(len(index), micro_batch=4, accum=2, seed=11)  # 21 images, 2 steps per epoch
    with Loader(index, SIZE, plan, device, workers=2, depth=2) as loader:
        got = []
        for batch in loader:
            assert batch.x.device.type == device.type
            got.append(batch)
            if len(got) == 10:
                break
    got = [Batch(b.x.cpu(), b.y.cpu(), b.step, b.accum_index, b.epoch) for b in got]
    flipped = 0
    for k, batch in enumerate(got):
        step, a = divmod(k, 2)
        assert (batch.step, batch.accum_index, batch.epoch) == (step, a, step // 2)
        assert batch.x.shape == (4, 3, SIZE, SIZE) and batch.x.dtype == torch.float32
        assert batch.y.dtype == torch.int64 and batch.x.is_contiguous(memory_format=torch.channels_last)
        assert batch.x.min() >= -1.0 and batch.x.max() <= 1.0
        images, labels = expected_batch(index, plan, pixels, step, a)
        assert np.array_equal(as_uint8(batch.x), images)
        assert batch.y.tolist() == labels.tolist()
        epoch, where = plan.positions(step, a)
        flipped += int(plan.epoch_order(epoch)[1][where].sum())
    assert 0 < flipped < 40  # flips really happen, and not on every image


def test_loader_can_start_at_any_step(folder) -> None:
    root, _ = folder
    index = build_index(root)
    plan = Plan(len(index), micro_batch=3, accum=2, seed=1)
    with Loader(index, SIZE, plan, CPU) as full:
        reference = [b.x for _, b in zip(range(14), full, strict=False)]
    with Loader(index, SIZE, plan, CPU, start_step=4, workers=3) as resumed:
        later = [b for _, b in zip(range(6), resumed, strict=False)]
    assert [b.step for b in later] == [4, 4, 5, 5, 6, 6]
    for b, ref in zip(later, reference[8:], strict=True):
        assert torch.equal(b.x, ref)


def test_bad_images_are_logged_counted_and_refilled(folder, tmp_path: Path) -> None:
    root, pixels = folder
    bad = root / "train" / "c1" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a PNG")
    bad_jpeg = root / "train" / "c2" / "truncated.jpg"
    Image.fromarray(np.zeros((SIZE, SIZE, 3), np.uint8)).save(bad_jpeg, quality=90)
    bad_jpeg.write_bytes(bad_jpeg.read_bytes()[:40])
    index = build_index(root)
    bad_paths = {str(bad.resolve()), str(bad_jpeg.resolve())}
    log = tmp_path / "bad.log"
    plan = Plan(len(index), micro_batch=23, seed=0)  # one batch holds all 23 images, the two bad ones included
    with Loader(index, SIZE, plan, CPU, bad_log=log) as loader:
        batches = [b for _, b in zip(range(2), loader, strict=False)]
    assert set(loader.bad_files) == bad_paths
    logged = log.read_text().splitlines()
    assert len(logged) == 2 and {line.split("\t")[0] for line in logged} == bad_paths  # once per file
    good_images = {(img[:, ::-1] if f else img).tobytes() for f in (False, True) for img in pixels.values()}
    for b in batches:
        got = as_uint8(b.x)
        for i in range(23):
            assert got[i].tobytes() in good_images  # every slot is a real image, none is a zeroed slot
        for slot, image_id in enumerate(plan.epoch_order(b.epoch)[0]):
            if index.names([image_id])[0] in bad_paths:
                twin = [j for j in range(23) if j != slot and np.array_equal(got[j], got[slot])]
                assert twin and b.y[slot] == b.y[twin[0]]  # refilled with a copy of another slot, with its label


def test_a_batch_of_only_bad_images_stops_with_a_clear_error(tmp_path: Path) -> None:
    for i in range(2):
        (tmp_path / "c").mkdir(exist_ok=True)
        (tmp_path / "c" / f"{i}.jpg").write_bytes(b"not a jpeg")
    index = build_index(tmp_path)
    with Loader(index, SIZE, Plan(2, 2), CPU) as loader, pytest.raises(UserError, match="every image of a batch"):
        next(iter(loader))


def test_batch_larger_than_dataset(folder) -> None:
    index = build_index(folder[0])
    with pytest.raises(UserError, match="larger than the dataset"):
        Loader(index, SIZE, Plan(len(index), 16, world_size=2), CPU)
