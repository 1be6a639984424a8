import numpy as np
import pytest

from discopose.geometry import (Symmetry, invert_transform, look_at, make_transform, matrix_from_quat_wxyz,
                                opengl_from_opencv, project_points, quat_wxyz_from_matrix, random_rotation,
                                rotation_angle_deg, rotation_about_axis)
from discopose.geometry.symmetry import cube_rotations


def test_quaternion_round_trip_and_order():
    rng = np.random.default_rng(1)
    for _ in range(50):
        rotation = random_rotation(rng)
        np.testing.assert_allclose(matrix_from_quat_wxyz(quat_wxyz_from_matrix(rotation)), rotation, atol=1e-9)
    # 90 degrees about z: w = cos(45), z = sin(45) -- the scalar comes first.
    q = quat_wxyz_from_matrix(rotation_about_axis([0, 0, 1], np.pi / 2))
    np.testing.assert_allclose(q, [np.sqrt(0.5), 0, 0, np.sqrt(0.5)], atol=1e-12)


def test_invert_transform_matches_numpy_inverse():
    rng = np.random.default_rng(2)
    a_from_b = make_transform(random_rotation(rng), rng.normal(size=3))
    np.testing.assert_allclose(invert_transform(a_from_b), np.linalg.inv(a_from_b), atol=1e-12)


def test_opengl_opencv_conversion_flips_y_and_z_and_is_an_involution():
    world_from_camera = look_at([1.0, 0.5, 0.3], [0, 0, 0])
    gl = opengl_from_opencv(world_from_camera)
    np.testing.assert_allclose(gl[:3, 0], world_from_camera[:3, 0])
    np.testing.assert_allclose(gl[:3, 1], -world_from_camera[:3, 1])
    np.testing.assert_allclose(gl[:3, 2], -world_from_camera[:3, 2])
    np.testing.assert_allclose(opengl_from_opencv(gl), world_from_camera)
    # An OpenGL camera looks down its -z: the target is in front of it.
    target_in_gl_camera = invert_transform(gl) @ np.array([0, 0, 0, 1.0])
    assert target_in_gl_camera[2] < 0


def test_look_at_points_z_at_target_and_y_down():
    world_from_camera = look_at([0, -1, 0], [0, 0, 0], up=(0, 0, 1))
    np.testing.assert_allclose(world_from_camera[:3, 2], [0, 1, 0], atol=1e-12)   # forward
    np.testing.assert_allclose(world_from_camera[:3, 1], [0, 0, -1], atol=1e-12)  # image down = world down
    assert np.linalg.det(world_from_camera[:3, :3]) == pytest.approx(1.0)


def test_cross3_is_numpys_cross_product():
    from discopose.geometry.transforms import cross3
    rng = np.random.default_rng(2)
    for a, b in rng.normal(size=(20, 2, 3)):
        np.testing.assert_array_equal(cross3(a, b), np.cross(a, b))
    np.testing.assert_array_equal(cross3([1.0, 0.0, 0.0], [0.0, 1.0, 0.0]), [0.0, 0.0, 1.0])


def test_project_points_pinhole():
    K = np.array([[100.0, 0, 20], [0, 110.0, 10], [0, 0, 1]])
    pixels, depth = project_points(K, np.eye(4), np.array([[0.1, -0.2, 2.0], [0, 0, 1]]))
    np.testing.assert_allclose(pixels, [[25.0, -1.0], [20.0, 10.0]])
    np.testing.assert_allclose(depth, [2.0, 1.0])


def test_cube_group_is_a_closed_group_of_24_rotations():
    group = cube_rotations()
    assert len(group) == 24
    for a in group:
        assert np.allclose(a @ a.T, np.eye(3)) and np.isclose(np.linalg.det(a), 1)
        for b in group[:5]:
            assert any(np.allclose(a @ b, c) for c in group)


def test_symmetry_matrices_and_validation():
    assert Symmetry().matrices().shape == (1, 3, 3)
    cube = Symmetry("cube").matrices()
    np.testing.assert_allclose(cube[0], np.eye(3))
    axis = Symmetry("axis", axis=(0, 0, 1)).matrices(continuous_steps=12)
    assert len(axis) == 12 and rotation_angle_deg(axis[0], axis[1]) == pytest.approx(30)
    flip = rotation_about_axis([1, 0, 0], np.pi)
    assert len(Symmetry("discrete", rotations=[flip.tolist()]).matrices()) == 2
    with pytest.raises(ValueError, match="rotations\\[0\\]"):
        Symmetry("discrete", rotations=[np.diag([1, 1, -1.0]).tolist()])
    assert Symmetry.from_dict(Symmetry("axis", axis=(1, 0, 0)).to_dict()).axis == (1.0, 0.0, 0.0)
