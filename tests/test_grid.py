"""Image grids: the plain mosaic (sample previews) and the labelled one (training's sample grids)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from jitrs.grid import LABEL_PX, TITLE_PX, image_grid, write_labelled_grid


def test_image_grid_fills_a_short_last_row_with_black() -> None:
    tiles = np.stack([np.full((2, 2, 3), 10 * (i + 1), np.uint8) for i in range(5)])
    grid = image_grid(tiles, cols=3)
    assert grid.shape == (4, 6, 3)
    assert (grid[2:, 4:] == 0).all() and (grid[2:, 2:4] == 50).all() and (grid[:2, :2] == 10).all()


def test_labelled_grid_draws_each_tile_pixel_for_pixel(tmp_path: Path) -> None:
    rows, cols, size = 3, 4, 16
    colours = np.arange(1, rows * cols + 1, dtype=np.uint8) * 20
    images = np.stack([np.full((size, size, 3), c, np.uint8) for c in colours])
    path = tmp_path / "g.png"
    write_labelled_grid(path, images, ["zero", "one", "two"], "step 7")
    with Image.open(path) as im:
        pixels = np.asarray(im.convert("RGB"))
    tile = 48  # 16 px tiles are upscaled 3x, 2 px apart
    assert pixels.shape == (TITLE_PX + rows * (tile + 2) - 2, LABEL_PX + cols * (tile + 2) - 2, 3)
    for r in range(rows):
        for c in range(cols):
            y, x = TITLE_PX + r * (tile + 2), LABEL_PX + c * (tile + 2)
            inner = pixels[y + 2 : y + tile - 2, x + 2 : x + tile - 2]
            assert (inner == colours[r * cols + c]).all(), (r, c)
    assert (pixels[TITLE_PX + tile, LABEL_PX + 5] == 128).all()  # the grey gap under the first row
    band = pixels[TITLE_PX : TITLE_PX + tile, :LABEL_PX]
    assert (band < 128).any() and (band == 255).any()  # a dark label on white beside the first row
    assert not list(tmp_path.glob("*.tmp"))
