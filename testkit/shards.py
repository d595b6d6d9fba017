"""Small datasets in every source layout jitrs trains on: random images as an ImageFolder, tar shards, parquet."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image


def random_images(n: int, size: int = 8, seed: int = 0) -> np.ndarray:
    """(n, size, size, 3) uint8 noise: every image differs, so a decoded image tells which one it was."""
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """An uncompressed tar holding `members` (name, bytes) in order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def image_folder(root: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """root/train/c<label>/<i>.png for each image; returns root."""
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder = root / "train" / f"c{label}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:04d}.png").write_bytes(png(image))
    return root


def write_parquet(
    path: Path, images: list[bytes | None], labels: list[int | None], row_group: int, names: list[str] | None = None
) -> Path:
    """A Hugging Face style parquet file: image struct<bytes, path>, label int64, ClassLabel names in the metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    image = pa.array(
        [None if b is None else {"bytes": b, "path": f"{i}.png"} for i, b in enumerate(images)],
        type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
    )
    table = pa.table({"image": image, "label": pa.array(labels, type=pa.int64())})
    if names is not None:
        meta = {"info": {"features": {"image": {"_type": "Image"}, "label": {"names": names, "_type": "ClassLabel"}}}}
        table = table.replace_schema_metadata({"huggingface": json.dumps(meta)})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=row_group)
    return path
