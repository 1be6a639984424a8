"""Drawing poses on images: cube wireframes, axes, keypoints, boxes, and contact sheets."""
from __future__ import annotations

import cv2
import numpy as np

from discopose.geometry.transforms import project_points

# Keypoint order (see ObjectModel.keypoints_m): corner i has x bit 4, y bit 2, z bit 1.
# The 12 edges of the bounding box among ObjectModel.keypoints_m's 8 corners.
BOX_EDGES = [(0, 1), (0, 2), (0, 4), (1, 3), (1, 5), (2, 3), (2, 6), (3, 7), (4, 5), (4, 6), (5, 7), (6, 7)]


def _pt(p) -> tuple[int, int]:
    return int(round(p[0] * 16)), int(round(p[1] * 16))  # 4 bits of sub-pixel precision


def draw_pose(image: np.ndarray, K: np.ndarray, camera_from_object: np.ndarray, keypoints_m: np.ndarray,
              color=(0, 255, 0), axes: bool = True, thickness: int = 1) -> np.ndarray:
    """Draw the object's bounding-box wireframe (and its x/y/z axes in red/green/blue) in place."""
    pixels, depth = project_points(K, camera_from_object, keypoints_m)
    if (depth[:8] <= 0).any() or not np.isfinite(pixels).all():
        return image
    for a, b in BOX_EDGES:
        cv2.line(image, _pt(pixels[a]), _pt(pixels[b]), color, thickness, cv2.LINE_AA, shift=4)
    if axes:
        half = np.abs(keypoints_m[:8] - keypoints_m[8]).max(0)
        origin = keypoints_m[8]
        ends = origin + np.diag(half * 1.5)
        axis_px, axis_depth = project_points(K, camera_from_object, np.vstack([origin, ends]))
        if (axis_depth > 0).all():
            for end, axis_color in zip(axis_px[1:], ((255, 0, 0), (0, 255, 0), (0, 0, 255))):
                cv2.line(image, _pt(axis_px[0]), _pt(end), axis_color, thickness, cv2.LINE_AA, shift=4)
    return image


def draw_labels(image: np.ndarray, labels: dict, keypoints_m: np.ndarray) -> np.ndarray:
    """Overlay one camera's labels: wireframe + axes, keypoints (yellow), bbox (cyan), visibility."""
    out = image.copy()
    K = np.asarray(labels["K"])
    draw_pose(out, K, np.asarray(labels["camera_from_object"]), keypoints_m, color=(0, 255, 0))
    for point in labels["keypoints_px"]:
        if np.isfinite(point).all():
            cv2.circle(out, _pt(point), 2 * 16, (255, 255, 0), -1, cv2.LINE_AA, shift=4)
    if labels.get("bbox_xyxy"):
        x0, y0, x1, y1 = labels["bbox_xyxy"]
        cv2.rectangle(out, (x0, y0), (x1, y1), (0, 255, 255), 1)
    cv2.putText(out, f"vis {labels['visible_fraction']:.2f}", (3, out.shape[0] - 5), cv2.FONT_HERSHEY_SIMPLEX,
                0.35, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def contact_sheet(images: list[np.ndarray], columns: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile RGB images (resized to the first one's size) into a grid."""
    if not images:
        raise ValueError("contact_sheet needs at least one image")
    height, width = images[0].shape[:2]
    columns = columns or int(np.ceil(np.sqrt(len(images))))
    rows = int(np.ceil(len(images) / columns))
    sheet = np.full((rows * (height + pad) + pad, columns * (width + pad) + pad, 3), 255, np.uint8)
    for i, image in enumerate(images):
        if image.shape[:2] != (height, width):
            image = cv2.resize(image, (width, height))
        r, c = divmod(i, columns)
        sheet[pad + r * (height + pad):pad + r * (height + pad) + height,
              pad + c * (width + pad):pad + c * (width + pad) + width] = image
    return sheet


def encode_png(image_rgb: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(".png", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buffer.tobytes()
