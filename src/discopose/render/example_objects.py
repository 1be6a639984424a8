"""Example user objects, made by code so that every figure for "your own object" can be reproduced.

* ``drill``: a power-drill-like part 106 mm across (diameter) (body, grip, chuck, battery), no symmetry, printed texture.
* ``can``: a 66 x 115 mm can whose label has only horizontal bands: a continuous symmetry about z.

Both are written as textured ``.glb`` files, in millimetres like BOP and CAD exports, so they exercise the
unit handling too.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

EXAMPLES = ("drill", "can")


def _texture_drill(px: int = 512) -> np.ndarray:
    rng = np.random.default_rng(7)
    image = np.full((px, px, 3), (40, 150, 210), np.uint8)  # a tool-brand teal
    cv2.rectangle(image, (0, px // 2), (px, px), (35, 35, 40), -1)  # dark lower half
    for i in range(6):  # a few logos and warning stickers, each a different colour and place
        x, y = rng.integers(20, px - 140, size=2)
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        cv2.rectangle(image, (int(x), int(y)), (int(x) + 110, int(y) + 50), colour, -1)
        cv2.putText(image, ["18V", "PRO", "DX", "!", "MAX", "42"][i], (int(x) + 8, int(y) + 40),
                    cv2.FONT_HERSHEY_DUPLEX, 1.3, (255, 255, 255), 3, cv2.LINE_AA)
    cv2.circle(image, (px // 4, px // 4), px // 10, (240, 200, 30), -1)
    return image


def _texture_can(px: int = 512) -> np.ndarray:
    image = np.zeros((px, px, 3), np.uint8)
    colours = [(200, 30, 40), (240, 240, 235), (30, 60, 160), (240, 240, 235), (200, 30, 40), (250, 200, 40)]
    edges = np.linspace(0, px, len(colours) + 1).astype(int)
    for colour, top, bottom in zip(colours, edges[:-1], edges[1:]):
        image[top:bottom] = colour  # rows only: the label reads the same all around the axis
    return image


def _box_uvs(mesh, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """UVs (trimesh: v up) from projecting each face on its dominant axis, normalised to the object's box,
    one of six atlas cells per signed axis so that opposite sides do not share a mirrored pattern."""
    mesh.unmerge_vertices()
    normals = np.asarray(mesh.face_normals)
    dominant = np.abs(normals).argmax(1)
    cell = dominant * 2 + (normals[np.arange(len(normals)), dominant] < 0)
    keep = np.array([[1, 2], [0, 2], [0, 1]])[dominant]
    uv = np.zeros((len(mesh.vertices), 2))
    for corner in range(3):
        ids = mesh.faces[:, corner]
        span = (high - low)
        local = (mesh.vertices[ids] - low) / span
        within = np.take_along_axis(local, keep, axis=1) * 0.9 + 0.05
        uv[ids, 0] = ((cell % 3) + within[:, 0]) / 3
        uv[ids, 1] = ((cell // 3) + within[:, 1]) / 2
    return uv


def make_example_object(name: str, out: str | Path, scale: float = 1.0) -> Path:
    """Write example object ``name`` (one of ``EXAMPLES``) as a textured .glb in millimetres, its size times
    ``scale`` (0.45: a 48 mm drill); returns the path."""
    import trimesh
    from PIL import Image

    from discopose._errors import ConfigError
    from discopose._io import atomic_write_bytes
    if name not in EXAMPLES:
        raise ConfigError(f"example object {name!r} is unknown; use one of {', '.join(EXAMPLES)}")
    if not 0 < scale <= 100:
        raise ConfigError(f"example object scale={scale}; use a factor in (0, 100]")
    if name == "drill":
        parts = [trimesh.creation.box((95, 34, 40), trimesh.transformations.translation_matrix((5, 0, 25))),
                 trimesh.creation.box((28, 28, 70), trimesh.transformations.translation_matrix((-20, 0, -22))),
                 trimesh.creation.cylinder(9, 36, transform=trimesh.transformations.translation_matrix((66, 0, 25))
                                           @ trimesh.transformations.rotation_matrix(np.pi / 2, (0, 1, 0))),
                 trimesh.creation.box((50, 40, 20), trimesh.transformations.translation_matrix((-14, 0, -62)))]
        mesh = trimesh.util.concatenate(parts)
        mesh.apply_translation(-mesh.bounds.mean(0))
        mesh.apply_scale(0.65)  # about 10 cm across (diameter 106 mm)
        low, high = mesh.bounds
        uv = _box_uvs(mesh, low, high)
        texture = _texture_drill()
    else:
        mesh = trimesh.creation.cylinder(33, 115, sections=64)
        mesh.unmerge_vertices()
        low, high = mesh.bounds
        angle = np.arctan2(mesh.vertices[:, 1], mesh.vertices[:, 0])
        # The label's rows run along z; its columns (around the axis) are all alike, so u does not matter.
        uv = np.column_stack([(angle + np.pi) / (2 * np.pi), (mesh.vertices[:, 2] - low[2]) / (high[2] - low[2])])
        texture = _texture_can()
    mesh.visual = trimesh.visual.TextureVisuals(uv=uv, image=Image.fromarray(texture))
    mesh.apply_scale(scale)
    out = Path(out)
    atomic_write_bytes(out, mesh.export(file_type="glb"))
    return out
