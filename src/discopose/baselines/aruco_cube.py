"""What a user would pick instead of a learned estimator: a fiducial cube, one ArUco marker per face, read by
OpenCV's aruco module. Same 57 mm cube and face frames as the lettered cube (``render.objects.CUBE_FACES``),
marker ``i`` on face ``i``; ``benchmarks/fiducial_vs_learned.py`` puts the two side by side.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from discopose.camera import CameraModel
from discopose.geometry.transforms import make_transform
from discopose.render.objects import CUBE_FACES, make_marked_cube

DICTIONARY = cv2.aruco.DICT_4X4_50
MARKER_FRACTION = 0.75  # marker side / face side; the white rest is the quiet zone the detector needs


def marker_corners_m(size_m: float = 0.057) -> dict[int, np.ndarray]:
    """Object-frame corners (4, 3) of each face's marker, in ArUco's order (top-left, top-right,
    bottom-right, bottom-left as the face is seen from outside, upright)."""
    half, low, high = size_m / 2, (1 - MARKER_FRACTION) / 2, (1 + MARKER_FRACTION) / 2
    corners = {}
    for marker_id, (_letter, normal, right, down) in enumerate(CUBE_FACES):
        normal, right, down = (np.asarray(v, float) for v in (normal, right, down))
        corners[marker_id] = np.array([half * (normal + (2 * u - 1) * right + (2 * v - 1) * down)
                                       for u, v in ((low, low), (high, low), (high, high), (low, high))])
    return corners


def face_atlas(face_px: int = 256) -> np.ndarray:
    """The texture atlas (3 x 2 faces, the lettered cube's layout): white faces, marker ``i`` on face ``i``."""
    dictionary = cv2.aruco.getPredefinedDictionary(DICTIONARY)
    atlas = np.full((2 * face_px, 3 * face_px, 3), 255, np.uint8)
    side = int(round(MARKER_FRACTION * face_px))
    offset = (face_px - side) // 2
    for marker_id in range(len(CUBE_FACES)):
        col, row = marker_id % 3, marker_id // 3
        marker = cv2.aruco.generateImageMarker(dictionary, marker_id, side)
        y, x = row * face_px + offset, col * face_px + offset
        atlas[y:y + side, x:x + side] = marker[..., None]
    return atlas


def write_aruco_cube(path: str | Path, size_m: float = 0.057, face_px: int = 256) -> Path:
    """The ArUco cube as a textured .glb in metres (``discopose render --object`` reads it)."""
    import trimesh
    from PIL import Image

    from discopose._io import atomic_write_bytes
    cube = make_marked_cube(size_m)
    uv = np.asarray(cube.uvs, float).copy()
    uv[:, 1] = 1.0 - uv[:, 1]  # ours has v down like image rows; glTF/trimesh has v up
    mesh = trimesh.Trimesh(cube.positions, cube.indices, vertex_normals=cube.normals, process=False)
    mesh.visual = trimesh.visual.TextureVisuals(uv=uv, image=Image.fromarray(face_atlas(face_px)))
    return atomic_write_bytes(path, mesh.export(file_type="glb"))


class ArucoCube:
    """Pose of the ArUco cube from one image: all detected markers' corners in one PnP."""

    def __init__(self, size_m: float = 0.057):
        self.corners_m = marker_corners_m(size_m)
        parameters = cv2.aruco.DetectorParameters()
        parameters.cornerRefinementMethod = cv2.aruco.CORNER_REFINE_SUBPIX
        self.detector = cv2.aruco.ArucoDetector(cv2.aruco.getPredefinedDictionary(DICTIONARY), parameters)

    def estimate(self, image_rgb: np.ndarray, camera: CameraModel) -> tuple[np.ndarray | None, int]:
        """(camera_from_object 4x4 or None when no marker of the cube is seen, number of markers used)."""
        gray = cv2.cvtColor(np.asarray(image_rgb), cv2.COLOR_RGB2GRAY)
        corners, ids, _ = self.detector.detectMarkers(gray)
        if ids is None:
            return None, 0
        found = [(int(i), c.reshape(4, 2)) for i, c in zip(ids.ravel(), corners) if int(i) in self.corners_m]
        if not found:
            return None, 0
        object_points = np.concatenate([self.corners_m[i] for i, _ in found])
        image_points = np.concatenate([c for _, c in found]).astype(np.float64)
        if len(found) == 1:
            # One square: IPPE in the marker's own plane has the two mirror solutions resolved by reprojection.
            marker = self.corners_m[found[0][0]]
            # The marker frame IPPE_SQUARE expects: x along the top edge, y up the face, z out of it.
            x_axis, y_axis = marker[1] - marker[0], marker[0] - marker[3]
            side = np.linalg.norm(x_axis)
            x_axis, y_axis = x_axis / side, y_axis / side
            object_from_marker = make_transform(np.column_stack([x_axis, y_axis, np.cross(x_axis, y_axis)]),
                                                marker.mean(0))
            square = np.array([[-1, 1, 0], [1, 1, 0], [1, -1, 0], [-1, -1, 0]], float) * side / 2
            ok, rvec, tvec = cv2.solvePnP(square, image_points, camera.K, camera.dist_coeffs,
                                          flags=cv2.SOLVEPNP_IPPE_SQUARE)
            if not ok:
                return None, 0
            camera_from_marker = make_transform(cv2.Rodrigues(rvec)[0], tvec.ravel())
            return camera_from_marker @ np.linalg.inv(object_from_marker), 1
        ok, rvec, tvec = cv2.solvePnP(object_points, image_points, camera.K, camera.dist_coeffs,
                                      flags=cv2.SOLVEPNP_SQPNP)
        if not ok:
            return None, 0
        rvec, tvec = cv2.solvePnPRefineLM(object_points, image_points, camera.K, camera.dist_coeffs, rvec, tvec)
        return make_transform(cv2.Rodrigues(rvec)[0], tvec.ravel()), len(found)
