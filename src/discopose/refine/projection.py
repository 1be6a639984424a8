"""Pure functions for projection and its derivatives; the frames are in the names.

The pose is perturbed in the object's own frame: ``frame_from_object' = frame_from_object @ D(delta)`` with
``delta = (omega, v)`` (rad, m), ``D = [[exp(omega), v], [0, 1]]``, so a point ``X_object`` moves to
``exp(omega) X_object + v``. The same six numbers move the object in every camera, which is what lets
several cameras be summed into one set of normal equations.

All geometry runs in ideal (undistorted) pixels of the camera's ``K``; only the image look-ups go through the
lens distortion (:func:`distorted_pixels`), so the image is never remapped.
"""
from __future__ import annotations

import cv2
import numpy as np


def rotation_from_vector(omega) -> np.ndarray:
    """3x3 rotation ``exp([omega]_x)`` (Rodrigues) of a rotation vector in radians."""
    return cv2.Rodrigues(np.asarray(omega, float).reshape(3, 1))[0]


def object_delta_transform(delta) -> np.ndarray:
    """4x4 ``D(delta)`` of ``delta = (omega (rad), v (m))``: apply as ``frame_from_object @ D``."""
    delta = np.asarray(delta, float).reshape(6)
    transform = np.eye(4)
    transform[:3, :3] = rotation_from_vector(delta[:3])
    transform[:3, 3] = delta[3:]
    return transform


def line_jacobian(K: np.ndarray, camera_from_object: np.ndarray, points_object_m: np.ndarray,
                  normals_px: np.ndarray) -> np.ndarray:
    """(N, 6) derivative of each point's ideal pixel along its image normal (``n . (u, v)``, px) with respect to
    the object-frame ``delta``: the one row each correspondence line or edge sample adds.

    The chain ``n^T (du/dX_camera) R [-[X_object]_x | I]`` in closed form: with the row ``b = n^T (du/dX) R``,
    ``-b [X]_x = X x b``, so the row is ``(X_object x b, b)``.
    """
    R = camera_from_object[:3, :3]
    points_camera = points_object_m @ R.T + camera_from_object[:3, 3]
    x, y, z = points_camera[:, 0], points_camera[:, 1], points_camera[:, 2]
    a_u = normals_px[:, 0] * K[0, 0] / z
    a_v = normals_px[:, 1] * K[1, 1] / z
    along_normal = np.empty_like(points_camera)  # n^T du/dX_camera, (N, 3)
    along_normal[:, 0] = a_u
    along_normal[:, 1] = a_v
    along_normal[:, 2] = -(a_u * x + a_v * y) / z
    b = along_normal @ R
    jacobian = np.empty((len(b), 6))
    X = points_object_m
    jacobian[:, 0] = X[:, 1] * b[:, 2] - X[:, 2] * b[:, 1]
    jacobian[:, 1] = X[:, 2] * b[:, 0] - X[:, 0] * b[:, 2]
    jacobian[:, 2] = X[:, 0] * b[:, 1] - X[:, 1] * b[:, 0]
    jacobian[:, 3:] = b
    return jacobian


def along_normals(pixels: np.ndarray, normals_px: np.ndarray, offsets_px: np.ndarray) -> np.ndarray:
    """(N, L, 2) pixels ``offsets_px`` (L,) along each unit image normal (N, 2) from its pixel (N, 2): the samples of
    a correspondence line or an edge search. Built per coordinate: a NumPy broadcast over a last axis of 2 is
    several times slower."""
    return np.stack([pixels[:, :1] + normals_px[:, :1] * offsets_px, pixels[:, 1:] + normals_px[:, 1:] * offsets_px],
                    -1)


def distorted_pixels(K: np.ndarray, dist_coeffs: np.ndarray, pixels_ideal: np.ndarray) -> np.ndarray:
    """Where ideal-pinhole pixels (N, 2) of ``K`` land in the image of a lens with OpenCV ``dist_coeffs``.

    The radial-tangential model (k1 k2 p1 p2 [k3 [k4 k5 k6]]) in closed form; longer models through
    ``cv2.projectPoints``. No distortion returns the input.
    """
    if not np.any(dist_coeffs):
        return pixels_ideal
    return np.stack(distorted_uv(K, dist_coeffs, pixels_ideal[..., 0], pixels_ideal[..., 1]), -1)


def distorted_uv(K: np.ndarray, dist_coeffs: np.ndarray, u: np.ndarray, v: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`distorted_pixels` of the columns ``u`` and rows ``v`` (any shape) of ideal pixels, returned the same
    way: the image look-ups' hot path, which never stacks them into pixel pairs."""
    dist = np.asarray(dist_coeffs, float).reshape(-1)
    if not np.any(dist):
        return u, v
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    x = (u - cx) / fx
    y = (v - cy) / fy
    if dist.size > 8:
        points = np.stack([x, y, np.ones_like(x)], -1).reshape(-1, 1, 3)
        out, _ = cv2.projectPoints(points, np.zeros(3), np.zeros(3), K, dist)
        out = out.reshape(np.shape(x) + (2,))
        return out[..., 0], out[..., 1]
    k = np.zeros(8)
    k[:dist.size] = dist
    r2 = x * x + y * y
    radial = (1 + r2 * (k[0] + r2 * (k[1] + r2 * k[4]))) / (1 + r2 * (k[5] + r2 * (k[6] + r2 * k[7])))
    xd = x * radial + 2 * k[2] * x * y + k[3] * (r2 + 2 * x * x)
    yd = y * radial + k[2] * (r2 + 2 * y * y) + 2 * k[3] * x * y
    return xd * fx + cx, yd * fy + cy
