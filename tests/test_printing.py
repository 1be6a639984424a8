"""The printable cube and board: exact physical scale, the renderer's own markings, a net that folds right."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from discopose._errors import ConfigError
from discopose.calibration.boards import BoardSpec
from discopose.printing import CUBE_NET, GLUE_TABS, largest_cube_m, write_board_pdf, write_cube_pdf
from discopose.render.objects import CUBE_FACES, FACE_PX, make_marked_cube

pymupdf = pytest.importorskip("pymupdf")
DPI = 300
MM_PER_PX = 25.4 / DPI
FACES = {letter: tuple(np.array(v, float) for v in axes) for letter, *axes in CUBE_FACES}


def _rasterize(path) -> tuple[np.ndarray, tuple[float, float]]:
    page = pymupdf.open(str(path))[0]
    pixmap = page.get_pixmap(dpi=DPI)
    image = np.frombuffer(pixmap.samples, np.uint8).reshape(pixmap.height, pixmap.width, pixmap.n)[..., :3]
    return image, (page.rect.width / 72 * 25.4, page.rect.height / 72 * 25.4)


def _on_face(letter: str, u: float, v: float) -> np.ndarray:
    """3D point (cube of edge 2) at image coordinates (u right, v down) in [0, 1] on a face."""
    normal, right, down = FACES[letter]
    return normal + (2 * u - 1) * right + (2 * v - 1) * down


def _edge(letter: str, side: str) -> frozenset:
    ends = {"top": ((0, 0), (1, 0)), "bottom": ((0, 1), (1, 1)), "left": ((0, 0), (0, 1)), "right": ((1, 0), (1, 1))}
    return frozenset(tuple(np.round(_on_face(letter, *end), 6)) for end in ends[side])


def test_faces_are_seen_unmirrored_from_outside():
    for letter, (normal, right, down) in FACES.items():
        assert np.allclose(np.cross(right, down), -normal), letter


def test_net_folds_into_the_renderer_cube_and_tabs_close_it():
    cells = {(face.col, face.row): face.letter for face in CUBE_NET}
    folds = set()
    for (col, row), letter in cells.items():
        if (col + 1, row) in cells:
            assert _edge(letter, "right") == _edge(cells[col + 1, row], "left"), (letter, cells[col + 1, row])
            folds.add(_edge(letter, "right"))
        if (col, row + 1) in cells:
            assert _edge(letter, "bottom") == _edge(cells[col, row + 1], "top"), (letter, cells[col, row + 1])
            folds.add(_edge(letter, "bottom"))
    glued = {_edge(letter, side) for letter, side in GLUE_TABS}
    all_edges = {_edge(letter, side) for letter in FACES for side in ("top", "bottom", "left", "right")}
    assert len(all_edges) == 12 and len(folds) == 5
    assert glued.isdisjoint(folds) and glued | folds == all_edges


def _face_cells(texture: np.ndarray) -> dict:
    cells = {}
    for index, (letter, *_axes) in enumerate(CUBE_FACES):
        col, row = index % 3, index // 3
        cells[letter] = texture[row * FACE_PX:(row + 1) * FACE_PX, col * FACE_PX:(col + 1) * FACE_PX]
    return cells


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def test_printed_cube_has_exact_scale_and_the_renderers_faces(tmp_path):
    out = tmp_path / "cube.pdf"
    write_cube_pdf(str(out), size_m=0.057, paper="a4")
    image, page_mm = _rasterize(out)
    assert page_mm == pytest.approx((297.0, 210.0), abs=0.1)
    # Face background (the renderer's default 0.9 grey) spans the net: 4 edges wide, 3 tall.
    face_grey = (np.abs(image.astype(int) - 230) <= 8).all(-1).astype(np.uint8)
    # Opening drops the anti-aliased fringe of thin lines (tab outlines, text), which passes through grey too.
    face_grey = cv2.morphologyEx(face_grey, cv2.MORPH_OPEN, np.ones((7, 7), np.uint8))
    ys, xs = np.nonzero(face_grey)
    width_mm, height_mm = (xs.max() - xs.min() + 1) * MM_PER_PX, (ys.max() - ys.min() + 1) * MM_PER_PX
    assert width_mm / 4 == pytest.approx(57.0, rel=0.005)
    assert height_mm / 3 == pytest.approx(57.0, rel=0.005)

    edge_px = (width_mm / 4) / MM_PER_PX
    rendered = {letter: cell.mean(-1) < 128 for letter, cell in _face_cells(make_marked_cube().texture).items()}
    for face in CUBE_NET:
        x0, y0 = xs.min() + face.col * edge_px, ys.min() + face.row * edge_px
        crop = image[int(round(y0)):int(round(y0 + edge_px)), int(round(x0)):int(round(x0 + edge_px))]
        printed = cv2.resize(crop, (FACE_PX, FACE_PX), interpolation=cv2.INTER_AREA).mean(-1) < 128
        # The printed face matches its own rendered face, and no other face in any in-plane rotation.
        own = _iou(printed, rendered[face.letter])
        others = [_iou(printed, np.rot90(mask, k)) for letter, mask in rendered.items() for k in range(4)
                  if (letter, k) != (face.letter, 0)]
        # Measured: own 0.81-0.92, nearest other (B/D, R/B at 64 px) 0.09-0.16 lower.
        assert own > 0.75, (face.letter, own)
        assert own > max(others) + 0.05, (face.letter, own, max(others))


def test_a_cube_too_large_for_the_paper_names_the_largest_that_fits(tmp_path):
    out = tmp_path / "big.pdf"
    largest = largest_cube_m("a4")
    with pytest.raises(ConfigError, match=f"largest that fits is {largest * 1000:.1f} mm"):
        write_cube_pdf(str(out), size_m=0.08, paper="a4")
    assert not out.exists()
    assert largest_cube_m("letter") != largest
    write_cube_pdf(str(out), size_m=np.floor(largest * 1e4) / 1e4, paper="a4")
    assert out.stat().st_size > 0


def test_printed_board_squares_measure_their_size(tmp_path):
    spec = BoardSpec.parse("chessboard:7x5:0.03")
    out = tmp_path / "board.pdf"
    write_board_pdf(str(out), spec, paper="letter")
    image, page_mm = _rasterize(out)
    assert sorted(page_mm) == pytest.approx([215.9, 279.4], abs=0.1)
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    found, corners = cv2.findChessboardCorners(gray, (spec.cols, spec.rows))
    assert found
    corners = cv2.cornerSubPix(gray, corners, (11, 11), (-1, -1),
                               (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 50, 0.01)).reshape(spec.rows,
                                                                                                      spec.cols, 2)
    along_rows = np.linalg.norm(np.diff(corners, axis=1), axis=-1).mean() * MM_PER_PX
    along_cols = np.linalg.norm(np.diff(corners, axis=0), axis=-1).mean() * MM_PER_PX
    assert along_rows == pytest.approx(30.0, rel=0.005) and along_cols == pytest.approx(30.0, rel=0.005)
