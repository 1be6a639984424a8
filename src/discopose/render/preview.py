"""Contact sheets of freshly rendered samples, to look at what a config produces."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from discopose._io import atomic_write_bytes
from discopose.render.config import RenderConfig
from discopose.viz import contact_sheet, draw_labels, encode_png


def render_preview(config: RenderConfig, count: int, out: str | Path, overlay: bool = False) -> Path:
    """Render samples 0..count-1 and tile every camera view into one PNG at ``out``."""
    from discopose.render.renderer import DiscoRenderer

    renderer = DiscoRenderer(config)
    tiles = []
    try:
        for index in range(count):
            _, views = renderer.render_index(index)
            for view in views.values():
                tiles.append(draw_labels(view["rgb"], view["labels"], renderer.object.keypoints_m)
                             if overlay else view["rgb"])
    finally:
        renderer.close()
    columns = len(config.camera_names) * max(1, int(np.ceil(np.sqrt(count / len(config.camera_names)))))
    return atomic_write_bytes(out, encode_png(contact_sheet(tiles, columns=min(columns, len(tiles)))))
