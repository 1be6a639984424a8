"""Small pure functions on rigid transforms (numpy). See the package docstring for conventions."""
from __future__ import annotations

import numpy as np

# pyrender/OpenGL camera axes expressed in the OpenCV camera frame: flip y and z.
_CV_FROM_GL = np.diag([1.0, -1.0, -1.0, 1.0])


def make_transform(rotation: np.ndarray, translation_m) -> np.ndarray:
    """4x4 transform from a 3x3 rotation and a translation in metres."""
    transform = np.eye(4)
    transform[:3, :3] = rotation
    transform[:3, 3] = np.asarray(translation_m, dtype=float).reshape(3)
    return transform


def invert_transform(a_from_b: np.ndarray) -> np.ndarray:
    """``b_from_a`` from ``a_from_b`` using the rigid-body structure (no general inverse)."""
    rotation = a_from_b[:3, :3]
    b_from_a = np.eye(4)
    b_from_a[:3, :3] = rotation.T
    b_from_a[:3, 3] = -rotation.T @ a_from_b[:3, 3]
    return b_from_a


def opengl_from_opencv(world_from_camera_cv: np.ndarray) -> np.ndarray:
    """Convert a camera pose with OpenCV axes (z forward, y down) to OpenGL axes (z backward, y up).

    The conversion is its own inverse, so it also maps OpenGL poses back to OpenCV poses.
    """
    return world_from_camera_cv @ _CV_FROM_GL


def quat_wxyz_from_matrix(rotation: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z) with w >= 0 from a 3x3 rotation matrix."""
    m = np.asarray(rotation, dtype=float)
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0:
        s = 2.0 * np.sqrt(trace + 1.0)
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = [(m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s]
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = [(m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = [(m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s]
    q = np.asarray(q)
    q /= np.linalg.norm(q)
    return q if q[0] >= 0 else -q


def matrix_from_quat_wxyz(quat_wxyz) -> np.ndarray:
    """3x3 rotation from a quaternion (w, x, y, z); the quaternion is normalised first."""
    w, x, y, z = np.asarray(quat_wxyz, dtype=float) / np.linalg.norm(quat_wxyz)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def rotation_about_axis(axis, angle_rad: float) -> np.ndarray:
    """Rodrigues rotation by ``angle_rad`` about ``axis`` (any non-zero length)."""
    axis = np.asarray(axis, dtype=float)
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle_rad) * k + (1 - np.cos(angle_rad)) * (k @ k)


def rotation_from_vector(vector) -> np.ndarray:
    """The rotation of a rotation vector (axis times angle in radians): the exponential map of SO(3)."""
    vector = np.asarray(vector, float)
    angle = float(np.linalg.norm(vector))
    return np.eye(3) if angle < 1e-12 else rotation_about_axis(vector, angle)


def rotation_vector(rotation: np.ndarray) -> np.ndarray:
    """The rotation vector (axis times angle in radians, angle in [0, pi]) of ``rotation``: the logarithm map of
    SO(3), the inverse of :func:`rotation_from_vector`."""
    cos = np.clip((np.trace(rotation) - 1) / 2, -1.0, 1.0)
    angle = np.arccos(cos)
    if angle < 1e-9:
        return np.zeros(3)
    skew = np.array([rotation[2, 1] - rotation[1, 2], rotation[0, 2] - rotation[2, 0], rotation[1, 0] - rotation[0, 1]])
    if np.pi - angle < 1e-6:
        # Near pi the skew part vanishes: R ~ 2 a a^T - I, so any column of (R + I) / 2 is a multiple of
        # the axis a; the largest one carries the components' relative signs (a and -a are both right).
        symmetric = (rotation + np.eye(3)) / 2
        column = symmetric[:, int(np.argmax(np.diag(symmetric)))]
        axis = column / np.linalg.norm(column)
        if axis @ skew < 0:  # just below pi the skew part still tells the sign
            axis = -axis
        return angle * axis
    return angle * skew / (2 * np.sin(angle))


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """Rotation drawn uniformly from SO(3) (normalised Gaussian quaternion)."""
    q = rng.normal(size=4)
    return matrix_from_quat_wxyz(q / np.linalg.norm(q))


def rotation_angle_deg(rotation_a: np.ndarray, rotation_b: np.ndarray) -> float:
    """Geodesic angle in degrees between two rotations."""
    cos = (np.trace(rotation_a.T @ rotation_b) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def look_at(eye_m, target_m, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """``world_from_camera`` (OpenCV axes) for a camera at ``eye_m`` looking at ``target_m``.

    The image "up" (-y) points as close to ``up`` as possible.
    """
    eye = np.asarray(eye_m, dtype=float)
    forward = np.asarray(target_m, dtype=float) - eye
    forward /= np.linalg.norm(forward)
    right = cross3(forward, up)
    if np.linalg.norm(right) < 1e-8:  # looking along `up`: any perpendicular will do
        right = cross3(forward, [1.0, 0.0, 0.0] if abs(forward[0]) < 0.9 else [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    down = cross3(forward, right)
    return make_transform(np.stack([right, down, forward], axis=1), eye)


def cross3(a, b) -> np.ndarray:
    """``np.cross`` of two 3-vectors, the same numbers: ``np.cross`` costs tens of microseconds in array
    bookkeeping, and the estimator aims several virtual cameras per frame."""
    return np.array([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]], float)


def project_points(K: np.ndarray, camera_from_points: np.ndarray, points: np.ndarray):
    """Project ``points`` (N, 3) in their own frame through a pinhole camera.

    Returns ``(pixels (N, 2), depth_m (N,))`` where pixels are (u, v) with (0, 0) the centre of the
    top-left pixel, as in OpenCV.
    """
    points = np.asarray(points, dtype=float).reshape(-1, 3)
    in_camera = points @ camera_from_points[:3, :3].T + camera_from_points[:3, 3]
    depth = in_camera[:, 2]
    uvw = in_camera @ np.asarray(K, dtype=float).T
    with np.errstate(divide="ignore", invalid="ignore"):
        pixels = uvw[:, :2] / uvw[:, 2:3]
    return pixels, depth
