"""Calibration boards: parse a spec string, draw a printable board, detect it in images.

Specs (sizes in metres):
* ``chessboard:COLSxROWS:SQUARE`` - inner corners, e.g. ``chessboard:9x6:0.025``.
* ``charuco:SQUARES_XxSQUARES_Y:SQUARE:MARKER[:DICT]`` - e.g. ``charuco:7x5:0.04:0.03:DICT_4X4_50``.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from discopose._errors import ConfigError


@dataclass(frozen=True)
class BoardSpec:
    kind: str
    cols: int
    rows: int
    square_m: float
    marker_m: float = 0.0
    dictionary: str = "DICT_4X4_50"

    @classmethod
    def parse(cls, text: str) -> "BoardSpec":
        parts = text.split(":")
        try:
            kind = parts[0]
            cols, rows = (int(v) for v in parts[1].lower().split("x"))
            square = float(parts[2])
            if kind == "chessboard" and len(parts) == 3:
                spec = cls("chessboard", cols, rows, square)
            elif kind == "charuco" and len(parts) in (4, 5):
                spec = cls("charuco", cols, rows, square, float(parts[3]), parts[4] if len(parts) == 5 else "DICT_4X4_50")
            else:
                raise ValueError
        except (ValueError, IndexError):
            raise ConfigError(f"board {text!r} is not understood; use chessboard:9x6:0.025 (inner corners, square m) "
                              "or charuco:7x5:0.04:0.03[:DICT_4X4_50] (squares, square m, marker m)") from None
        if spec.cols < 2 or spec.rows < 2 or spec.square_m <= 0:
            raise ConfigError(f"board {text!r}: need at least 2x2 and a positive square size")
        if spec.kind == "charuco":
            if not 0 < spec.marker_m < spec.square_m:
                raise ConfigError(f"board {text!r}: the marker must be smaller than the square")
            if not hasattr(cv2.aruco, spec.dictionary):
                raise ConfigError(f"board {text!r}: unknown ArUco dictionary {spec.dictionary!r}")
        return spec

    def __str__(self) -> str:
        if self.kind == "chessboard":
            return f"chessboard:{self.cols}x{self.rows}:{self.square_m}"
        return f"charuco:{self.cols}x{self.rows}:{self.square_m}:{self.marker_m}:{self.dictionary}"

    @property
    def squares(self) -> tuple[int, int]:
        """Number of squares (x, y) on the printed board."""
        return (self.cols + 1, self.rows + 1) if self.kind == "chessboard" else (self.cols, self.rows)

    @property
    def size_m(self) -> tuple[float, float]:
        sx, sy = self.squares
        return sx * self.square_m, sy * self.square_m

    def charuco_board(self):
        dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary))
        return cv2.aruco.CharucoBoard((self.cols, self.rows), self.square_m, self.marker_m, dictionary)

    def corner_points_m(self) -> np.ndarray:
        """Board frame (x right, y down along the printed image, z into the board) corner positions."""
        if self.kind == "charuco":
            return np.asarray(self.charuco_board().getChessboardCorners(), np.float64).reshape(-1, 3)
        grid = np.mgrid[0:self.cols, 0:self.rows].T.reshape(-1, 2)
        # Inner corners start one square in from the board's outer edge.
        return np.column_stack([(grid + 1) * self.square_m, np.zeros(len(grid))])


def draw_board(spec: BoardSpec, px_per_square: int = 100, margin_px: int = 0) -> np.ndarray:
    """The board as a grayscale image (uint8), covering exactly ``spec.size_m`` plus the margin."""
    sx, sy = spec.squares
    width, height = sx * px_per_square, sy * px_per_square
    if spec.kind == "charuco":
        image = spec.charuco_board().generateImage((width, height), marginSize=0)
    else:
        ys, xs = np.mgrid[0:height, 0:width]
        image = np.where(((xs // px_per_square) + (ys // px_per_square)) % 2 == 0, 0, 255).astype(np.uint8)
    if margin_px:
        image = cv2.copyMakeBorder(image, margin_px, margin_px, margin_px, margin_px, cv2.BORDER_CONSTANT, value=255)
    return image


def detect_board(spec: BoardSpec, image: np.ndarray):
    """``(image_points (N, 2), object_points (N, 3))`` of the detected corners, or None.

    Chessboards need every inner corner; ChArUco accepts partial views (at least 6 corners).
    """
    gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if spec.kind == "chessboard":
        found, corners = cv2.findChessboardCornersSB(gray, (spec.cols, spec.rows), flags=cv2.CALIB_CB_ACCURACY)
        if not found:
            return None
        return corners.reshape(-1, 2).astype(np.float64), spec.corner_points_m()
    detector = cv2.aruco.CharucoDetector(spec.charuco_board())
    corners, ids, _, _ = detector.detectBoard(gray)
    if ids is None or len(ids) < 6:
        return None
    ids = ids.ravel()
    return corners.reshape(-1, 2).astype(np.float64), spec.corner_points_m()[ids]
