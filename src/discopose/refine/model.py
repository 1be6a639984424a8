"""What the refinement precomputes from the object's mesh: welded vertices, faces and their outward normals,
the edges with their two faces, which edges are sharp creases, and the shape's own symmetries.

Everything is in the object frame, metres. The contour and the visible creases of a pose are found from these
arrays by :func:`visible_edges` (no renderer): an edge is on the silhouette where one of its faces turns
towards the camera and the other away (or it borders a hole), and a crease is seen where both of its faces
turn towards the camera. For a convex mesh (the cube) that is exact; for other meshes a face-index raster
(:func:`face_raster`) drops what other parts of the mesh hide.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import cv2
import numpy as np

from discopose._errors import DiscoposeError

# Vertices closer than this (metres) are one vertex: flat-shaded meshes repeat each corner per face.
WELD_M = 1e-7
# A mesh whose volume is this close to its convex hull's is treated as convex (nothing of it hides another part).
CONVEX_REL_TOL = 1e-3


@dataclass
class RefineModel:
    """The object's geometry as the refinement uses it (object frame, metres).

    ``vertices_m`` (V, 3); ``faces`` (F, 3) vertex indices, wound counter-clockwise seen from outside;
    ``face_normals`` (F, 3) outward unit normals; ``edges`` (E, 2) vertex indices; ``edge_faces`` (E, 2) the
    faces on either side (-1 where the edge borders a hole); ``crease`` (E,) edges whose faces meet at more
    than ``crease_deg``; ``convex``: nothing of the object can hide another part of it; ``shape_symmetries``
    (S, 3, 3) object-frame rotations that leave the bare geometry unchanged (identity first): the refinement
    sees only geometry, so among these equivalents it keeps the one nearest its start (the network's letters
    choose, the refinement fixes the geometry).
    """

    name: str
    vertices_m: np.ndarray
    faces: np.ndarray
    face_normals: np.ndarray
    edges: np.ndarray
    edge_faces: np.ndarray
    crease: np.ndarray
    convex: bool
    shape_symmetries: np.ndarray = field(default_factory=lambda: np.eye(3)[None])
    _diameter_m: float | None = field(default=None, repr=False, compare=False)

    @property
    def diameter_m(self) -> float:
        """Largest distance between two vertices (computed once)."""
        if self._diameter_m is None:
            v = self.vertices_m
            if len(v) > 3000:  # only the hull's vertices can be the farthest pair
                v = v[_hull_vertex_indices(v)]
            self._diameter_m = float(np.sqrt(((v[:, None] - v[None]) ** 2).sum(-1)).max())
        return self._diameter_m

    @property
    def face_centers_m(self) -> np.ndarray:
        return self.vertices_m[self.faces].mean(1)

    @classmethod
    def from_mesh(cls, vertices_m, faces, crease_deg: float = 30.0, shape_symmetries=None,
                  name: str = "mesh") -> "RefineModel":
        """A model from a triangle mesh (any vertex layout: repeated corners are welded). ``crease_deg``: two
        faces meeting at a larger angle make a crease edge that the edge term searches for."""
        vertices = np.asarray(vertices_m, float)
        faces = np.asarray(faces)
        if vertices.ndim != 2 or vertices.shape[1] != 3 or len(vertices) < 4 or not np.isfinite(vertices).all():
            raise DiscoposeError(f"refine model {name!r}: vertices must be an (N, 3) array of finite metres with "
                                 f"N >= 4, got shape {vertices.shape}")
        if faces.ndim != 2 or faces.shape[1] != 3 or len(faces) < 4 or not np.issubdtype(faces.dtype, np.integer) \
                or faces.min() < 0 or faces.max() >= len(vertices):
            raise DiscoposeError(f"refine model {name!r}: faces must be an (F, 3) integer array of vertex indices "
                                 f"(F >= 4) into the {len(vertices)} vertices, got shape {faces.shape}")
        # Weld: one vertex per position, so edges shared by two faces are found.
        keys = np.round(vertices / WELD_M).astype(np.int64)
        _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
        vertices, faces = vertices[first], inverse.reshape(-1)[faces]
        cross = np.cross(vertices[faces[:, 1]] - vertices[faces[:, 0]], vertices[faces[:, 2]] - vertices[faces[:, 0]])
        area2 = np.linalg.norm(cross, axis=1)
        keep = area2 > 1e-14
        faces, cross, area2 = faces[keep], cross[keep], area2[keep]
        if (vertices[faces[:, 0]] * cross).sum() < 0:  # wound inside out: the signed volume says so
            faces, cross = faces[:, ::-1], -cross
        normals = cross / area2[:, None]
        # Edges: each unordered vertex pair with up to two faces.
        pairs = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
        owner = np.tile(np.arange(len(faces)), 3)
        edges, edge_of = np.unique(pairs, axis=0, return_inverse=True)
        edge_of = edge_of.reshape(-1)
        order = np.argsort(edge_of, kind="stable")
        edge_faces = np.full((len(edges), 2), -1, np.int64)
        counts = np.bincount(edge_of, minlength=len(edges))
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        edge_faces[:, 0] = owner[order[starts]]
        two = counts >= 2
        edge_faces[two, 1] = owner[order[starts[two] + 1]]
        both = edge_faces[:, 1] >= 0
        cos_angle = np.ones(len(edges))
        cos_angle[both] = (normals[edge_faces[both, 0]] * normals[edge_faces[both, 1]]).sum(1)
        crease = both & (cos_angle < np.cos(np.radians(crease_deg)))
        symmetries = np.eye(3)[None] if shape_symmetries is None else \
            np.asarray(shape_symmetries, float).reshape(-1, 3, 3)
        return cls(name=name, vertices_m=vertices, faces=faces.astype(np.int64), face_normals=normals,
                   edges=edges.astype(np.int64), edge_faces=edge_faces, crease=crease,
                   convex=_is_convex(vertices, faces, cross), shape_symmetries=symmetries)

    @classmethod
    def cube(cls, size_m: float = 0.057, shape_symmetries=None) -> "RefineModel":
        """The built-in cube of edge ``size_m``, centred, axes through the face centres: 8 corners, 12 crease
        edges. Its bare geometry has the cube's 24 symmetries (its letters break them, not its shape)."""
        if not size_m > 0:
            raise DiscoposeError(f"refine model cube: size_m must be positive metres, got {size_m!r}")
        return cls.box(np.full(3, size_m), name="cube",
                       shape_symmetries=_cube_rotations() if shape_symmetries is None else shape_symmetries)

    @classmethod
    def box(cls, size_m, center_m=(0.0, 0.0, 0.0), name: str = "box", shape_symmetries=None) -> "RefineModel":
        """An axis-aligned box of ``size_m`` (3,) centred at ``center_m`` in the object frame."""
        half = np.asarray(size_m, float) / 2
        corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float) * half + center_m
        # Two counter-clockwise (seen from outside) triangles per face; corner index = 4x + 2y + z with 0/1 bits.
        faces = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5],   # -x, +x
                          [0, 4, 5], [0, 5, 1], [2, 3, 7], [2, 7, 6],   # -y, +y
                          [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])  # -z, +z
        return cls.from_mesh(corners, faces, shape_symmetries=shape_symmetries, name=name)

    @classmethod
    def from_object_meta(cls, meta: dict, mesh: tuple | None = None) -> "RefineModel":
        """From an estimator's or dataset's object description (``estimator.object``): the built-in cube from
        its bounds; any other object needs its ``mesh`` ``(vertices_m, faces)`` (e.g. an ObjectModel's
        ``positions`` and ``indices``). The shape symmetry comes from ``shape_symmetry`` when the meta has it."""
        from discopose.geometry.symmetry import Symmetry
        symmetries = None
        if meta.get("shape_symmetry"):
            symmetries = Symmetry.from_dict(meta["shape_symmetry"]).matrices()
        if mesh is not None:
            return cls.from_mesh(mesh[0], mesh[1], shape_symmetries=symmetries, name=str(meta.get("name", "mesh")))
        if meta.get("name") == "cube" and "bounds_m" in meta:
            low, high = np.asarray(meta["bounds_m"], float)
            return cls.box(high - low, (low + high) / 2, name="cube",
                           shape_symmetries=_cube_rotations() if symmetries is None else symmetries)
        raise DiscoposeError(f"object {meta.get('name')!r} is not the built-in cube: pass its mesh as "
                             "RefineModel.from_object_meta(meta, mesh=(vertices_m, faces))")


def _cube_rotations() -> np.ndarray:
    from discopose.geometry.symmetry import cube_rotations
    rotations = cube_rotations()
    identity = np.argmin([np.abs(r - np.eye(3)).sum() for r in rotations])
    return np.concatenate([rotations[identity:identity + 1], np.delete(rotations, identity, axis=0)])


def _hull_vertex_indices(points: np.ndarray) -> np.ndarray:
    from scipy.spatial import ConvexHull
    return ConvexHull(points).vertices


def _is_convex(vertices: np.ndarray, faces: np.ndarray, cross: np.ndarray) -> bool:
    """Whether the closed mesh's volume equals its convex hull's (open meshes count as not convex)."""
    volume = abs(float((vertices[faces[:, 0]] * cross).sum()) / 6)
    try:
        from scipy.spatial import ConvexHull
        hull = ConvexHull(vertices).volume
    except Exception:  # flat or degenerate point sets
        return False
    return hull > 0 and abs(hull - volume) <= CONVEX_REL_TOL * hull


@dataclass
class VisibleEdges:
    """The edges of one pose that the modalities measure, as projected segments in ideal pixels.

    ``silhouette``: (A, 2) vertex indices ordered so that ``inside`` (A,) the image side of the object is
    known: ``outward_px`` (A, 2) unit normals pointing from the object into the background. ``crease``: (B, 2)
    vertex indices of the visible sharp edges between two front faces, ``crease_faces`` (B, 2) those faces.
    """

    silhouette: np.ndarray
    outward_px: np.ndarray
    crease: np.ndarray
    crease_faces: np.ndarray


_TURN_CLOCKWISE = np.array([1.0, -1.0])


def visible_edges(model: RefineModel, camera_from_object: np.ndarray, K: np.ndarray,
                  crease_min_cos: float = 0.0) -> VisibleEdges:
    """The silhouette and crease edges of ``model`` at ``camera_from_object`` (4x4, OpenCV axes, metres) seen
    through the ideal pinhole ``K``. A crease counts only where both its faces turn at least ``crease_min_cos``
    (cosine of the angle between normal and line of sight) towards the camera: a crease beside a face seen
    edge-on lies on the silhouette, which the region term reads. Hidden parts of non-convex meshes are not
    removed here (see :func:`face_raster`)."""
    R, t = camera_from_object[:3, :3], camera_from_object[:3, 3]
    centers_camera = model.face_centers_m @ R.T + t
    normals_camera = model.face_normals @ R.T
    facing = -(normals_camera * centers_camera).sum(1) / np.sqrt((centers_camera * centers_camera).sum(1))
    front = facing > 0
    f0, f1 = model.edge_faces[:, 0], model.edge_faces[:, 1]
    front0 = front[f0]
    front1 = np.where(f1 >= 0, front[np.maximum(f1, 0)], ~front0)
    on_silhouette = front0 != front1
    # The side of a silhouette edge the object lies on: where the front face's third vertex projects.
    edges = model.edges[on_silhouette]
    front_face = np.where(front0[on_silhouette], f0[on_silhouette], f1[on_silhouette])
    vertices_camera = model.vertices_m @ R.T + t
    depth = vertices_camera[:, 2:3]
    # A vertex in the camera's plane has no pixel; np.errstate only where one is (it costs more than the division).
    with contextlib.nullcontext() if depth.all() else np.errstate(divide="ignore", invalid="ignore"):
        pixels = vertices_camera[:, :2] / depth * np.diag(K)[:2] + K[:2, 2]
    a, b = pixels[edges[:, 0]], pixels[edges[:, 1]]
    direction = b - a
    normal = direction[:, ::-1] * _TURN_CLOCKWISE  # (dv, -du)
    length = np.sqrt((normal * normal).sum(1, keepdims=True))
    normal = normal / np.maximum(length, 1e-12)
    third = model.faces[front_face].sum(1) - edges.sum(1)  # the front face's vertex off the edge
    side = ((pixels[third] - a) * normal).sum(1)
    normal = np.where(side[:, None] > 0, -normal, normal)
    keep = length[:, 0] > 1e-6
    open_face = facing > crease_min_cos
    seen = model.crease & open_face[f0] & np.where(f1 >= 0, open_face[np.maximum(f1, 0)], False)
    return VisibleEdges(silhouette=edges[keep], outward_px=normal[keep], crease=model.edges[seen],
                        crease_faces=model.edge_faces[seen])


def face_raster(model: RefineModel, camera_from_object: np.ndarray, K: np.ndarray, size_px: tuple[int, int],
                scale: float = 0.5) -> np.ndarray:
    """Index of the front-most front-facing face per pixel (-1 where the object is not), at ``scale`` times the
    image size ``(height, width)``: painter's order by face depth, enough to tell which silhouette and crease
    samples of a non-convex mesh other parts of it hide."""
    R, t = camera_from_object[:3, :3], camera_from_object[:3, 3]
    vertices_camera = model.vertices_m @ R.T + t
    centers = vertices_camera[model.faces].mean(1)
    front = ((model.face_normals @ R.T) * centers).sum(1) < 0
    height, width = int(round(size_px[0] * scale)), int(round(size_px[1] * scale))
    raster = np.full((height, width), -1, np.int32)
    z = np.maximum(vertices_camera[:, 2:3], 1e-6)
    pixels = (vertices_camera[:, :2] / z * np.diag(K)[:2] + K[:2, 2] + 0.5) * scale - 0.5
    fixed = np.round(pixels * 16).astype(np.int32)  # 4 fractional bits for cv2's sub-pixel polygons
    for face in np.flatnonzero(front)[np.argsort(-centers[front, 2])]:
        cv2.fillConvexPoly(raster, fixed[model.faces[face]], int(face), lineType=cv2.LINE_8, shift=4)
    return raster


class FaceRaster:
    """:func:`face_raster` of one pose with the look-ups the modalities need to drop what a non-convex mesh hides
    from itself."""

    def __init__(self, model: RefineModel, camera_from_object: np.ndarray, K: np.ndarray, size_px: tuple[int, int],
                 scale: float = 0.5):
        self.scale = scale
        self.faces = face_raster(model, camera_from_object, K, size_px, scale)

    def face_at(self, pixels: np.ndarray) -> np.ndarray:
        """Face index at ideal full-resolution pixels (..., 2); -1 for none or outside the raster."""
        height, width = self.faces.shape
        u = np.rint((pixels[..., 0] + 0.5) * self.scale - 0.5).astype(np.int64)
        v = np.rint((pixels[..., 1] + 0.5) * self.scale - 0.5).astype(np.int64)
        inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
        return np.where(inside, self.faces[np.clip(v, 0, height - 1), np.clip(u, 0, width - 1)], -1)

    def on_contour(self, pixels: np.ndarray, outward_px: np.ndarray) -> np.ndarray:
        """Whether each silhouette sample has the object just inside and nothing of it just outside (an occluding
        contour in front of another part of the object, or one hidden behind it, has not)."""
        step = 1.5 / self.scale
        return (self.face_at(pixels - step * outward_px) >= 0) & (self.face_at(pixels + step * outward_px) < 0)

    def on_crease(self, pixels: np.ndarray, normals_px: np.ndarray, faces: np.ndarray) -> np.ndarray:
        """Whether each crease sample is seen: one of its two faces (N, 2) is what the raster shows beside it."""
        step = 1.0 / self.scale
        seen = np.zeros(len(pixels), bool)
        for side in (-step, 0.0, step):
            face = self.face_at(pixels + side * normals_px)
            seen |= (face == faces[:, 0]) | (face == faces[:, 1])
        return seen


def sample_along_edges(model: RefineModel, edges: np.ndarray, camera_from_object: np.ndarray, K: np.ndarray,
                       count: int | None = None, spacing_px: float | None = None,
                       end_margin: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points along ``edges`` (E, 2 vertex indices): ``count`` in all spread evenly over their projected
    length, or one every ``spacing_px`` on each edge; ``end_margin`` of each edge's length is left out at both
    ends. Returns ``(points_object_m (N, 3), pixels (N, 2) ideal, edge (N,) index into edges)``."""
    if len(edges) == 0:
        return np.zeros((0, 3)), np.zeros((0, 2)), np.zeros(0, np.int64)
    a, b = model.vertices_m[edges[:, 0]], model.vertices_m[edges[:, 1]]
    R, t = camera_from_object[:3, :3], camera_from_object[:3, 3]
    ends = np.stack([a, b]) @ R.T + t
    pixels = ends[..., :2] / ends[..., 2:3] * np.diag(K)[:2] + K[:2, 2]
    length = np.linalg.norm(pixels[1] - pixels[0], axis=1) * (1 - 2 * end_margin)
    if count is not None:
        # Evenly over the whole (margin-trimmed) contour length: arc positions at the centres of `count` cells.
        cumulative = np.concatenate([[0.0], np.cumsum(length)])
        positions = (np.arange(count) + 0.5) / count * cumulative[-1]
        edge = np.clip(np.searchsorted(cumulative, positions, side="right") - 1, 0, len(edges) - 1)
        fraction = (positions - cumulative[edge]) / np.maximum(length[edge], 1e-9)
    else:
        per_edge = np.maximum(1, np.floor(length / spacing_px).astype(int))
        edge = np.repeat(np.arange(len(edges)), per_edge)
        starts = np.concatenate([[0], np.cumsum(per_edge)[:-1]])
        fraction = (np.arange(len(edge)) - starts[edge] + 0.5) / per_edge[edge]
    fraction = end_margin + fraction * (1 - 2 * end_margin)
    # Interpolated in 3D and projected again, so each sample is a true point of the mesh.
    points = a[edge] + fraction[:, None] * (b[edge] - a[edge])
    points_camera = points @ R.T + t
    return points, points_camera[:, :2] / points_camera[:, 2:3] * np.diag(K)[:2] + K[:2, 2], edge
