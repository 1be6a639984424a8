"""Printable objects at exact physical scale: the built-in cube's net and the calibration board.

A PDF page is laid out in millimetres (x right, y down from the page's top-left corner) and each raster is
placed with its physical extent, so a printer at 100% ("actual size") reproduces the sizes exactly. Every
page carries a scale bar and the sentence saying what to measure, because printers often rescale silently.

The cube's faces are drawn by :func:`discopose.render.objects.face_marking`, the same function that makes the
renderer's texture, so the physical cube and the rendered one cannot drift apart.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from discopose._errors import ConfigError
from discopose._io import atomic_write_bytes
from discopose.render.objects import CUBE_FACE_RGB, CUBE_FACES, CUBE_MARK_RGB, face_marking, paint_markings

PAPER_MM = {"a4": (210.0, 297.0), "letter": (215.9, 279.4)}  # (width, height), portrait
MARGIN_MM = 7.0       # most printers cannot print closer to the edge
FOOTER_MM = 14.0      # room under a board for the scale bar and the instructions
TAB_FRACTION = 0.18   # glue tab depth as a fraction of the face edge
SCALE_BAR_MM = 50.0
PRINT_FACE_PX = 768   # ~340 dpi at 57 mm: letters print sharp


@dataclass(frozen=True)
class NetFace:
    """One face of the printed net: its letter and its cell (column, row) in face units, row 0 on top."""
    letter: str
    col: int
    row: int


# A cross-shaped net. The strip F L B R goes once around the cube's z axis with each image upright
# (image up = +z), U folds up from F and D down from F; every face is seen from outside, unmirrored,
# exactly as the renderer maps the atlas (tests/test_printing.py checks each fold edge in 3D).
CUBE_NET = (NetFace("U", 0, 0), NetFace("F", 0, 1), NetFace("L", 1, 1), NetFace("B", 2, 1), NetFace("R", 3, 1),
            NetFace("D", 0, 2))
# The 7 edges that are glued (12 edges minus the 5 folds), each with its tab on this face's side.
GLUE_TABS = (("L", "top"), ("L", "bottom"), ("B", "top"), ("B", "bottom"), ("R", "top"), ("R", "bottom"),
             ("R", "right"))
NET_COLS, NET_ROWS = 4, 3


def _paper(paper: str) -> tuple[float, float]:
    if paper not in PAPER_MM:
        raise ConfigError(f"--paper {paper!r} is not known; use one of {', '.join(PAPER_MM)}")
    return PAPER_MM[paper]


def _landscape(paper: str) -> tuple[float, float]:
    width, height = _paper(paper)
    return max(width, height), min(width, height)


def largest_cube_m(paper: str = "a4") -> float:
    """The largest cube edge (m) whose net fits on one landscape page of ``paper`` inside the margins."""
    width, height = _landscape(paper)
    by_width = (width - 2 * MARGIN_MM) / (NET_COLS + TAB_FRACTION)
    by_height = (height - 2 * MARGIN_MM) / NET_ROWS  # the footer sits beside D, inside the net's box
    return min(by_width, by_height) / 1000.0


def face_image(letter: str, px: int = PRINT_FACE_PX) -> np.ndarray:
    """One face as printed: (px, px, 3) uint8 RGB, the renderer's default colours and markings."""
    if letter not in {face[0] for face in CUBE_FACES}:
        raise ConfigError(f"face {letter!r} is not one of the cube's faces {[face[0] for face in CUBE_FACES]}")
    return paint_markings(CUBE_FACE_RGB, CUBE_MARK_RGB, face_marking(letter, px).astype(np.float32) / 255.0)


def _page(width_mm: float, height_mm: float):
    from matplotlib.figure import Figure
    figure = Figure(figsize=(width_mm / 25.4, height_mm / 25.4))
    axes = figure.add_axes((0, 0, 1, 1))
    axes.set_xlim(0, width_mm)
    axes.set_ylim(height_mm, 0)  # y down, like an image
    axes.set_axis_off()
    return figure, axes


def _footer(axes, x_mm: float, y_mm: float, what_to_measure: str) -> None:
    """A 50 mm scale bar with 10 mm ticks, and the sentence saying what to check after printing."""
    from matplotlib.patches import Rectangle
    for tick in range(int(SCALE_BAR_MM // 10)):
        axes.add_patch(Rectangle((x_mm + 10 * tick, y_mm), 10, 2.5, facecolor="black" if tick % 2 == 0 else "white",
                                 edgecolor="black", linewidth=0.3))
    axes.text(x_mm + SCALE_BAR_MM + 3, y_mm + 1.25, f"{SCALE_BAR_MM:.0f} mm", va="center", fontsize=8)
    axes.text(x_mm, y_mm + 4.5, f"Measure before use: the bar must be {SCALE_BAR_MM:.1f} mm long and {what_to_measure}."
              "\nOtherwise print again at 100% (\"actual size\", no \"fit to page\").", va="top", fontsize=7)


def _save(figure, out: str) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="pdf", dpi=300)
    atomic_write_bytes(out, buffer.getvalue())


def cube_net_layout(size_m: float = 0.057, paper: str = "a4") -> dict:
    """Where each face lands on the page: {letter: (x_mm, y_mm)} of its top-left corner, plus the page size.

    Raises a one-line error naming the largest cube that fits when ``size_m`` does not."""
    if not size_m > 0:
        raise ConfigError(f"--size {size_m}: give the cube's edge in metres, e.g. 0.057")
    largest = largest_cube_m(paper)
    if size_m > largest + 1e-9:
        raise ConfigError(f"--size {size_m}: a {size_m * 1000:.1f} mm cube's net does not fit {paper} paper; the "
                          f"largest that fits is {largest * 1000:.1f} mm (--size {np.floor(largest * 1e4) / 1e4:.4f})")
    width, height = _landscape(paper)
    edge = size_m * 1000
    net_w, net_h = (NET_COLS + TAB_FRACTION) * edge, NET_ROWS * edge
    left = (width - net_w) / 2
    top = (height - net_h) / 2
    return {"page_mm": (width, height), "edge_mm": edge,
            "faces": {face.letter: (left + face.col * edge, top + face.row * edge) for face in CUBE_NET},
            # Right of D, below the bottom tabs: the net leaves that corner empty.
            "footer": (left + 1.1 * edge, top + (2 + TAB_FRACTION) * edge + 4)}


def _tab_polygon(x: float, y: float, edge: float, side: str) -> np.ndarray:
    depth, inset = TAB_FRACTION * edge, 0.2 * edge
    shapes = {"top": [(x, y), (x + inset, y - depth), (x + edge - inset, y - depth), (x + edge, y)],
              "bottom": [(x, y + edge), (x + inset, y + edge + depth), (x + edge - inset, y + edge + depth),
                         (x + edge, y + edge)],
              "right": [(x + edge, y), (x + edge + depth, y + inset), (x + edge + depth, y + edge - inset),
                        (x + edge, y + edge)]}
    return np.array(shapes[side])


def write_cube_pdf(out: str, size_m: float = 0.057, paper: str = "a4") -> dict:
    """Write the printable net of the built-in cube to ``out`` (PDF); returns its layout (see ``cube_net_layout``)."""
    from matplotlib.patches import Polygon, Rectangle
    layout = cube_net_layout(size_m, paper)
    edge = layout["edge_mm"]
    figure, axes = _page(*layout["page_mm"])
    for letter, side in GLUE_TABS:
        x, y = layout["faces"][letter]
        polygon = _tab_polygon(x, y, edge, side)
        axes.add_patch(Polygon(polygon, closed=True, facecolor="white", edgecolor="black", linewidth=0.4))
        centre = polygon.mean(0)
        axes.text(*centre, "glue", ha="center", va="center", fontsize=6, color="0.5",
                  rotation=90 if side == "right" else 0)
    for letter, (x, y) in layout["faces"].items():
        # "none" embeds the raster itself; the PDF viewer or printer scales it to the face's extent.
        axes.imshow(face_image(letter), extent=(x, x + edge, y + edge, y), interpolation="none")
        axes.add_patch(Rectangle((x, y), edge, edge, fill=False, edgecolor="0.35", linewidth=0.3, linestyle="--"))
    axes.set_xlim(0, layout["page_mm"][0])
    axes.set_ylim(layout["page_mm"][1], 0)
    axes.text(layout["faces"]["L"][0] + 0.1 * edge, layout["faces"]["U"][1] + 0.5 * edge, f"discopose cube, {edge:.1f} mm edge: cut around the outside,\nfold on the "
              "dashed lines between faces (markings outside), glue the tabs inside.", fontsize=8, va="bottom")
    _footer(axes, *layout["footer"], what_to_measure=f"each face's edge {edge:.1f} mm")
    _save(figure, out)
    return layout


def write_board_pdf(out: str, spec, paper: str = "a4") -> dict:
    """Write a calibration board (``calibration.boards.BoardSpec``) at exact scale, centred on one page."""
    from discopose.calibration.boards import draw_board
    width_m, height_m = spec.size_m
    board_w, board_h = width_m * 1000, height_m * 1000
    page_w, page_h = _paper(paper)
    if board_w > board_h:  # landscape for wide boards
        page_w, page_h = max(page_w, page_h), min(page_w, page_h)
    room_w, room_h = page_w - 2 * MARGIN_MM, page_h - 2 * MARGIN_MM - FOOTER_MM
    if board_w > room_w or board_h > room_h:
        largest = spec.square_m * min(room_w / board_w, room_h / board_h)
        raise ConfigError(f"board {spec} is {board_w:.0f} x {board_h:.0f} mm and does not fit {paper} paper; the "
                          f"largest square that fits is {largest * 1000:.1f} mm, or choose fewer squares")
    px_per_square = max(32, int(round(spec.square_m * 1000 * 12)))  # ~300 dpi
    image = draw_board(spec, px_per_square=px_per_square)
    left, top = (page_w - board_w) / 2, MARGIN_MM + (room_h - board_h) / 2
    figure, axes = _page(page_w, page_h)
    axes.imshow(image, cmap="gray", vmin=0, vmax=255, extent=(left, left + board_w, top + board_h, top),
                interpolation="none")
    axes.set_xlim(0, page_w)
    axes.set_ylim(page_h, 0)
    axes.text(left, top - 3, f"discopose calibration board {spec}", fontsize=8, va="bottom")
    _footer(axes, left, top + board_h + 6, what_to_measure=f"each square {spec.square_m * 1000:.1f} mm")
    _save(figure, out)
    return {"page_mm": (page_w, page_h), "board_mm": (left, top, board_w, board_h)}
