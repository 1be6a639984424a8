"""DiscoRenderer: renders sampled parameters with pyrender, reusing one GL context and scene graph.

Per worker, the GL context, the scene graph, the mesh pools and a bank of procedural textures are
built once; per sample only node poses, visibility, materials and lights change. This is what makes
CPU rendering (Mesa llvmpipe) fast enough: no texture generation and no mesh processing per sample.
The hand, limbs and table are the one exception: a few small instanced meshes made per sample from
prebuilt unit shapes (see ``DiscoRenderer._body_mesh``).
"""
from __future__ import annotations

import json
import logging

import cv2
import numpy as np

from discopose._errors import ConfigError
from discopose.geometry.transforms import invert_transform, make_transform, opengl_from_opencv, project_points
from discopose.render.config import RenderConfig
from discopose.render.gl import (focus_shadow_maps, import_pyrender, make_light_shadow_texture,
                                 make_offscreen_renderer, make_scene_deterministic, release_offscreen_renderer,
                                 set_shadow_map_size)
from discopose.render.objects import ObjectModel, box_projection_uvs, build_object, check_fits_cameras, colorize_cube
from discopose.render.hand import BODY_SHAPES, load_joint_states
from discopose.render.sampling import body_items, load_pose_file, nominal_cameras, sample_scene, sample_seed
from discopose.render.textures import load_image_textures, make_texture_bank

log = logging.getLogger(__name__)

# Rotations taking a plane's +z normal to each inward-facing wall of a room box, with the axis
# index that the wall's normal runs along.
_WALLS = [(np.array(r, float), axis, sign) for r, axis, sign in (
    ([[0, 0, -1], [0, 1, 0], [1, 0, 0]], 0, +1),    # wall at +x, normal -x
    ([[0, 0, 1], [0, 1, 0], [-1, 0, 0]], 0, -1),    # wall at -x, normal +x
    ([[1, 0, 0], [0, 0, -1], [0, 1, 0]], 1, +1),    # wall at +y, normal -y
    ([[1, 0, 0], [0, 0, 1], [0, -1, 0]], 1, -1),    # wall at -y, normal +y
    ([[1, 0, 0], [0, -1, 0], [0, 0, -1]], 2, +1),   # ceiling, normal -z
    ([[1, 0, 0], [0, 1, 0], [0, 0, 1]], 2, -1),     # floor, normal +z
)]


def _unit_shape(shape: str):
    """Unit-size trimesh primitive (fits in a 1 m cube, centred)."""
    import trimesh
    # Body parts (hand, limbs, table; see render.hand) are many and small: few polygons.
    if shape == "slab":
        return trimesh.creation.box((1, 1, 1))
    if shape == "rod":
        # Open-ended: a rod's ends always sit inside joint spheres, so its caps would never be seen.
        cylinder = trimesh.creation.cylinder(radius=0.5, height=1.0, sections=12)
        rod = trimesh.Trimesh(cylinder.vertices, cylinder.faces[np.abs(cylinder.face_normals[:, 2]) < 0.5],
                              process=False)
        rod.remove_unreferenced_vertices()
        return rod
    if shape == "joint":
        return trimesh.creation.icosphere(subdivisions=1, radius=0.5)
    if shape == "box":
        return trimesh.creation.box((1, 1, 1))
    if shape == "sphere":
        return trimesh.creation.icosphere(subdivisions=2, radius=0.5)
    if shape == "cylinder":
        return trimesh.creation.cylinder(radius=0.5, height=1.0, sections=24)
    if shape == "capsule":
        return trimesh.creation.capsule(height=0.5, radius=0.25, count=(12, 12))
    if shape == "cone":
        mesh = trimesh.creation.cone(radius=0.5, height=1.0, sections=24)
        mesh.apply_translation((0, 0, -0.5))
        return mesh
    raise ValueError(shape)


def _mesh_arrays(mesh, shape: str | None = None) -> tuple:
    """(positions, normals, indices, uvs) of a unit mesh.

    Round body parts (``joint`` spheres, open ``rod`` cylinders) keep their shared vertices with their true
    surface normals, so a 12-sided finger shades round. Other shapes get one vertex per face corner: flat
    shading and box-projected uvs.
    """
    if shape in ("joint", "rod"):
        vertices = np.asarray(mesh.vertices, float)
        normals = vertices * ([1.0, 1.0, 1.0] if shape == "joint" else [1.0, 1.0, 0.0])
        normals /= np.linalg.norm(normals, axis=1, keepdims=True)
        return (vertices.astype(np.float32), normals.astype(np.float32), np.asarray(mesh.faces, np.int32),
                (vertices[:, [0, 2]] + 0.5).astype(np.float32))
    mesh = mesh.copy()
    mesh.unmerge_vertices()
    uvs = box_projection_uvs(mesh.vertices, mesh.face_normals, mesh.faces, tile_m=1.0)
    return (np.asarray(mesh.vertices, np.float32), np.asarray(mesh.vertex_normals, np.float32),
            np.asarray(mesh.faces, np.int32), uvs)


def _scaled_pose(item: dict) -> np.ndarray:
    """``world_from_shape`` of a shape item with its unit mesh stretched to ``scale_m``."""
    pose = np.asarray(item["world_from_shape"], float).copy()
    pose[:3, :3] = pose[:3, :3] @ np.diag(item["scale_m"])
    return pose


def wall_poses(room: dict, workspace_center_m) -> list[np.ndarray]:
    """``world_from_wall`` of a sample's room walls (in ``_WALLS`` order: +x, -x, +y, -y, ceiling, floor), each
    stretched so the unit quad [-1, 1]^2 (normal +z, facing into the room) spans its wall."""
    half = np.asarray(room["half_extent_m"])
    yaw = room["yaw_rad"]
    world_from_room = make_transform(np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0],
                                               [0, 0, 1]]), workspace_center_m)
    poses = []
    for rotation, axis, sign in _WALLS:
        room_from_wall = make_transform(rotation, np.eye(3)[axis] * sign * half[axis])
        # Stretch the unit quad along the two room axes its local x and y map to.
        in_plane_half = [half[np.abs(rotation[:, k]).argmax()] for k in (0, 1)]
        room_from_wall[:3, :3] = rotation @ np.diag([*in_plane_half, 1.0])
        poses.append(world_from_room @ room_from_wall)
    return poses


def markings_texture(obj: ObjectModel, appearance: dict) -> np.ndarray | None:
    """The object's texture (uint8 RGB) recoloured by a sample's ``markings`` appearance: the built-in cube's
    faces and marks in their sampled colours, a mesh's texture hue-shifted and resaturated; None for a mesh
    with vertex colours only."""
    if obj.face_index is not None:
        return colorize_cube(obj, np.asarray(appearance["face_colors"]), np.asarray(appearance["mark_colors"]))
    if obj.texture is None:
        return None
    hsv = cv2.cvtColor(obj.texture, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + appearance["hue_shift_deg"] / 2) % 180
    hsv[..., 1] = np.clip(hsv[..., 1] * appearance["saturation_scale"], 0, 255)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)


def _from_file(rows, index: int, knob: str, what: str):
    """Row ``index`` of a per-sample file (None when the knob is unset), or the error naming the file's length."""
    if rows is None:
        return None
    if index >= len(rows):
        raise ConfigError(f"{knob} has {len(rows)} {what} but sample {index} was requested; "
                          f"render at most {len(rows)} samples")
    return rows[index]


def _load_unit_mesh(path: str):
    import trimesh
    try:
        mesh = trimesh.load(path, force="mesh", process=False)
    except Exception as exc:  # trimesh raises many types for corrupt files
        raise ConfigError(f"clutter.meshes: {path!r} cannot be read ({type(exc).__name__}: {exc}); "
                          "give a valid .ply/.obj/.glb") from None
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise ConfigError(f"clutter.meshes: {path!r} holds no triangles; export it as a triangle mesh")
    mesh.apply_translation(-mesh.bounds.mean(0))
    mesh.apply_scale(1.0 / max(float(np.ptp(mesh.vertices, axis=0).max()), 1e-9))
    return mesh


class DiscoRenderer:
    """Renders samples of a :class:`RenderConfig`. Create once per process; not thread-safe."""

    def __init__(self, config: RenderConfig, object_model: ObjectModel | None = None):
        self.pyrender = import_pyrender()
        set_shadow_map_size(self.pyrender, config.lighting.shadow_map_px)
        self.config = config
        self.object = object_model or build_object(config.object)
        self.cameras = nominal_cameras(config)
        check_fits_cameras(self.object, self.cameras, config)
        self.poses = load_pose_file(config.pose.poses_file) if config.pose.poses_file else None
        self.hand_states = load_joint_states(config.hand.joint_states_file) if config.hand.joint_states_file else None
        self._diameter_m = self.object.diameter_m
        # The bank depends only on the dataset seed, so every worker holds the same textures.
        bank_rng = np.random.default_rng(np.random.SeedSequence([config.seed, 0x7E47]))
        images = make_texture_bank(config.textures.kinds, config.textures.bank_size, config.textures.size_px, bank_rng)
        if config.textures.image_dir:
            images += load_image_textures(config.textures.image_dir, config.textures.size_px)
        self.bank_images = images
        self._bank = [self.pyrender.Texture(source=image, source_channels="RGB") for image in images]
        self._build_scene()
        self._shadow_focus = None
        self._gl = None

    # ----------------------------------------------------------------------------------- scene graph
    def _primitive(self, positions, normals, indices, uvs=None, colors=None, poses=None):
        # Our uvs have v down (image rows); pyrender flips images on upload, so it wants v up.
        texcoords = None if uvs is None else np.column_stack([uvs[:, 0], 1.0 - uvs[:, 1]]).astype(np.float32)
        return self.pyrender.Primitive(positions=positions, normals=normals, indices=indices,
                                       texcoord_0=texcoords, color_0=colors, poses=poses,
                                       material=self.pyrender.MetallicRoughnessMaterial())

    def _trimesh_primitive(self, mesh):
        return self._primitive(*_mesh_arrays(mesh))

    def _build_scene(self):
        pr = self.pyrender
        self.scene = pr.Scene(bg_color=(0, 0, 0, 1), ambient_light=(0.3, 0.3, 0.3))
        make_scene_deterministic(self.scene)
        obj = self.object
        self._object_mesh = pr.Mesh([self._primitive(obj.positions, obj.normals, obj.indices, obj.uvs,
                                                     obj.vertex_colors)])
        self._object_node = self.scene.add(self._object_mesh)
        self._original_material = pr.MetallicRoughnessMaterial(
            baseColorTexture=None if obj.texture is None else pr.Texture(source=obj.texture, source_channels="RGB"))
        # Keeps every bank texture referenced by the scene so pyrender uploads each once and never evicts it.
        quad = np.array([[0, 0, 0], [1e-6, 0, 0], [0, 1e-6, 0]], np.float32)
        holder = pr.Mesh([self._primitive(quad, None, np.array([[0, 1, 2]], np.int32), quad[:, :2])
                          for _ in self._bank], is_visible=False)
        for primitive, texture in zip(holder.primitives, self._bank):
            primitive.material = pr.MetallicRoughnessMaterial(baseColorTexture=texture)
        self.scene.add(holder)

        plane = np.array([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], np.float32)
        self._wall_nodes = []
        for _ in _WALLS:
            mesh = pr.Mesh([self._primitive(plane, np.tile([0, 0, 1], (4, 1)).astype(np.float32),
                                            np.array([[0, 1, 2], [0, 2, 3]], np.int32), (plane[:, :2] + 1) / 2)])
            self._wall_nodes.append(self.scene.add(mesh))
        self._shape_meshes = {s: _unit_shape(s) for s in self.config.clutter.primitives}
        self._shape_meshes.update({f"mesh{i}": _load_unit_mesh(p) for i, p in enumerate(self.config.clutter.meshes)})
        self._shape_pool: dict[str, list] = {s: [] for s in self._shape_meshes}
        # Allocate every slot a sample can use now: growing the pool mid-run stalls a frame on upload.
        for shape in self._shape_meshes:
            self._shape_node(shape, self.config.clutter.distractor_count[1])
        self._body_arrays = {shape: _mesh_arrays(_unit_shape(shape), shape) for shape in BODY_SHAPES}
        self._body_node = None
        self._light_pool: dict[str, list] = {"point": [], "spot": [], "directional": []}
        self._active_lights: list = []
        self._camera = pr.IntrinsicsCamera(fx=1, fy=1, cx=0, cy=0, znear=self.config.camera.znear_m,
                                           zfar=self.config.camera.zfar_m)
        self._camera_node = self.scene.add(self._camera)

    def _material(self, spec: dict):
        """A bank texture times ``tint``, or with ``texture`` None the plain linear colour ``tint``."""
        texture = None if spec["texture"] is None else self._bank[spec["texture"] % len(self._bank)]
        return self.pyrender.MetallicRoughnessMaterial(
            baseColorTexture=texture, baseColorFactor=[*spec["tint"], 1.0], metallicFactor=spec["metallic"],
            roughnessFactor=spec["roughness"])

    def _shape_node(self, shape: str, slot: int):
        pool = self._shape_pool[shape]
        while len(pool) <= slot:
            pool.append(self.scene.add(self.pyrender.Mesh([self._trimesh_primitive(self._shape_meshes[shape])])))
        return pool[slot]

    def _body_mesh(self, items: list[dict]):
        """The hand, limbs and table as one mesh of instanced primitives, one per shape and look: a hand is
        three draw calls, not forty (pyrender spends a fraction of a millisecond of Python on each). Its
        unit shapes are a few hundred vertices, cheap to upload per sample. Parts that interpenetrate (joints
        and rods) tie in the depth buffer where their surfaces cross, so re-renders are bit-exact only if they
        are drawn in the same order every time: the primitive order here is fixed by the params."""
        groups: dict[tuple[str, str], list[dict]] = {}
        for item in items:
            groups.setdefault((item["shape"], json.dumps(item["material"], sort_keys=True)), []).append(item)
        primitives = []
        for (shape, _), members in groups.items():
            primitive = self._primitive(*self._body_arrays[shape], poses=np.stack([_scaled_pose(m) for m in members]))
            primitive.material = self._material(members[0]["material"])
            primitives.append(primitive)
        return self.pyrender.Mesh(primitives) if primitives else None

    def _light_node(self, light: dict, slot: int):
        pr = self.pyrender
        pool = self._light_pool[light["type"]]
        while len(pool) <= slot:
            cls = {"point": pr.PointLight, "spot": pr.SpotLight, "directional": pr.DirectionalLight}[light["type"]]
            pool.append(pr.Node(light=cls()))
            if light["type"] != "point":  # pyrender has no point-light shadows
                make_light_shadow_texture(pr, pool[-1].light)
        node = pool[slot]
        node.light.color = np.asarray(light["color"])
        node.light.intensity = light["intensity"]
        if light["type"] == "spot":
            node.light.innerConeAngle = light["inner_cone_rad"]
            node.light.outerConeAngle = light["outer_cone_rad"]
        return node

    def _object_material(self, appearance: dict):
        pr = self.pyrender
        obj = self.object
        mode = appearance["mode"]
        factors = dict(metallicFactor=appearance["metallic"], roughnessFactor=appearance["roughness"])
        if mode == "random":
            return self._material(appearance)
        if mode == "original":
            material = self._original_material
            material.metallicFactor, material.roughnessFactor = factors["metallicFactor"], factors["roughnessFactor"]
            return material
        image = markings_texture(obj, appearance)
        if image is None:  # vertex colours: a colour tint keeps their pattern
            tint = np.asarray(appearance["face_colors"][0]) * 0.5 + 0.5
            return pr.MetallicRoughnessMaterial(baseColorFactor=[*tint, 1.0], **factors)
        return pr.MetallicRoughnessMaterial(baseColorTexture=pr.Texture(source=image, source_channels="RGB"), **factors)

    # ---------------------------------------------------------------------------------------- render
    def sample_params(self, index: int) -> dict:
        """Every randomized parameter of sample ``index`` (deterministic in config seed and index)."""
        seed = sample_seed(self.config.seed, index)
        pose = _from_file(self.poses, index, "pose.poses_file", "poses")
        hand_state = _from_file(self.hand_states, index, "hand.joint_states_file", "states")
        params = sample_scene(self.config, np.random.default_rng(seed), self.cameras, len(self._bank),
                              self._diameter_m, pose, self.object.bounds_m, hand_state)
        params.update(index=index, seed=seed)
        return params

    def _apply(self, params: dict):
        scene = self.scene
        world_from_object = np.asarray(params["world_from_object"])
        scene.set_pose(self._object_node, world_from_object)
        self._shadow_focus = (world_from_object[:3, 3], self.config.lighting.shadow_radius_m)
        self._object_mesh.primitives[0].material = self._object_material(params["object_appearance"])
        scene.ambient_light = np.asarray(params["ambient"])
        scene.bg_color = np.array([*params["bg_color"], 1.0])

        room = params["room"]
        poses = [None] * len(_WALLS) if room is None else wall_poses(room, self.config.pose.workspace_center_m)
        for node, pose, material in zip(self._wall_nodes, poses, (room or {}).get("walls", [None] * 6)):
            node.mesh.is_visible = room is not None
            if room is None:
                continue
            scene.set_pose(node, pose)
            node.mesh.primitives[0].material = self._material(material)

        used = {shape: 0 for shape in self._shape_pool}
        for item in params["distractors"] + params["occluders"]:
            node = self._shape_node(item["shape"], used[item["shape"]])
            used[item["shape"]] += 1
            scene.set_pose(node, _scaled_pose(item))
            node.mesh.is_visible = True
            node.mesh.primitives[0].material = self._material(item["material"])
        for shape, pool in self._shape_pool.items():
            for node in pool[used[shape]:]:
                node.mesh.is_visible = False

        if self._body_node is not None:
            scene.remove_node(self._body_node)
        body = self._body_mesh(body_items(params))
        self._body_node = None if body is None else scene.add(body)

        for node in self._active_lights:
            scene.remove_node(node)
        self._active_lights = []
        used_lights = {"point": 0, "spot": 0, "directional": 0}
        for light in params["lights"]:
            node = self._light_node(light, used_lights[light["type"]])
            used_lights[light["type"]] += 1
            scene.add_node(node)
            scene.set_pose(node, opengl_from_opencv(np.asarray(light["world_from_light"])))
            self._active_lights.append(node)

    def _set_camera(self, camera: dict):
        K = np.asarray(camera["K"])
        width, height = camera["width_px"], camera["height_px"]
        if self._gl is None:
            self._gl = make_offscreen_renderer(width, height, self.config.camera.msaa_samples)
            focus_shadow_maps(self.pyrender, self._gl._renderer, lambda: self._shadow_focus)
        if (self._gl.viewport_width, self._gl.viewport_height) != (width, height):
            self._gl.viewport_width, self._gl.viewport_height = width, height
        # OpenCV puts pixel centres at integers, OpenGL at half-integers: shift the principal point.
        self._camera.fx, self._camera.fy = K[0, 0], K[1, 1]
        self._camera.cx, self._camera.cy = K[0, 2] + 0.5, K[1, 2] + 0.5
        self.scene.set_pose(self._camera_node, opengl_from_opencv(np.asarray(camera["world_from_camera"])))

    def render(self, params: dict) -> dict:
        """Render a sample from its parameters.

        Returns ``{camera_name: {"rgb": (H, W, 3) uint8, "depth_m": (H, W) float32 (0 = nothing),
        "mask": (H, W) bool visible object pixels, "silhouette": (H, W) bool object pixels occluded or not,
        "labels": {...}}}``; see ``docs/dataset_format.md``.
        """
        pr = self.pyrender
        self._apply(params)
        flags = pr.RenderFlags.NONE
        if params["shadows"]:
            flags |= pr.RenderFlags.SHADOWS_DIRECTIONAL | pr.RenderFlags.SHADOWS_SPOT
        colors, depths = [], []
        for camera in params["cameras"]:
            self._set_camera(camera)
            color, depth = self._gl.render(self.scene, flags=flags)
            colors.append(color)
            depths.append(depth)
        # Second pass with only the object: its unoccluded silhouette and depth.
        hidden = [node for node in self.scene.mesh_nodes if node is not self._object_node and node.mesh.is_visible]
        for node in hidden:
            node.mesh.is_visible = False
        object_depths = []
        try:
            for camera in params["cameras"]:
                self._set_camera(camera)
                object_depths.append(self._gl.render(self.scene, flags=pr.RenderFlags.DEPTH_ONLY))
        finally:
            for node in hidden:
                node.mesh.is_visible = True

        noise_rng = np.random.default_rng(params["noise"]["seed"])
        world_from_object = np.asarray(params["world_from_object"])
        out = {}
        for camera, color, depth, object_depth in zip(params["cameras"], colors, depths, object_depths):
            rgb = self._sensor_noise(color, params["noise"], noise_rng, camera.get("source_scale", 1.0))
            silhouette = object_depth > 0
            visible = silhouette & (np.abs(depth - object_depth) <= 1e-5 + 1e-4 * object_depth)
            out[camera["name"]] = {"rgb": rgb, "depth_m": depth.astype(np.float32), "mask": visible,
                                   "silhouette": silhouette,
                                   "labels": self._labels(camera, world_from_object, silhouette, visible)}
        return out

    @staticmethod
    def _sensor_noise(color: np.ndarray, noise: dict, rng: np.random.Generator, source_scale: float = 1.0
                      ) -> np.ndarray:
        """Blur and noise as the camera's sensor adds them. ``source_scale`` < 1: the image stands for a
        camera with that many pixels per pixel of it (a crop of a distant object), so it is averaged down
        to that resolution, blurred and noised there, and enlarged back bilinearly, as a remap would."""
        height, width = color.shape[:2]
        size = (max(1, round(width * source_scale)), max(1, round(height * source_scale)))
        image = cv2.resize(color, size, interpolation=cv2.INTER_AREA) if source_scale < 1.0 else color
        if noise["blur_sigma_px"] > 0:
            image = cv2.GaussianBlur(image, (0, 0), noise["blur_sigma_px"])
        if noise["gaussian_sigma"] > 0:
            noisy = image + rng.standard_normal(image.shape, dtype=np.float32) * np.float32(noise["gaussian_sigma"])
            image = np.clip(noisy, 0, 255).astype(np.uint8)
        if image.shape[:2] != (height, width):
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
        return np.ascontiguousarray(image)

    def _labels(self, camera: dict, world_from_object: np.ndarray, silhouette: np.ndarray, visible: np.ndarray) -> dict:
        world_from_camera = np.asarray(camera["world_from_camera"])
        camera_from_object = invert_transform(world_from_camera) @ world_from_object
        K = np.asarray(camera["K"])
        keypoints, keypoint_depth = project_points(K, camera_from_object, self.object.keypoints_m)
        silhouette_px = int(silhouette.sum())
        visible_px = int(visible.sum())
        return {
            "K": K.tolist(), "width_px": camera["width_px"], "height_px": camera["height_px"],
            "world_from_camera": world_from_camera.tolist(),
            "camera_from_object": camera_from_object.tolist(),
            "keypoints_px": keypoints.tolist(), "keypoints_depth_m": keypoint_depth.tolist(),
            "bbox_xyxy": _bbox(silhouette), "bbox_visible_xyxy": _bbox(visible),
            "object_px": silhouette_px, "visible_px": visible_px,
            "visible_fraction": visible_px / silhouette_px if silhouette_px else 0.0,
        }

    def render_index(self, index: int) -> tuple[dict, dict]:
        params = self.sample_params(index)
        return params, self.render(params)

    def close(self):
        """Free this renderer's GL context. Other renderers in the process keep working."""
        if self._gl is not None:
            release_offscreen_renderer(self._gl)
            self._gl = None


def _bbox(mask: np.ndarray):
    """Inclusive pixel bounds ``[x_min, y_min, x_max, y_max]`` of a mask, or None when empty."""
    ys = np.flatnonzero(mask.any(1))
    xs = np.flatnonzero(mask.any(0))
    if len(xs) == 0:
        return None
    return [int(xs[0]), int(ys[0]), int(xs[-1]), int(ys[-1])]

