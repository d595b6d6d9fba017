"""Image grids: the mosaic of a sample folder's preview and of training's sample grids (labelled, one row per
class)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jitrs.atomic import atomic_path

PAD_GREY = 128  # visible between tiles on white and on black backgrounds
LABEL_PX, TITLE_PX = 90, 40  # the bands of a labelled grid that hold the row labels and the title


def image_grid(images: np.ndarray, cols: int, *, min_tile: int = 1, pad: int = 0) -> np.ndarray:
    """(B, S, S, 3) uint8 -> one (H, W, 3) mosaic, row-major, black where B runs out of a full last row.

    Tiles are upscaled (nearest) by the integer factor min_tile // S (at least 1) and separated by `pad` grey
    pixels.
    """
    b, s = images.shape[0], images.shape[1]
    cols = max(1, min(cols, b))
    rows = -(-b // cols)
    k = max(1, min_tile // s)
    full = np.zeros((rows * cols, s, s, 3), dtype=np.uint8)
    full[:b] = images
    tiles = full.reshape(rows, cols, s, s, 3).repeat(k, axis=2).repeat(k, axis=3)
    tiles = np.pad(tiles, ((0, 0), (0, 0), (0, pad), (0, pad), (0, 0)), constant_values=PAD_GREY)
    t = s * k + pad
    grid = tiles.transpose(0, 2, 1, 3, 4).reshape(rows * t, cols * t, 3)
    return np.ascontiguousarray(grid[: rows * t - pad, : cols * t - pad])


def write_labelled_grid(path: Path, images: np.ndarray, row_labels: Sequence[str], title: str) -> None:
    """One row of tiles per label, the label written on the left and `title` on top; a PNG, written atomically.

    The tile mosaic (`image_grid`, tiles at least 48 px, 2 px grey gaps) is drawn pixel for pixel, below a
    title band of TITLE_PX and right of a label band of LABEL_PX.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    rows = len(row_labels)
    grid = image_grid(images, images.shape[0] // rows, min_tile=48, pad=2)
    h, w = grid.shape[:2]
    dpi = 100
    fig_w, fig_h = LABEL_PX + w, TITLE_PX + h
    fig = Figure(figsize=(fig_w / dpi, fig_h / dpi), dpi=dpi)
    ax = fig.add_axes((LABEL_PX / fig_w, 0, w / fig_w, h / fig_h))
    ax.imshow(grid, interpolation="nearest", aspect="auto", extent=(0, w, h, 0))
    tile = (h + 2) / rows
    ax.set_yticks([tile * (r + 0.5) for r in range(rows)], [str(label)[:12] for label in row_labels], fontsize=9)
    ax.set_xticks([])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    fig.text(0.5, 1 - 4 / fig_h, title, ha="center", va="top", fontsize=9)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
