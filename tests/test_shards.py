"""Tar and parquet shards as training sources: the index (layout, labels, classes, bad members, cache), the loader
on them (pixels, bad members named by shard and member, two ranks), and an exact resume of a training run."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from jitrs.dataset import build_index
from jitrs.errors import UserError
from jitrs.loader import Loader, Plan
from testkit.cli import PYTHONPATH, one_error_line, run_cli
from testkit.shards import image_folder, png, random_images, write_parquet, write_tar

SIZE = 8
CPU = torch.device("cpu")
IMAGES = random_images(12, SIZE)


def sample(key: str, i: int, label: str = "cls") -> list[tuple[str, bytes]]:
    """The members of one sample: KEY.png (image i) and its label (KEY.cls = i % 3, or KEY.class = a name)."""
    value = str(i % 3) if label == "cls" else ["zebra", "ant", "Moth"][i % 3]
    return [(f"{key}.png", png(IMAGES[i])), (f"{key}.{label}", value.encode())]


def as_uint8(x: torch.Tensor) -> np.ndarray:
    return ((x + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def which(image: np.ndarray) -> int:
    """The IMAGES index of a decoded image (either way round: flips are random)."""
    for i, ref in enumerate(IMAGES):
        if np.array_equal(image, ref) or np.array_equal(image, ref[:, ::-1]):
            return i
    raise AssertionError("not one of the images")


@pytest.fixture
def shards(tmp_path: Path) -> Path:
    """Two good shards (the second with nested member paths and a non-image member) and DATA/classes.txt."""
    root = tmp_path / "shards"
    write_tar(root / "b-001.tar", [m for i in range(4, 8) for m in sample(f"dir/{i:03d}", i)] + [("x.json", b"{}")])
    write_tar(root / "a-000.tar", [m for i in range(4) for m in sample(f"{i:03d}", i)])
    (root / "classes.txt").write_text("n01\nn02\nn03\n")
    return root


def test_tar_index_holds_byte_ranges_in_shard_then_member_order(shards: Path) -> None:
    index = build_index(shards)
    assert index.kind == "tar" and len(index) == 8 and not index.skipped
    assert index.classes == ["n01", "n02", "n03"]  # from classes.txt
    assert index.labels.tolist() == [i % 3 for i in range(8)]
    assert index.names([0, 5]) == [f"{shards / 'a-000.tar'}:000.png", f"{shards / 'b-001.tar'}:dir/005.png"]
    for i, (path, offset, length) in enumerate(index.sources(range(8))):
        with open(path, "rb") as f:
            f.seek(offset)
            assert f.read(length) == png(IMAGES[i])  # the member's bytes, exactly
    (shards / "classes.txt").unlink()
    assert build_index(shards).classes == ["0", "1", "2"]  # without it: 0..max id


def test_class_name_labels_are_sorted_like_folder_names(tmp_path: Path) -> None:
    write_tar(tmp_path / "s.tar", [m for i in range(6) for m in sample(f"{i}", i, label="class")])
    index = build_index(tmp_path)
    assert index.classes == ["Moth", "ant", "zebra"]
    assert index.labels.tolist() == [2, 1, 0, 2, 1, 0]


def test_bad_members_and_shards_are_left_out_and_named(shards: Path) -> None:
    good = build_index(shards)
    truncated = write_tar(shards / "c-truncated.tar", [m for i in (8, 9) for m in sample(f"t{i}", i)])
    data = truncated.read_bytes()
    truncated.write_bytes(data[: data.index(png(IMAGES[9])) + 20])  # cut inside the second image
    write_tar(shards / "d-bad.tar", [
        ("nolabel.png", png(IMAGES[10])),
        *sample("dup", 11), ("dup.jpg", b"second image"),
        ("word.png", png(IMAGES[10])), ("word.cls", b"seven"),
        ("big.png", png(IMAGES[10])), ("big.cls", b"3"),  # classes.txt names 3 classes: ids 0..2
    ])  # fmt: skip
    (shards / "e-empty.tar").write_bytes(b"")
    write_tar(shards / "f-no-members.tar", [])
    (shards / "g-not-a.tar").write_bytes(b"this is not a tar file" * 40)
    index = build_index(shards)
    assert len(index) == len(good) + 2  # t8 and dup
    assert index.names([8, 9]) == [f"{shards / 'c-truncated.tar'}:t8.png", f"{shards / 'd-bad.tar'}:dup.png"]
    reasons = {name.removeprefix(str(shards) + "/"): why for name, why in index.skipped}
    assert set(reasons) == {
        "c-truncated.tar:t9.png", "d-bad.tar:nolabel.png", "d-bad.tar:dup.jpg", "d-bad.tar:word.png",
        "d-bad.tar:big.png", "g-not-a.tar",
    }  # fmt: skip
    assert "truncated shard" in reasons["c-truncated.tar:t9.png"]
    assert "no label" in reasons["d-bad.tar:nolabel.png"]
    assert "a second image" in reasons["d-bad.tar:dup.jpg"]
    assert "'seven' is not an integer 0..2" in reasons["d-bad.tar:word.png"]
    assert "'3' is not an integer 0..2" in reasons["d-bad.tar:big.png"]
    assert "not a tar file" in reasons["g-not-a.tar"]


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"a.tar": b""}, "no labelled images in the 1 shard"),
        ({"a.tar.gz": b"x"}, "compressed tar shards, which cannot be read in place"),
    ],
)
def test_unusable_shard_folders_are_one_clear_error(tmp_path: Path, files: dict[str, bytes], message: str) -> None:
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    with pytest.raises(UserError, match=message) as caught:
        build_index(tmp_path)
    assert caught.value.for_cli().startswith("--data")


def test_cache_rescans_only_the_shards_that_changed(shards: Path, tmp_path: Path) -> None:
    cache = tmp_path / "run" / "index.json"
    build_index(shards, cache=cache)
    payload = json.loads(cache.read_text())
    assert [s["name"] for s in payload["shards"]] == ["a-000.tar", "b-001.tar"]
    payload["shards"][0]["members"][0] = "tampered.png"  # a fresh entry is trusted, which proves it is read
    cache.write_text(json.dumps(payload))
    assert build_index(shards, cache=cache).names([0])[0].endswith(":tampered.png")
    write_tar(shards / "b-001.tar", [m for i in range(4, 6) for m in sample(f"{i:03d}", i)])  # rewritten: 2 samples
    os.utime(shards / "b-001.tar", ns=(1, 1))
    index = build_index(shards, cache=cache)
    assert len(index) == 6
    assert index.names([0])[0].endswith(":tampered.png")  # a-000.tar was not scanned again
    assert index.names([5])[0].endswith("b-001.tar:005.png")


def test_loader_reads_members_in_place_and_names_bad_ones(shards: Path, tmp_path: Path) -> None:
    write_tar(shards / "c-bad.tar", [("bad.png", b"\x89PNG\r\n\x1a\n not really"), ("bad.cls", b"1"),
                                     ("nolabel.png", png(IMAGES[9]))])  # fmt: skip
    index = build_index(shards)
    log = tmp_path / "bad.log"
    plan = Plan(len(index), micro_batch=len(index), seed=3)  # one batch holds every image, the bad one included
    with Loader(index, SIZE, plan, CPU, bad_log=log) as loader:
        batch = next(iter(loader))
    bad, nolabel = f"{shards / 'c-bad.tar'}:bad.png", f"{shards / 'c-bad.tar'}:nolabel.png"
    assert set(loader.bad_files) == {bad, nolabel}  # the decode failure and the member the index left out
    assert {line.split("\t")[0] for line in log.read_text().splitlines()} == {bad, nolabel}
    perm, flips = plan.epoch_order(0)
    got = as_uint8(batch.x)
    for slot, (i, flip) in enumerate(zip(perm.tolist(), flips.tolist(), strict=True)):
        if i < 8:
            assert np.array_equal(got[slot], IMAGES[i][:, ::-1] if flip else IMAGES[i])
            assert batch.y[slot] == i % 3
        else:  # the bad member's slot holds a copy of another image of the batch, with that image's label
            assert batch.y[slot] == (which(got[slot]) % 3)


def test_two_ranks_cover_each_image_once_per_epoch(tmp_path: Path) -> None:
    write_tar(tmp_path / "s0.tar", [m for i in range(7) for m in sample(f"{i}", i)])
    write_tar(tmp_path / "s1.tar", [m for i in range(7, 12) for m in sample(f"{i}", i)])
    index = build_index(tmp_path)
    seen: list[list[int]] = [[], []]
    for rank in range(2):
        plan = Plan(len(index), micro_batch=3, world_size=2, rank=rank, seed=9)  # 2 steps per epoch, no tail
        with Loader(index, SIZE, plan, CPU) as loader:
            for _, batch in zip(range(2 * plan.steps_per_epoch), loader, strict=False):
                assert batch.epoch == len(seen[rank]) // (3 * plan.steps_per_epoch)
                seen[rank] += [which(img) for img in as_uint8(batch.x)]
    for epoch in range(2):
        both = seen[0][epoch * 6 : epoch * 6 + 6] + seen[1][epoch * 6 : epoch * 6 + 6]
        assert sorted(both) == list(range(12))  # disjoint ranks, every image once


# ---------------------------------------------------------------------------------------------- parquet
@pytest.fixture
def parquet(tmp_path: Path) -> Path:
    """A Hugging Face layout: DATA/data/{train,validation}-*.parquet, row groups of 3, a row without a label, a
    row with a corrupt image."""
    root = tmp_path / "hf"
    images: list[bytes | None] = [png(img) for img in IMAGES[:7]]
    images[5] = b"not an image"
    labels: list[int | None] = [0, 1, 2, 0, -1, 1, 2]
    write_parquet(root / "data" / "train-00000-of-00002.parquet", images, labels, 3, ["tench", "goldfish", "shark"])
    write_parquet(
        root / "data" / "train-00001-of-00002.parquet", [png(IMAGES[7])], [1], 3, ["tench", "goldfish", "shark"]
    )
    write_parquet(root / "data" / "validation-00000-of-00001.parquet", [png(IMAGES[8])], [0], 3)
    return root


def test_parquet_index_and_loader(parquet: Path, tmp_path: Path) -> None:
    index = build_index(parquet, cache=tmp_path / "index.json")
    first = parquet / "data" / "train-00000-of-00002.parquet"
    assert index.kind == "parquet" and index.classes == ["tench", "goldfish", "shark"]  # the ClassLabel names
    assert index.labels.tolist() == [0, 1, 2, 0, 1, 2, 1]  # row 4 (label -1) left out; validation not used
    assert index.skipped == [(f"{first}:row 4", "no usable label (-1)")]
    assert index.names([4]) == [f"{first}:row 5"]
    assert build_index(parquet, cache=tmp_path / "index.json").labels.tolist() == index.labels.tolist()  # cached
    plan = Plan(len(index), micro_batch=len(index), seed=1, flip=False)
    with Loader(index, SIZE, plan, CPU) as loader:
        batch = next(iter(loader))
    assert set(loader.bad_files) == {f"{first}:row 4", f"{first}:row 5"}
    got, perm = as_uint8(batch.x), plan.epoch_order(0)[0]
    rows = [0, 1, 2, 3, 6, None, 7]  # index position -> IMAGES index (position 5 is the corrupt row)
    for slot, i in enumerate(perm.tolist()):
        if rows[i] is not None:
            assert np.array_equal(got[slot], IMAGES[rows[i]])


def test_parquet_without_pyarrow_is_one_line_naming_the_extra(parquet: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    (blocker / "pyarrow").mkdir(parents=True)
    (blocker / "pyarrow" / "__init__.py").write_text("raise ImportError('pyarrow is not installed')\n")
    result = run_cli(
        "prepare", "--data", parquet, "--out", tmp_path / "out", env={"PYTHONPATH": f"{blocker}:{PYTHONPATH}"}
    )
    assert one_error_line(result).endswith(
        "reading parquet shards needs pyarrow: install it with pip install 'jitrs[parquet]'"
    )


# ---------------------------------------------------------------------------------------------- training
def test_training_on_shards_resumes_exactly(tmp_path: Path) -> None:
    """A tiny run on tar shards made by `jitrs prepare`, stopped at step 2 and resumed to step 5 (past the end of
    the first epoch, 3 steps), logs the losses of the uninterrupted run bit for bit."""
    images, labels = random_images(24, 32, seed=4), np.arange(24) % 3
    image_folder(tmp_path / "folder", images, labels)
    assert (
        run_cli("prepare", "--data", tmp_path / "folder", "--out", tmp_path / "shards", "--shard-size", "5").returncode
        == 0
    )
    tiny = ["--model", "JiT-S/4", "--model-arg", "depth=1", "--model-arg", "hidden_size=16", "--model-arg",
            "num_heads=1", "--model-arg", "in_context_len=0", "--model-arg", "bottleneck_dim=8", "--res", "16",
            "--data", tmp_path / "shards", "--batch-size", "8", "--log-every", "1", "--ckpt-every", "100",
            "--sample-every", "0", "--seed", "2", "--blr", "1e-3", "--warmup-epochs", "0.5"]  # fmt: skip
    env = {"JITRS_CACHE": str(tmp_path / "cache")}

    def train(*args: str | Path) -> None:
        result = run_cli("train", *args, env=env)
        assert result.returncode == 0, result.stderr

    train(*tiny, "--out", tmp_path / "full", "--steps", "5")
    train(*tiny, "--out", tmp_path / "part", "--steps", "2")
    train("--resume", tmp_path / "part", "--steps", "5")

    def losses(run: Path) -> dict[int, float]:
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        return {r["step"]: r["loss"] for r in rows if "loss" in r}

    full, resumed = losses(tmp_path / "full"), losses(tmp_path / "part")
    assert list(full) == list(range(1, 6)) and full == resumed
    assert json.loads((tmp_path / "full" / "index.json").read_text())["kind"] == "tar"


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_long_member_names_of_ustar_gnu_and_pax_tars(tmp_path: Path, fmt: int) -> None:
    """A name over 100 bytes: ustar splits it into a prefix field, GNU and pax add extension headers (those the
    index reads through tarfile)."""
    key = "d" * 90 + "/" + "k" * 60
    with tarfile.open(tmp_path / "s.tar", "w", format=fmt) as tar:
        for name, data in sample(key, 4):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    index = build_index(tmp_path)
    assert index.names([0]) == [f"{tmp_path / 's.tar'}:{key}.png"] and index.labels.tolist() == [1]
    path, offset, length = index.sources([0])[0]
    with open(path, "rb") as f:
        assert os.pread(f.fileno(), length, offset) == png(IMAGES[4])


def test_class_folders_make_an_imagefolder_whatever_archives_lie_beside_them(tmp_path: Path) -> None:
    image_folder(tmp_path, IMAGES[:3], np.array([0, 1, 1]))
    write_tar(tmp_path / "train" / "ILSVRC2012_img_train.tar", [m for i in range(2) for m in sample(f"{i}", i)])
    (tmp_path / "train" / "extra.tar.gz").write_bytes(b"x")
    index = build_index(tmp_path)
    assert index.kind == "folder" and index.classes == ["c0", "c1"] and len(index) == 3


def test_a_process_pool_scan_gives_the_same_index(shards: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Many shards on many cores are scanned by worker processes (spawned); here forced for two shards."""
    import jitrs.shards

    threaded = build_index(shards)
    monkeypatch.setattr(jitrs.shards, "_PROCESS_POOL_MIN_SHARDS", 1)
    monkeypatch.setattr(jitrs.shards, "_PROCESS_POOL_MIN_CORES", 1)
    pooled = build_index(shards, threads=2)
    assert pooled.sources(range(len(pooled))) == threaded.sources(range(len(threaded)))
    assert pooled.names(range(len(pooled))) == threaded.names(range(len(threaded)))
    assert np.array_equal(pooled.labels, threaded.labels)
