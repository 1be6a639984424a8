"""Frames, rotations and symmetries. Conventions are in ``docs/conventions.md`` and stated once here:

* Right-handed frames, metres, row-major 4x4 homogeneous transforms.
* ``a_from_b`` maps coordinates in frame ``b`` to frame ``a``; compose left to right:
  ``camera_from_object = camera_from_world @ world_from_object``.
* Cameras follow OpenCV: x right, y down, z forward (looking down +z). pyrender/OpenGL cameras look down
  -z with y up; :func:`opengl_from_opencv` is the one place that converts.
* Quaternions are ``(w, x, y, z)`` and the key names say so (``quat_wxyz``).
"""
from discopose.geometry.transforms import (
    invert_transform,
    look_at,
    make_transform,
    matrix_from_quat_wxyz,
    opengl_from_opencv,
    project_points,
    quat_wxyz_from_matrix,
    random_rotation,
    rotation_angle_deg,
    rotation_about_axis,
    rotation_from_vector,
    rotation_vector,
)
from discopose.geometry.symmetry import Symmetry

__all__ = [
    "Symmetry",
    "invert_transform",
    "look_at",
    "make_transform",
    "matrix_from_quat_wxyz",
    "opengl_from_opencv",
    "project_points",
    "quat_wxyz_from_matrix",
    "random_rotation",
    "rotation_angle_deg",
    "rotation_about_axis",
    "rotation_from_vector",
    "rotation_vector",
]
