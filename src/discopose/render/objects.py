"""The rendered object: the built-in lettered cube or a user mesh, as plain arrays.

Built-in cube (``docs/conventions.md``): edge 57 mm, origin at its centre, faces labelled by the axis
they face: +x ``F``, -x ``B``, +y ``L``, -y ``R``, +z ``U``, -z ``D``. None of these letters is
symmetric under an in-plane rotation, so all 24 orientations of the cube are distinguishable.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from discopose._errors import ConfigError
from discopose.geometry.symmetry import Symmetry

CUBE_FACES = (  # (letter, outward normal, image-right axis, image-down axis) in the object frame
    ("F", (1, 0, 0), (0, 1, 0), (0, 0, -1)),
    ("B", (-1, 0, 0), (0, -1, 0), (0, 0, -1)),
    ("L", (0, 1, 0), (-1, 0, 0), (0, 0, -1)),
    ("R", (0, -1, 0), (1, 0, 0), (0, 0, -1)),
    ("U", (0, 0, 1), (0, 1, 0), (1, 0, 0)),
    ("D", (0, 0, -1), (0, 1, 0), (-1, 0, 0)),
)
FACE_PX = 64
# The cube's own colours (RGB in [0, 1]) when appearance is not randomized, and on the printed cube.
CUBE_FACE_RGB = (0.9, 0.9, 0.9)
CUBE_MARK_RGB = (0.1, 0.1, 0.1)


@dataclass
class ObjectModel:
    """Geometry and appearance of the object, in metres in its own frame."""

    name: str
    positions: np.ndarray          # (V, 3) float32
    normals: np.ndarray            # (V, 3) float32
    indices: np.ndarray            # (F, 3) int32
    uvs: np.ndarray | None = None  # (V, 2) float32, texture v down
    texture: np.ndarray | None = None        # (H, W, 3) uint8 RGB
    vertex_colors: np.ndarray | None = None  # (V, 3) uint8 RGB
    # Built-in cube only: per-texel face index and marking mask, so markings keep while colours change.
    face_index: np.ndarray | None = None
    marking_mask: np.ndarray | None = None
    symmetry: Symmetry = field(default_factory=Symmetry)
    # Symmetry of the bare geometry (the built-in cube: 24 rotations, broken only by its markings).
    # Models regress the pose up to this group and classify which equivalent the markings show.
    shape_symmetry: Symmetry | None = None
    source_sha256: str | None = None

    @property
    def bounds_m(self) -> np.ndarray:
        return np.stack([self.positions.min(0), self.positions.max(0)]).astype(float)

    @property
    def keypoints_m(self) -> np.ndarray:
        """The 8 corners of the axis-aligned bounding box, then its centre: (9, 3)."""
        low, high = self.bounds_m
        corners = np.array([[x, y, z] for x in (low[0], high[0]) for y in (low[1], high[1])
                            for z in (low[2], high[2])])
        return np.vstack([corners, (low + high) / 2])

    @property
    def diameter_m(self) -> float:
        """Largest distance between two vertices (the BOP definition), via the convex hull."""
        points = self.positions.astype(float)
        if len(points) > 2000:
            import trimesh
            points = np.asarray(trimesh.points.PointCloud(points).convex_hull.vertices)
        diffs = points[:, None, :] - points[None, :, :]
        return float(np.sqrt((diffs ** 2).sum(-1)).max())

    def surface_points(self, count: int = 1000, seed: int = 0) -> np.ndarray:
        """Points sampled uniformly on the surface (for ADD metrics), deterministic for ``seed``."""
        import trimesh
        mesh = trimesh.Trimesh(self.positions, self.indices, process=False)
        # Even sampling rejects points closer than its radius and may come up short; that case is handled
        # below, so trimesh's warning about it would only alarm the user.
        sample_log = logging.getLogger("trimesh.sample")
        level = sample_log.level
        sample_log.setLevel(logging.ERROR)
        try:
            points, _ = trimesh.sample.sample_surface_even(mesh, count, seed=seed)
        finally:
            sample_log.setLevel(level)
        if len(points) < count:
            points, _ = trimesh.sample.sample_surface(mesh, count, seed=seed)
        return np.asarray(points, dtype=float)

    def describe(self) -> dict:
        """The manifest's description of the object."""
        return {"name": self.name, "bounds_m": self.bounds_m.tolist(), "diameter_m": self.diameter_m,
                "keypoints_m": self.keypoints_m.tolist(), "symmetry": self.symmetry.to_dict(),
                "shape_symmetry": (self.shape_symmetry or self.symmetry).to_dict(),
                "source_sha256": self.source_sha256,
                # For ADD/ADD-S: metrics then need only the manifest or checkpoint, not the mesh file.
                "surface_points_m": np.round(self.surface_points(300), 5).tolist()}


def face_marking(letter: str, px: int = FACE_PX) -> np.ndarray:
    """A face's marking (its letter and orientation dot) as a (px, px) uint8 mask, 255 on the marking.

    The one drawing of the markings: the renderer's atlas uses it at ``FACE_PX`` and the printable cube
    (``discopose cube print``) at print resolution, so the physical cube cannot drift from the rendered one.
    Every length is a fixed fraction of ``px`` (stroke width 5/64 of the face).
    """
    mask = np.zeros((px, px), np.uint8)
    scale = px / 40
    thickness = max(1, round(px * 5 / 64))
    (w, h), _ = cv2.getTextSize(letter, cv2.FONT_HERSHEY_DUPLEX, scale, thickness=thickness)
    cv2.putText(mask, letter, ((px - w) // 2, (px + h) // 2), cv2.FONT_HERSHEY_DUPLEX, scale,
                255, thickness=thickness, lineType=cv2.LINE_AA)
    # A small corner dot makes each face's in-plane orientation obvious even when the letter blurs.
    cv2.circle(mask, (px // 8, px // 8), px // 16, 255, -1, lineType=cv2.LINE_AA)
    return mask


def make_marked_cube(size_m: float = 0.057, symmetry: Symmetry | None = None) -> ObjectModel:
    """The built-in cube: 24 vertices (4 per face) mapped onto a 3x2 texture atlas of lettered faces."""
    half = size_m / 2
    positions, normals, uvs, indices = [], [], [], []
    atlas_w, atlas_h = 3 * FACE_PX, 2 * FACE_PX
    face_index = np.zeros((atlas_h, atlas_w), np.int8)
    marking = np.zeros((atlas_h, atlas_w), np.float32)
    for face, (letter, normal, right, down) in enumerate(CUBE_FACES):
        normal, right, down = (np.array(v, float) for v in (normal, right, down))
        col, row = face % 3, face // 3
        face_index[row * FACE_PX:(row + 1) * FACE_PX, col * FACE_PX:(col + 1) * FACE_PX] = face
        marking[row * FACE_PX:(row + 1) * FACE_PX, col * FACE_PX:(col + 1) * FACE_PX] = face_marking(letter) / 255.0
        base = len(positions)
        for du, dv in ((0, 0), (1, 0), (1, 1), (0, 1)):
            positions.append(half * (normal + (2 * du - 1) * right + (2 * dv - 1) * down))
            normals.append(normal)
            # Half-texel inset keeps bilinear filtering from bleeding across faces in the atlas.
            uvs.append(((col * FACE_PX + 0.5 + du * (FACE_PX - 1)) / atlas_w,
                        (row * FACE_PX + 0.5 + dv * (FACE_PX - 1)) / atlas_h))
        # Counter-clockwise seen from outside: right x down points inward, so wind the other way.
        indices += [[base, base + 2, base + 1], [base, base + 3, base + 2]]
    model = ObjectModel(
        name="cube", positions=np.array(positions, np.float32), normals=np.array(normals, np.float32),
        indices=np.array(indices, np.int32), uvs=np.array(uvs, np.float32),
        face_index=face_index, marking_mask=marking, symmetry=symmetry or Symmetry(), shape_symmetry=Symmetry("cube"),
        source_sha256=None)
    model.texture = colorize_cube(model, np.array([CUBE_FACE_RGB] * 6), np.array([CUBE_MARK_RGB] * 6))
    return model


def colorize_cube(model: ObjectModel, face_colors: np.ndarray, mark_colors: np.ndarray) -> np.ndarray:
    """Atlas texture with each face's background and marking colours (RGB in [0, 1], shape (6, 3))."""
    return paint_markings(np.asarray(face_colors, np.float32)[model.face_index],
                          np.asarray(mark_colors, np.float32)[model.face_index], model.marking_mask)


def paint_markings(face_rgb: np.ndarray, mark_rgb: np.ndarray, marking: np.ndarray) -> np.ndarray:
    """uint8 RGB of a face painted ``face_rgb`` with its markings in ``mark_rgb`` (RGB in [0, 1], one colour
    or one per pixel) where ``marking`` (float in [0, 1], antialiased) covers it; the renderer's texture
    and the printed cube are both painted here."""
    face, mark = np.asarray(face_rgb, np.float32) * 255, np.asarray(mark_rgb, np.float32) * 255
    return np.clip(face + marking[..., None] * (mark - face), 0, 255).astype(np.uint8)


def load_mesh_object(path: str, scale_to_m: float = 1.0, symmetry: Symmetry | None = None) -> ObjectModel:
    """A user mesh (.ply/.obj/.glb/...) with its texture or vertex colours, scaled to metres."""
    import trimesh

    path_obj = Path(path)
    if not path_obj.is_file():
        raise ConfigError(f"object mesh {path!r} does not exist; give a .ply/.obj/.glb file")
    try:
        loaded = trimesh.load(str(path_obj), force="mesh", process=False)
    except Exception as exc:  # trimesh raises many types for corrupt files
        raise ConfigError(f"object mesh {path!r} cannot be read ({type(exc).__name__}: {exc}); "
                          "check the file is a valid .ply/.obj/.glb") from None
    if not isinstance(loaded, trimesh.Trimesh) or len(loaded.faces) == 0:
        raise ConfigError(f"object mesh {path!r} holds no triangles; export it as a triangle mesh")
    if len(loaded.faces) > MAX_FACES:
        raise ConfigError(f"object mesh {path!r} has {len(loaded.faces)} triangles, more than the {MAX_FACES} that "
                          "render at the recipe's speed; decimate it (Blender's Decimate modifier, or trimesh's "
                          "simplify_quadric_decimation) — a pose estimator needs the shape, not the scan's detail")
    _orient_outward(loaded)
    uvs, texture, colors = None, None, None
    visual = loaded.visual
    if getattr(visual, "kind", None) == "texture" and getattr(visual, "uv", None) is not None:
        image = getattr(visual.material, "image", None) or getattr(visual.material, "baseColorTexture", None)
        if image is not None:
            uvs = np.asarray(visual.uv, np.float32).copy()
            uvs[:, 1] = 1.0 - uvs[:, 1]  # trimesh uv has v up; ours has v down like image rows
            texture = np.asarray(image.convert("RGB"))
    if uvs is None:
        has_colors = getattr(visual, "kind", None) == "vertex"
        loaded.unmerge_vertices()
        if has_colors:
            colors = np.asarray(loaded.visual.vertex_colors)[:, :3].astype(np.uint8)
        uvs = box_projection_uvs(loaded.vertices, loaded.face_normals, loaded.faces, scale_to_m)
    positions = np.asarray(loaded.vertices, np.float32) * scale_to_m
    if not np.isfinite(positions).all():
        raise ConfigError(f"object mesh {path!r} has non-finite vertices (NaN or infinite); export the mesh again")
    extent = np.ptp(positions, axis=0).max()
    if extent == 0:
        raise ConfigError(f"object mesh {path!r} has zero size (all its vertices coincide); export a mesh with "
                          "a surface")
    if extent < 1e-3 or extent > 10:
        raise ConfigError(f"object mesh {path!r} is {extent:.4g} m across after scaling by {scale_to_m}; "
                          "set object.mesh_scale_to_m (e.g. 0.001 for millimetre models)")
    return ObjectModel(
        name=path_obj.stem, positions=positions, normals=np.asarray(loaded.vertex_normals, np.float32),
        indices=np.asarray(loaded.faces, np.int32), uvs=uvs, texture=texture, vertex_colors=colors,
        symmetry=symmetry or Symmetry(), source_sha256=hashlib.sha256(path_obj.read_bytes()).hexdigest())


MAX_FACES = 200_000


def _orient_outward(mesh) -> None:
    """Turn a closed mesh's faces outward in place when the whole surface is inside out (negative volume),
    the usual export mistake that renders the object dark. Open meshes (holes) are left as they are."""
    import trimesh
    merged = trimesh.Trimesh(mesh.vertices, mesh.faces, process=True)
    if merged.is_watertight and merged.volume < 0:
        outward_normals = -np.asarray(mesh.vertex_normals)  # the file's own normals, or computed: both inward
        mesh.faces = np.ascontiguousarray(mesh.faces[:, ::-1])
        mesh.vertex_normals = outward_normals


def box_projection_uvs(vertices, face_normals, faces, scale_to_m: float = 1.0, tile_m: float = 0.1) -> np.ndarray:
    """Per-vertex UVs by projecting each face onto the plane of its dominant normal axis.

    Needs unmerged vertices (each vertex used by one face). Textures repeat every ``tile_m`` metres.
    """
    vertices = np.asarray(vertices, float) * scale_to_m
    faces = np.asarray(faces)
    dominant = np.abs(np.asarray(face_normals)).argmax(1)
    # The two axes other than the dominant one, per face: (F, 2).
    keep = np.array([[1, 2], [0, 2], [0, 1]])[dominant]
    uvs = np.zeros((len(vertices), 2), np.float32)
    for corner in range(3):
        ids = faces[:, corner]
        uvs[ids] = np.take_along_axis(vertices[ids], keep, axis=1) / tile_m
    return uvs


# Largest bounding radius of the object per metre of camera distance to the workspace centre. The default
# 40 degree camera sees 0.73 m across per metre of distance: an object 0.8 m wide already overfills its
# view, and anything bigger soon reaches the camera as it moves about the workspace.
MAX_RADIUS_PER_CAMERA_DISTANCE = 0.4


def check_fits_cameras(obj: ObjectModel, cameras: list, config) -> None:
    """Refuse (:class:`ConfigError`) an object that cannot be rendered with the cameras of ``config`` (a
    :class:`~discopose.render.config.RenderConfig`): non-finite or zero-size, a bounding radius above
    40% of a camera's distance to the workspace centre, or a nearest possible approach (workspace
    extent and camera jitter included) inside the near plane ``camera.znear_m``. ``cameras`` are the
    nominal cameras (:func:`~discopose.render.sampling.nominal_cameras`)."""
    positions = np.asarray(obj.positions, float)
    if positions.size == 0 or not np.isfinite(positions).all():
        raise ConfigError(f"object {obj.name!r} has no vertices or non-finite ones; export the mesh again")
    if np.ptp(positions, axis=0).max() == 0:
        raise ConfigError(f"object {obj.name!r} has zero size (all its vertices coincide); export a mesh with a "
                          "surface")
    radius_m = float(np.linalg.norm(positions, axis=1).max())
    center = np.asarray(config.pose.workspace_center_m, float)
    # How far the object's origin may stray from the workspace centre, plus each camera's own jitter.
    reach_m = float(np.linalg.norm(config.pose.workspace_half_extent_m)) + config.camera.position_jitter_m
    for camera in cameras:
        distance_m = float(np.linalg.norm(camera.world_from_camera[:3, 3] - center))
        nearest_m = distance_m - reach_m - radius_m
        if radius_m <= MAX_RADIUS_PER_CAMERA_DISTANCE * distance_m and nearest_m >= config.camera.znear_m:
            continue
        if config.object.mesh is None:
            resize = f"make the cube smaller (object.cube_size_m, now {config.object.cube_size_m:g})"
        else:
            resize = (f"scale the mesh with --object-scale (object.mesh_scale_to_m, now "
                      f"{config.object.mesh_scale_to_m:g}; 0.001 for a mesh in millimetres)")
        move = "calibrated cameras farther away" if config.camera.files else "cameras out (camera.distance_m)"
        raise ConfigError(f"object {obj.name!r} has a diameter of {obj.diameter_m:.3g} m (bounding radius "
                          f"{radius_m:.3g} m) but camera {camera.name!r} is {distance_m:.3g} m from the workspace "
                          f"centre: the camera would be inside or against the object; {resize}, or move the {move}")


def build_object(config) -> ObjectModel:
    """The object described by an :class:`~discopose.render.config.ObjectConfig`."""
    if config.mesh is None:
        return make_marked_cube(config.cube_size_m, config.symmetry)
    return load_mesh_object(config.mesh, config.mesh_scale_to_m, config.symmetry)


CUBE_DIAMETER_M = 0.057 * 3 ** 0.5  # the built-in cube's: what the recipe's distances were tuned for
MESH_SUFFIXES = (".ply", ".obj", ".glb", ".gltf", ".stl", ".off")
SYMMETRY_CHOICES = ("none", "axis", "axis:x", "axis:y", "axis:z", "cube", "discrete")


@dataclass
class UserObject:
    """A user's mesh as a recipe needs it: units resolved, symmetry chosen, and the render settings that
    make it fill the crops and fit the frames as the 57 mm cube does (distances scale with the diameter)."""

    mesh: str
    scale_to_m: float
    symmetry: Symmetry
    diameter_m: float
    textured: bool
    notes: list = field(default_factory=list)  # what was decided for the user, to print

    @property
    def size_ratio(self) -> float:
        return self.diameter_m / CUBE_DIAMETER_M

    def render_overrides(self) -> list[str]:
        """``KEY=VALUE`` render-config overrides: the object, and the cube's camera distances, camera jitter,
        workspace and near plane scaled by the diameter ratio."""
        import json

        from discopose.render.config import CameraConfig, PoseConfig
        k, camera, pose = self.size_ratio, CameraConfig(), PoseConfig()
        half = ", ".join(f"{k * v:.5f}" for v in pose.workspace_half_extent_m)
        return [f"object.mesh={self.mesh}", f"object.mesh_scale_to_m={self.scale_to_m}",
                f"object.symmetry={json.dumps(self.symmetry.to_dict())}",
                f"camera.distance_m={k * camera.distance_m:.5f}",
                f"camera.distance_range_m=[{k * camera.distance_range_m[0]:.5f}, {k * camera.distance_range_m[1]:.5f}]",
                f"camera.position_jitter_m={k * camera.position_jitter_m:.5f}",
                f"pose.workspace_half_extent_m=[{half}]", f"camera.znear_m={min(camera.znear_m, 0.1 * k * camera.distance_m):.5f}"]


def _bop_models_info(mesh: Path) -> tuple[dict, int] | None:
    """The mesh's entry in a ``models_info.json`` beside it (BOP: ``models/obj_000005.ply``) and its id."""
    import json
    import re
    info_path = mesh.parent / "models_info.json"
    match = re.fullmatch(r"obj_0*(\d+)", mesh.stem)
    if not info_path.is_file() or not match:
        return None
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{info_path} is not readable JSON ({exc}); fix or remove it") from None
    entry = info.get(match.group(1)) or info.get(str(int(match.group(1))))
    if entry is None:
        raise ConfigError(f"{info_path} has no entry for object {int(match.group(1))} ({mesh.name}); "
                          "use the models_info.json of the same BOP dataset")
    return entry, int(match.group(1))


def describe_user_object(mesh: str, scale_to_m: float | None = None, symmetry: str | None = None) -> UserObject:
    """Check a user's mesh and settle what the recipe needs: units (``scale_to_m``, else BOP's millimetres,
    else guessed from the size), symmetry (``symmetry``: one of ``SYMMETRY_CHOICES``, else the BOP
    ``models_info.json`` beside the mesh, else none). Anything that cannot work is a one-line ConfigError."""
    import trimesh
    path = Path(mesh)
    if path.is_dir():
        raise ConfigError(f"--object {mesh} is a folder; give the mesh file itself, e.g. {mesh}/obj_000001.ply")
    if not path.is_file():
        raise ConfigError(f"--object {mesh} does not exist; give a {'/'.join(MESH_SUFFIXES)} file")
    if path.suffix.lower() not in MESH_SUFFIXES:
        raise ConfigError(f"--object {mesh}: {path.suffix or 'no suffix'} is not a mesh format read here; export "
                          f"it as one of {', '.join(MESH_SUFFIXES)}")
    notes = []
    bop = _bop_models_info(path)
    if scale_to_m is None:
        if bop is not None:
            scale_to_m = 0.001
            notes.append(f"{path.name}: a BOP model (models_info.json beside it): millimetres")
        else:
            try:
                raw = float(trimesh.load(str(path), force="mesh", process=False).extents.max())
            except Exception as exc:  # trimesh raises many types for corrupt files
                raise ConfigError(f"--object {mesh} cannot be read ({type(exc).__name__}: {exc}); check the file "
                                  "is a valid mesh") from None
            if 5 < raw <= 5000:
                scale_to_m = 0.001
                notes.append(f"{path.name} is {raw:.4g} units along its longest side: read as millimetres "
                             "(--object-scale 1 if they are metres)")
            elif 0.005 <= raw <= 2:
                scale_to_m = 1.0
                notes.append(f"{path.name} is {raw:.4g} units along its longest side: read as metres "
                             "(--object-scale 0.001 if they are millimetres)")
            else:
                raise ConfigError(f"--object {mesh} is {raw:.4g} units along its longest side: metres or millimetres? "
                                  "give --object-scale (1 for metres, 0.001 for millimetres, 0.01 for centimetres)")
    if symmetry is None:
        if bop is not None:
            group = Symmetry.from_bop(bop[0], name=path.name)
            notes.append(f"symmetry {group.kind} from models_info.json")
        else:
            group = Symmetry()
            notes.append("symmetry none: every pose assumed distinguishable (--symmetry axis for a mug-like "
                         "object, cube for a plain box)")
    elif symmetry in ("axis", "axis:x", "axis:y", "axis:z"):
        axis = {"x": (1.0, 0.0, 0.0), "y": (0.0, 1.0, 0.0), "z": (0.0, 0.0, 1.0)}[symmetry.partition(":")[2] or "z"]
        group = Symmetry("axis", axis=axis)
    elif symmetry == "discrete":
        if bop is None:
            raise ConfigError("--symmetry discrete needs the rotations: put the BOP models_info.json beside the "
                              "mesh (named obj_NNNNNN), or declare object.symmetry in a render config")
        group = Symmetry.from_bop(bop[0], name=path.name)
    elif symmetry in ("none", "cube"):
        group = Symmetry(symmetry)
    else:
        raise ConfigError(f"--symmetry {symmetry!r} is unknown; use one of {', '.join(SYMMETRY_CHOICES)}")
    model = load_mesh_object(str(path), scale_to_m, group)
    diameter = model.diameter_m
    if not 0.01 <= diameter <= 0.5:
        raise ConfigError(f"--object {mesh} is {diameter * 1000:.0f} mm across (diameter) with --object-scale "
                          f"{scale_to_m:g}; the recipe handles 10-500 mm objects: check the scale")
    return UserObject(mesh=str(path.resolve()), scale_to_m=scale_to_m, symmetry=group, diameter_m=diameter,
                      textured=model.texture is not None, notes=notes)
