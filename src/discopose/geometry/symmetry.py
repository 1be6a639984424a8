"""Object symmetry groups.

A symmetry is a rotation ``S`` (object frame -> object frame) such that the object looks the same under
``world_from_object @ S``. Losses and metrics take the minimum over the group, so equivalent poses are
never penalised.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from discopose._errors import ConfigError
from discopose.geometry.transforms import rotation_about_axis, rotation_angle_deg

KINDS = ("none", "cube", "discrete", "axis")


def closest_equivalent(reference: np.ndarray, rotation: np.ndarray, symmetries: np.ndarray | None
                       ) -> tuple[np.ndarray, float]:
    """The equivalent of ``rotation`` (``rotation @ S`` over the symmetry rotations S, 3x3 object-to-frame) closest
    to ``reference``, and its angle to it in degrees: the rotation error up to symmetry."""
    if symmetries is None or len(symmetries) == 1:
        return rotation, rotation_angle_deg(reference, rotation)
    candidates = rotation @ symmetries  # (M, 3, 3)
    cosines = (np.einsum("ij,mij->m", reference, candidates) - 1.0) / 2.0
    best = int(np.argmax(cosines))
    return candidates[best], float(np.degrees(np.arccos(np.clip(cosines[best], -1.0, 1.0))))


def cube_rotations() -> np.ndarray:
    """The 24 proper rotations of a cube: signed permutation matrices with determinant +1."""
    rotations = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            matrix = np.zeros((3, 3))
            for row, (col, sign) in enumerate(zip(perm, signs)):
                matrix[row, col] = sign
            if np.linalg.det(matrix) > 0:
                rotations.append(matrix)
    return np.stack(rotations)


@dataclass
class Symmetry:
    """Declared symmetry of a rigid object.

    kind: ``none`` (all poses distinguishable), ``cube`` (the 24 rotations of a cube, e.g. a cube
    without markings), ``discrete`` (``rotations``: a list of 3x3 matrices; identity is added),
    ``axis`` (continuous rotation about ``axis`` through the object origin, plus ``rotations``).
    """

    kind: str = "none"
    rotations: list = field(default_factory=list)
    axis: tuple = (0.0, 0.0, 1.0)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ConfigError(f"object.symmetry.kind={self.kind!r} is unknown; use one of {', '.join(KINDS)}")
        for i, rotation in enumerate(self.rotations):
            matrix = np.asarray(rotation, dtype=float)
            if matrix.shape != (3, 3) or not np.allclose(matrix @ matrix.T, np.eye(3), atol=1e-5) \
                    or np.linalg.det(matrix) < 0:
                raise ConfigError(f"object.symmetry.rotations[{i}] is not a 3x3 rotation matrix; "
                                  "give proper rotations (orthonormal, det +1)")
        if np.linalg.norm(self.axis) < 1e-9:
            raise ConfigError("object.symmetry.axis must be a non-zero 3-vector, e.g. [0, 0, 1]")

    def matrices(self, continuous_steps: int = 36) -> np.ndarray:
        """All symmetry rotations as an (M, 3, 3) array, identity first.

        A continuous axis is discretised into ``continuous_steps`` rotations (10 degrees by default).
        """
        if self.kind == "cube":
            group = cube_rotations()
            identity_first = np.argsort([not np.allclose(r, np.eye(3)) for r in group], kind="stable")
            return group[identity_first]
        base = [np.eye(3)] + [np.asarray(r, dtype=float) for r in self.rotations
                              if not np.allclose(r, np.eye(3))]
        if self.kind == "axis":
            spins = [rotation_about_axis(self.axis, 2 * np.pi * k / continuous_steps)
                     for k in range(continuous_steps)]
            return np.stack([spin @ r for r in base for spin in spins])
        if self.kind == "none":
            return np.eye(3)[None]
        return np.stack(base)

    @property
    def is_symmetric(self) -> bool:
        return self.kind != "none"

    def to_dict(self) -> dict:
        return {"kind": self.kind, "rotations": [np.asarray(r).tolist() for r in self.rotations],
                "axis": [float(a) for a in self.axis]}

    @classmethod
    def from_bop(cls, info: dict, name: str = "object") -> "Symmetry":
        """The symmetry of a BOP ``models_info.json`` entry: ``symmetries_continuous`` (``axis``, ``offset`` in
        mm) and ``symmetries_discrete`` (4x4 row-major, translation in mm). Symmetries here are rotations about
        the model origin, so an offset or translation above 1% of the ``diameter`` is refused."""
        tolerance_mm = 0.01 * float(info.get("diameter", 0.0) or 0.0)
        off_centre = (f"{name}: its BOP symmetry is about a point {{:.1f}} mm from the model origin; symmetries "
                      "here turn about the origin: recentre the mesh on its symmetry centre and update models_info.json")
        rotations = []
        for i, matrix in enumerate(info.get("symmetries_discrete") or []):
            transform = np.asarray(matrix, float).reshape(4, 4)
            if np.linalg.norm(transform[:3, 3]) > tolerance_mm:
                raise ConfigError(off_centre.format(np.linalg.norm(transform[:3, 3])))
            # models_info.json rounds its matrices; the nearest rotation passes the orthonormality check.
            u, _, vt = np.linalg.svd(transform[:3, :3])
            rotations.append(u @ np.diag([1.0, 1.0, np.linalg.det(u @ vt)]) @ vt)
        continuous = info.get("symmetries_continuous") or []
        if len(continuous) > 1:
            raise ConfigError(f"{name}: {len(continuous)} continuous symmetry axes (a sphere-like object) are not "
                              "supported; declare one axis")
        if continuous:
            offset = np.asarray(continuous[0].get("offset", [0, 0, 0]), float)
            if np.linalg.norm(offset) > tolerance_mm:
                raise ConfigError(off_centre.format(np.linalg.norm(offset)))
            return cls("axis", rotations=rotations, axis=tuple(float(a) for a in continuous[0]["axis"]))
        return cls("discrete", rotations=rotations) if rotations else cls()

    @classmethod
    def from_dict(cls, data: dict) -> "Symmetry":
        return cls(kind=data.get("kind", "none"), rotations=list(data.get("rotations", [])),
                   axis=tuple(data.get("axis", (0.0, 0.0, 1.0))))
