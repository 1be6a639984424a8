"""A procedural hand holding the object, built from rigid unit shapes.

Every part is a shape item ``{"shape", "world_from_shape", "scale_m", "material"}`` like a distractor;
the renderer draws the parts instanced, one draw call per shape and look. Shapes: ``slab`` (unit box),
``rod`` (cylinder of unit diameter and length along its z axis) and ``joint`` (sphere of unit diameter).
A capsule chain is rods between joint spheres: exact capsules at any length, where a scaled capsule mesh
would stretch its caps.

The hand frame (``hand``) has its origin at the centre of the object's bounding box, z from the palm
towards the object, x from the wrist towards the fingers. Pure: functions take their Generator.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from discopose._errors import ConfigError
from discopose.geometry.transforms import cross3, invert_transform, make_transform, rotation_about_axis
from discopose.render.config import HandConfig

BODY_SHAPES = ("slab", "rod", "joint")
MAX_FINGERS = 5
# Points per capsule segment when checking clearance from the object. Between two checked points the
# distance to the box dips by at most half their spacing: under 0.5 mm on a 6 cm segment, 5% of a
# finger's radius.
_CHECK_POINTS = 64


def rotation_with_z(direction) -> np.ndarray:
    """A rotation whose z column is ``direction`` (normalised); the other two columns are arbitrary."""
    z = np.asarray(direction, float) / np.linalg.norm(direction)
    x = cross3([1.0, 0.0, 0.0] if abs(z[0]) < 0.9 else [0.0, 1.0, 0.0], z)
    x /= np.linalg.norm(x)
    return np.stack([x, cross3(z, x), z], axis=1)


def tilted_up(rng: np.random.Generator, max_tilt_deg: float) -> np.ndarray:
    """A unit vector uniform on the cap of directions within ``max_tilt_deg`` of world up (+z)."""
    cos_tilt = rng.uniform(np.cos(np.radians(max_tilt_deg)), 1.0)
    azimuth = rng.uniform(0, 2 * np.pi)
    sin_tilt = np.sqrt(max(0.0, 1 - cos_tilt ** 2))
    return np.array([sin_tilt * np.cos(azimuth), sin_tilt * np.sin(azimuth), cos_tilt])


def capsule_chain(points_m, radii_m, material: dict) -> list[dict]:
    """Items for capsules through ``points_m`` (N, 3, world): segment i has radius ``radii_m[i]``; each
    point gets a joint sphere as wide as its widest segment."""
    points = np.asarray(points_m, float)
    radii = np.asarray(radii_m, float)
    joint_radii = np.maximum(np.append(radii, radii[-1]), np.insert(radii, 0, radii[0]))
    items = [{"shape": "joint", "world_from_shape": make_transform(np.eye(3), point).tolist(),
              "scale_m": [2 * float(radius)] * 3, "material": material}
             for point, radius in zip(points, joint_radii)]
    for start, end, radius in zip(points[:-1], points[1:], radii):
        items.append({"shape": "rod",
                      "world_from_shape": make_transform(rotation_with_z(end - start), (start + end) / 2).tolist(),
                      "scale_m": [2 * float(radius), 2 * float(radius), float(np.linalg.norm(end - start))],
                      "material": material})
    return items


def box_corners(low, high) -> np.ndarray:
    """The 8 corners (8, 3) of the axis-aligned box [low, high]."""
    return np.array([[x, y, z] for x in (low[0], high[0]) for y in (low[1], high[1]) for z in (low[2], high[2])],
                    float)


def box_distance(points, low, high) -> np.ndarray:
    """Distance (m) from each point (N, 3) to the axis-aligned box [low, high]; 0 inside."""
    points = np.asarray(points, float)
    outside = np.maximum(np.maximum(np.asarray(low) - points, points - np.asarray(high)), 0.0)
    return np.linalg.norm(outside, axis=-1)


def polyline_points(points, count: int = _CHECK_POINTS) -> np.ndarray:
    """``count`` evenly spaced points on each segment of a polyline (N, 3), ends included."""
    points = np.asarray(points, float)
    t = np.linspace(0.0, 1.0, count)[:, None]
    return np.concatenate([(1 - t) * a + t * b for a, b in zip(points[:-1], points[1:])])


def surface_contact(direction, low, high, on_edge: bool) -> tuple[np.ndarray, np.ndarray]:
    """Where the ray from the box centre along ``direction`` leaves the box [low, high], and the outward
    unit normal there. ``on_edge`` moves the point to the nearest edge of that face; the normal is then
    the bisector of the two faces', so a sphere pushed out along it touches only the edge."""
    low, high = np.asarray(low, float), np.asarray(high, float)
    center, half = (low + high) / 2, np.maximum((high - low) / 2, 1e-9)
    direction = np.asarray(direction, float)
    ratios = np.abs(direction) / half
    order = np.argsort(ratios)
    point = center + direction / ratios[order[-1]]
    normal = np.zeros(3)
    normal[order[-1]] = np.sign(direction[order[-1]])
    if on_edge:
        second = order[-2]
        side = np.sign(direction[second]) or 1.0
        point[second] = center[second] + side * half[second]
        normal[second] = side
    return point, normal / np.linalg.norm(normal)


def load_joint_states(path: str) -> list[dict]:
    """Per-sample hand states from a simulator, one JSON object per line:
    ``{"fingertips_object_m": [[x, y, z], ...], "palm_object_m": [x, y, z]}``.

    ``fingertips_object_m``: 0 to 5 fingertip centres in the object frame (an empty list: no hand in that
    sample). ``palm_object_m`` (optional): the palm's centre in the object frame; the palm then faces the
    object from there. Returns ``[{"fingertips_object_m": (K, 3), "palm_object_m": (3,) or None}]``.
    """
    states = []
    try:
        lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
        for line in lines:
            row = json.loads(line)
            tips = np.array(row["fingertips_object_m"], float).reshape(-1, 3)
            palm = row.get("palm_object_m")
            palm = None if palm is None else np.array(palm, float).reshape(3)
            finite = np.isfinite(tips).all() and (palm is None or np.isfinite(palm).all())
            if len(tips) > MAX_FINGERS or not finite:
                raise ValueError(f"line {len(states) + 1} has {len(tips)} fingertips or non-finite numbers")
            states.append({"fingertips_object_m": tips, "palm_object_m": palm})
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise ConfigError(f"hand.joint_states_file={path!r} is malformed ({exc}); each line needs "
                          f"fingertips_object_m: a list of up to {MAX_FINGERS} [x, y, z]") from None
    if not states:
        raise ConfigError(f"hand.joint_states_file={path!r} holds no states; write one JSON object per sample")
    return states


def _hand_axes(rng: np.random.Generator, config: HandConfig, object_rotation: np.ndarray,
               tips_object: np.ndarray | None, palm_object: np.ndarray | None, center_object: np.ndarray) -> np.ndarray:
    """``world`` rotation of the hand frame: z from the palm towards the object, x towards the fingers."""
    if palm_object is not None:
        up = object_rotation @ (center_object - palm_object)
        up /= max(np.linalg.norm(up), 1e-12)
    else:
        up = tilted_up(rng, config.palm_tilt_deg)
    forward = rotation_with_z(up)[:, 0]
    if tips_object is not None and len(tips_object) and palm_object is not None:
        reach = object_rotation @ (tips_object.mean(0) - palm_object)
        reach -= (reach @ up) * up
        if np.linalg.norm(reach) > 1e-9:
            forward = reach / np.linalg.norm(reach)
    else:
        forward = rotation_about_axis(up, rng.uniform(0, 2 * np.pi)) @ forward
    return np.stack([forward, cross3(up, forward), up], axis=1)


def _contact_directions(rng: np.random.Generator, config: HandConfig, count: int) -> np.ndarray:
    """Directions (hand frame) from the object's centre to each fingertip: fingers fan over the far
    side (+x), a thumb (if any) reaches a side (+-y)."""
    thumb = count >= 2 and rng.random() < config.thumb_prob
    fingers = count - int(thumb)
    half_spread = np.radians(rng.uniform(8, 18)) * (fingers - 1)
    azimuths = np.linspace(-half_spread, half_spread, fingers) + np.radians(rng.normal(0, 4, fingers))
    if thumb:
        azimuths = np.append(azimuths, rng.choice([-1, 1]) * np.radians(rng.uniform(70, 160)))
    elevations = np.radians(rng.uniform(*config.contact_elevation_deg, len(azimuths)))
    return np.stack([np.cos(elevations) * np.cos(azimuths), np.cos(elevations) * np.sin(azimuths),
                     np.sin(elevations)], axis=1)


def _knuckle(palm_center: np.ndarray, palm_size: np.ndarray, tip: np.ndarray, radius: float) -> np.ndarray:
    """Where a finger leaves the palm (hand frame): on the rim of the palm's top, facing its tip."""
    toward = tip[:2] - palm_center[:2]
    toward = toward / np.linalg.norm(toward) if np.linalg.norm(toward) > 1e-9 else np.array([1.0, 0.0])
    reach = min(palm_size[0] / 2 / max(abs(toward[0]), 1e-9), palm_size[1] / 2 / max(abs(toward[1]), 1e-9))
    top = palm_center[2] + palm_size[2] / 2
    return np.array([*(palm_center[:2] + reach * toward), top - min(radius, palm_size[2] / 2)])


def _finger(rng: np.random.Generator, knuckle: np.ndarray, tip: np.ndarray, normal: np.ndarray, segments: int,
            radius: float, tip_length: float, clear_of) -> np.ndarray | None:
    """Joint positions (hand frame) from knuckle to tip centre, or None if no bend keeps the finger outside
    the object. The fingertip segment lies along the touched face towards the knuckle, lifted off it a
    little (a finger pad pressing a face); a middle segment bulges away from the object, as a curled
    finger does. ``clear_of(joints)`` tells whether the polyline stays ``radius`` clear of the object."""
    outward = np.array([*tip[:2], 0.0])
    outward = outward / np.linalg.norm(outward) if np.linalg.norm(outward) > 1e-9 else np.array([1.0, 0.0, 0.0])
    toward_knuckle = knuckle - tip
    along_face = toward_knuckle - (toward_knuckle @ normal) * normal
    along_face = along_face / np.linalg.norm(along_face) if np.linalg.norm(along_face) > 1e-9 else outward
    for attempt in range(4 if segments > 1 else 1):
        if segments == 1:
            joints = np.stack([knuckle, tip])
        else:
            # Each retry lifts the fingertip segment further off the face and moves the finger further out.
            bend = along_face + (rng.uniform(0.15, 0.6) + 0.5 * attempt) * normal
            distal = tip + tip_length * (bend / np.linalg.norm(bend) + 0.4 * attempt * outward)
            joints = [knuckle, distal, tip]
            if segments == 3:
                span = np.linalg.norm(distal - knuckle)
                joints.insert(1, (knuckle + distal) / 2 + rng.uniform(0.1, 0.25) * (1 + attempt) * span * outward)
            joints = np.stack(joints)
        if clear_of(joints):
            return joints
    return None


def sample_hand(rng: np.random.Generator, config: HandConfig, world_from_object: np.ndarray, bounds_m: np.ndarray,
                diameter_m: float, material: dict, state: dict | None = None) -> dict | None:
    """A hand holding the object whose bounding box (object frame) is ``bounds_m`` = [low, high].

    ``state`` (from :func:`load_joint_states`) fixes the fingertip centres and optionally the palm;
    otherwise they are sampled. Returns ``{"world_from_palm", "finger_radius_m", "fingertips_object_m",
    "parts"}``, or None when the state has no fingertips. Fingertip spheres touch the box (sampled grasps);
    fingers that would cut through it are left out.
    """
    low, high = np.asarray(bounds_m, float)
    center_object = (low + high) / 2
    world_from_object = np.asarray(world_from_object, float)
    tips_state = None if state is None else state["fingertips_object_m"]
    palm_state = None if state is None else state["palm_object_m"]
    if tips_state is not None and len(tips_state) == 0:
        return None
    scale = lambda frac: rng.uniform(*frac) * diameter_m  # noqa: E731
    radius = scale(config.finger_radius_frac)
    palm_size = np.array([scale(config.palm_length_frac), scale(config.palm_width_frac),
                          scale(config.palm_thickness_frac)])

    world_from_hand = make_transform(
        _hand_axes(rng, config, world_from_object[:3, :3], tips_state, palm_state, center_object),
        world_from_object[:3, :3] @ center_object + world_from_object[:3, 3])
    hand_from_object = invert_transform(world_from_hand) @ world_from_object
    to_hand = lambda p: np.asarray(p, float) @ hand_from_object[:3, :3].T + hand_from_object[:3, 3]  # noqa: E731
    to_object = lambda p: (np.asarray(p, float) - hand_from_object[:3, 3]) @ hand_from_object[:3, :3]  # noqa: E731

    if palm_state is not None:
        palm_center = to_hand(palm_state)
    else:
        palm_top = to_hand(box_corners(low, high))[:, 2].min() - scale(config.palm_gap_frac)
        # The object sits over the palm's distal half, where fingers can wrap it.
        palm_center = np.array([-rng.uniform(0.0, 0.25) * palm_size[0], 0.0, palm_top - palm_size[2] / 2])

    if tips_state is not None:
        tips = to_hand(tips_state)
        nearest = np.clip(tips_state, low, high)
        normals = np.where(np.linalg.norm(tips_state - nearest, axis=1, keepdims=True) > 1e-9,
                           tips_state - nearest, tips_state - center_object) @ hand_from_object[:3, :3].T
        normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    else:
        directions = _contact_directions(rng, config, int(rng.integers(config.finger_count[0],
                                                                       config.finger_count[1] + 1)))
        contacts = [surface_contact(d @ hand_from_object[:3, :3], low, high, rng.random() < config.edge_prob)
                    for d in directions]
        tips = to_hand([point + radius * normal for point, normal in contacts])
        normals = np.array([normal for _, normal in contacts]) @ hand_from_object[:3, :3].T

    def clear_of(joints: np.ndarray) -> bool:
        # Tolerance for the tip itself, which touches the box at exactly ``radius``.
        return box_distance(to_object(polyline_points(joints)), low, high).min() >= radius * (1 - 1e-6)

    fingers, kept_tips = [], []
    for tip, normal in zip(tips, normals):
        segments = int(rng.integers(config.segments_per_finger[0], config.segments_per_finger[1] + 1))
        joints = _finger(rng, _knuckle(palm_center, palm_size, tip, radius), tip, normal, segments, radius,
                         scale(config.fingertip_length_frac), clear_of if tips_state is None else lambda _: True)
        if joints is not None:
            fingers.append(joints)
            kept_tips.append(tip)

    world_from_palm = world_from_hand @ make_transform(np.eye(3), palm_center)
    parts = [{"shape": "slab", "world_from_shape": world_from_palm.tolist(), "scale_m": palm_size.tolist(),
              "material": material}]
    to_world = lambda p: np.asarray(p, float) @ world_from_hand[:3, :3].T + world_from_hand[:3, 3]  # noqa: E731
    for joints in fingers:
        parts += capsule_chain(to_world(joints), [radius] * (len(joints) - 1), material)
    forearm_length = rng.uniform(*config.forearm_length_m)
    if forearm_length > 0:
        forearm_radius = rng.uniform(0.25, 0.35) * palm_size[1]
        # Flush with the palm's top at most, so a wrist thicker than the palm stays clear of the object.
        wrist = palm_center + np.array([-palm_size[0] / 2, 0.0, palm_size[2] / 2 - forearm_radius])
        along = np.array([-1.0, 0.0, -rng.uniform(0.0, 0.5)])
        elbow = wrist + forearm_length * along / np.linalg.norm(along)
        parts += capsule_chain(to_world([wrist, elbow]), [forearm_radius], material)
    return {"world_from_palm": world_from_palm.tolist(), "finger_radius_m": float(radius),
            "fingertips_object_m": to_object(np.array(kept_tips).reshape(-1, 3)).tolist(), "parts": parts}
