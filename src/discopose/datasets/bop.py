"""BOP-format folders (https://github.com/thodan/bop_toolkit/blob/master/docs/bop_datasets_format.md).

Export: one BOP scene from a discopose dataset and one camera::

    out/000000/rgb/000000.png        (or .jpg)
    out/000000/scene_gt.json         {"0": [{"cam_R_m2c": 9 floats, "cam_t_m2c": 3 floats (mm), "obj_id": 1}]}
    out/000000/scene_camera.json     {"0": {"cam_K": 9 floats, "depth_scale": 1.0}}
    out/000000/scene_gt_info.json    {"0": [{"bbox_obj", "bbox_visib", "px_count_all", "px_count_visib", "visib_fract"}]}

Import: BOP scenes -> discopose shards (camera frame, one camera), so every tool reads them the same way.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from discopose._errors import DatasetError
from discopose._io import atomic_write_bytes, atomic_write_json
from discopose.datasets.format import FORMAT, FORMAT_VERSION, MANIFEST, sample_key, shard_name
from discopose.datasets.reader import iter_samples, open_dataset
from discopose.geometry.transforms import make_transform
from discopose.viz import encode_png


def _xywh(bbox):
    if bbox is None:
        return [-1, -1, -1, -1]
    x0, y0, x1, y1 = bbox
    return [x0, y0, x1 - x0 + 1, y1 - y0 + 1]


def export_bop(dataset: str, out: str | Path, camera: str | None = None, obj_id: int = 1) -> Path:
    """Write scene ``000000`` of a BOP folder from a discopose dataset's ``camera`` view."""
    info = open_dataset(dataset)
    camera = camera or info.camera_names[0]
    if camera not in info.camera_names:
        raise DatasetError(f"camera {camera!r} is not in {info.url} (cameras: {info.camera_names})")
    scene = Path(out) / "000000"
    scene_gt, scene_camera, scene_info = {}, {}, {}
    for sample in iter_samples(info):
        index = sample["labels"]["index"]
        labels = sample["labels"]["cameras"][camera]
        camera_from_object = np.asarray(labels["camera_from_object"])
        atomic_write_bytes(scene / "rgb" / f"{index:06d}.png", encode_png(sample["views"][camera]["rgb"]))
        scene_gt[str(index)] = [{"cam_R_m2c": camera_from_object[:3, :3].ravel().tolist(),
                                 "cam_t_m2c": (camera_from_object[:3, 3] * 1000).tolist(), "obj_id": obj_id}]
        scene_camera[str(index)] = {"cam_K": np.asarray(labels["K"]).ravel().tolist(), "depth_scale": 1.0}
        scene_info[str(index)] = [{"bbox_obj": _xywh(labels["bbox_xyxy"]), "bbox_visib": _xywh(labels["bbox_visible_xyxy"]),
                                   "px_count_all": labels["object_px"], "px_count_visib": labels["visible_px"],
                                   "visib_fract": labels["visible_fraction"]}]
    atomic_write_json(scene / "scene_gt.json", scene_gt)
    atomic_write_json(scene / "scene_camera.json", scene_camera)
    atomic_write_json(scene / "scene_gt_info.json", scene_info)
    return Path(out)


def bop_to_shards(bop_dir: str | Path, out: str | Path, camera_name: str, object_description: dict,
                  obj_id: int | None = None, samples_per_shard: int = 500) -> str:
    """Convert BOP scenes (every image showing ``obj_id``, default: the first id seen) into a
    discopose dataset at ``out`` with one camera named ``camera_name``."""
    import webdataset as wds

    bop_dir = Path(bop_dir)
    scenes = sorted(p for p in bop_dir.iterdir() if (p / "scene_gt.json").is_file()) if bop_dir.is_dir() else []
    if (bop_dir / "scene_gt.json").is_file():
        scenes = [bop_dir]
    if not scenes:
        raise DatasetError(f"{bop_dir} holds no BOP scene (a folder with scene_gt.json, scene_camera.json, rgb/)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    shards, writer, tmp, count, size = [], None, None, 0, None

    def close_shard():
        nonlocal writer
        if writer is not None:
            writer.close()
            name = shard_name(len(shards))
            tmp.replace(out / name)
            shards.append({"name": name, "first_index": count - shard_count[0], "num_samples": shard_count[0]})
            writer = None

    shard_count = [0]
    for scene in scenes:
        try:
            gt = json.loads((scene / "scene_gt.json").read_text())
            cams = json.loads((scene / "scene_camera.json").read_text())
            gt_info = json.loads((scene / "scene_gt_info.json").read_text()) if (scene / "scene_gt_info.json").is_file() else {}
        except (OSError, json.JSONDecodeError) as exc:
            raise DatasetError(f"{scene}: unreadable BOP annotations ({exc})") from None
        for image_id in sorted(gt, key=int):
            annotations = gt[image_id]
            if obj_id is None and annotations:
                obj_id = annotations[0]["obj_id"]
            matches = [i for i, a in enumerate(annotations) if a["obj_id"] == obj_id]
            if not matches:
                continue
            annotation = annotations[matches[0]]
            rgb_path = next((p for p in (scene / "rgb" / f"{int(image_id):06d}{ext}" for ext in (".png", ".jpg"))
                             if p.is_file()), None)
            if rgb_path is None:
                raise DatasetError(f"{scene}/rgb has no image for id {image_id}")
            data = rgb_path.read_bytes()
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            if image is None:
                raise DatasetError(f"{rgb_path} is not a readable image")
            size = image.shape[:2]
            camera_from_object = make_transform(np.asarray(annotation["cam_R_m2c"], float).reshape(3, 3),
                                                np.asarray(annotation["cam_t_m2c"], float) / 1000)
            K = np.asarray(cams[image_id]["cam_K"], float).reshape(3, 3)
            info = (gt_info.get(image_id) or [{}] * len(annotations))[matches[0]]
            labels = {"K": K.tolist(), "width_px": size[1], "height_px": size[0],
                      "world_from_camera": np.eye(4).tolist(), "camera_from_object": camera_from_object.tolist(),
                      "visible_fraction": float(info.get("visib_fract", 1.0))}
            sample = {"__key__": sample_key(count),
                      "json": json.dumps({"index": count, "seed": None, "world_from_object": camera_from_object.tolist(),
                                          "cameras": {camera_name: labels}, "params": {"bop": str(rgb_path)}}).encode(),
                      f"{camera_name}.rgb.{rgb_path.suffix[1:]}": data}
            if writer is None:
                tmp = out / f".{shard_name(len(shards))}.tmp"
                writer = wds.TarWriter(str(tmp), encoder=False, mtime=0)
                shard_count[0] = 0
            writer.write(sample)
            count += 1
            shard_count[0] += 1
            if shard_count[0] == samples_per_shard:
                close_shard()
    close_shard()
    if count == 0:
        raise DatasetError(f"{bop_dir}: no image shows object id {obj_id}")
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "discopose_version": "bop-import",
                "complete": True, "num_samples": count, "samples_per_shard": samples_per_shard, "seed": None,
                "object": object_description, "bop_obj_id": obj_id,
                "cameras": [{"name": camera_name, "width_px": size[1], "height_px": size[0]}],
                "config": None, "shards": shards, "source": str(bop_dir)}
    atomic_write_json(out / MANIFEST, manifest)
    return str(out)
