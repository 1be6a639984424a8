"""Live tracking: camera sources -> undistort/match intrinsics -> batched inference -> filter -> publish."""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from discopose._errors import DiscoposeError
from discopose.camera import CameraModel
from discopose.estimator.api import PoseEstimator
from discopose.estimator.filter import FilterConfig, PoseFilter
from discopose.estimator.publisher import PosePublisher
from discopose.estimator.sources import CameraSource
from discopose.geometry.symmetry import Symmetry
from discopose.geometry.transforms import invert_transform, make_transform, quat_wxyz_from_matrix
from discopose.viz import draw_pose

log = logging.getLogger(__name__)


@dataclass
class TrackConfig:
    publish: str | None = "tcp://127.0.0.1:5555"
    record: str | None = None          # JSON lines of every published message (+ raw measurement)
    record_video: str | None = None    # MP4 with wireframe, axes and uncertainty drawn
    show: bool = False
    tolerance_s: float = 0.030         # frames of different cameras within this are one group
    max_frames: int = 0                # 0 = until the sources end (or Ctrl-C)
    duration_s: float = 0.0
    status_every_s: float = 1.0
    missing_camera_sigma_scale: float = 3.0
    filter: FilterConfig = field(default_factory=FilterConfig)


class CameraAdapter:
    """Maps live frames onto the image the model was trained on: undistortion plus a change of
    intrinsics to the model's nominal camera, in one ``cv2.remap``."""

    def __init__(self, name: str, model_camera: CameraModel, calibration: CameraModel | None):
        self.name = name
        self.model_camera = model_camera
        self.calibration = calibration
        self.maps = None
        self.warned = False

    def __call__(self, image: np.ndarray) -> np.ndarray:
        target = self.model_camera
        height, width = image.shape[:2]
        if self.calibration is not None:
            live = self.calibration
            if (width, height) != (live.width_px, live.height_px):
                live = live.scaled_to(width, height)
            if self.maps is None:
                self._check(live)
                self.maps = cv2.initUndistortRectifyMap(live.K, live.dist_coeffs, None, target.K,
                                                        (target.width_px, target.height_px), cv2.CV_16SC2)
            return cv2.remap(image, *self.maps, cv2.INTER_LINEAR)
        if not self.warned and (width, height) != (target.width_px, target.height_px):
            aspect_live, aspect_model = width / height, target.width_px / target.height_px
            log.warning("camera %s: %dx%d frames without a calibration; the model was trained on %dx%d%s. "
                        "Pass --calib %s=FILE for an exact match.", self.name, width, height, target.width_px,
                        target.height_px, " (different aspect ratio!)" if abs(aspect_live / aspect_model - 1) > 0.01 else "",
                        self.name)
            self.warned = True
        return image if (width, height) == (target.width_px, target.height_px) else \
            cv2.resize(image, (target.width_px, target.height_px), interpolation=cv2.INTER_AREA)

    def _check(self, live: CameraModel) -> None:
        target = self.model_camera
        fov = lambda cam: 2 * np.degrees(np.arctan(cam.width_px / (2 * cam.K[0, 0])))  # noqa: E731
        if abs(fov(live) / fov(target) - 1) > 0.1:
            log.warning("camera %s: horizontal field of view %.1f deg differs from the model's %.1f deg by more "
                        "than 10%%; the image is remapped, but parts may be cropped or empty", self.name,
                        fov(live), fov(target))


def _ellipse(image, K, camera_from_object, covariance_position, color):
    """The 2-sigma image ellipse of the position covariance (camera frame), by first-order propagation."""
    position = camera_from_object[:3, 3]
    if position[2] <= 0:
        return
    x, y, z = position
    jacobian = np.array([[K[0, 0] / z, 0, -K[0, 0] * x / z ** 2], [0, K[1, 1] / z, -K[1, 1] * y / z ** 2]])
    cov_uv = jacobian @ covariance_position @ jacobian.T
    values, vectors = np.linalg.eigh(cov_uv)
    values = np.clip(values, 1e-6, None)
    angle = np.degrees(np.arctan2(vectors[1, 1], vectors[0, 1]))
    centre = (int(K[0, 0] * x / z + K[0, 2]), int(K[1, 1] * y / z + K[1, 2]))
    axes = (int(min(2 * np.sqrt(values[1]), 1e4)), int(min(2 * np.sqrt(values[0]), 1e4)))
    cv2.ellipse(image, centre, axes, angle, 0, 360, color, 1, cv2.LINE_AA)


class Tracker:
    def __init__(self, estimator: PoseEstimator, sources: dict[str, CameraSource],
                 calibrations: dict[str, CameraModel] | None = None, config: TrackConfig | None = None):
        self.estimator = estimator
        self.config = config or TrackConfig()
        unknown = set(sources) - set(estimator.camera_names)
        if unknown:
            raise DiscoposeError(f"cameras {sorted(unknown)} are not known to the model; it expects "
                                 f"{estimator.camera_names} (name sources accordingly: --camera NAME=URI)")
        missing = [n for n in estimator.camera_names if n not in sources]
        if len(missing) == len(estimator.camera_names):
            raise DiscoposeError(f"no camera source given; the model expects {estimator.camera_names}")
        if missing:
            log.warning("no source for cameras %s: tracking with the others (less accurate)", missing)
        self.sources = sources
        self.model_cameras = {c["name"]: CameraModel.from_dict(c) for c in estimator.meta["cameras"]}
        calibrations = calibrations or {}
        self.adapters = {name: CameraAdapter(name, self.model_cameras[name], calibrations.get(name))
                         for name in sources}
        symmetry = Symmetry.from_dict(estimator.meta["object"]["symmetry"])
        self.filter = PoseFilter(self.config.filter, symmetry.matrices())
        self.keypoints = np.asarray(estimator.meta["object"]["keypoints_m"])
        self.publisher = PosePublisher(self.config.publish) if self.config.publish else None
        self.latencies: list[float] = []
        self.publish_times: list[float] = []
        self.messages = 0
        self._last_index = {name: -1 for name in sources}
        self._record = None
        self._video = None
        self._video_tmp = None

    # ------------------------------------------------------------------------------------- one step
    def _grab(self) -> dict | None:
        primary = next(iter(self.sources))
        frames = {}
        lockstep = any(s.mode == "lockstep" for s in self.sources.values())
        for name, source in self.sources.items():
            wait = 1.0 if (lockstep or name == primary) else 0.0
            frame = source.latest(wait_s=wait, newer_than=self._last_index[name] if lockstep or name == primary else -1)
            if frame is not None:
                frames[name] = frame
        if primary not in frames:
            return None
        reference = max(f.capture_time_s for f in frames.values())
        return {n: f for n, f in frames.items() if reference - f.capture_time_s <= self.config.tolerance_s}

    def step(self) -> dict | None:
        frames = self._grab()
        if not frames:
            return None
        for name, frame in frames.items():
            self._last_index[name] = frame.index
        height, width = self.estimator.input_size_px
        images, status = {}, {}
        for name in self.estimator.camera_names:
            source = self.sources.get(name)
            if name in frames:
                images[name] = self.adapters[name](frames[name].image_rgb)
                status[name] = {"state": "ok", "age_s": time.monotonic() - frames[name].capture_time_s}
            else:
                # The network needs every camera: a missing view becomes black and the pose less certain.
                images[name] = np.zeros((height, width, 3), np.uint8)
                status[name] = {"state": "missing" if source is None else
                                ("stale" if source.state == "ok" else source.state), "age_s": None}
        capture_time = min(f.capture_time_s for f in frames.values())
        raw = self.estimator.infer(self.estimator.preprocess(images))
        position_sigma = np.exp(0.5 * raw["position_log_var"][0])
        rotation_sigma = float(np.exp(0.5 * raw["rotation_log_var"][0]))
        if len(frames) < len(self.estimator.camera_names):
            position_sigma = position_sigma * self.config.missing_camera_sigma_scale
            rotation_sigma *= self.config.missing_camera_sigma_scale
        raw_position, raw_rotation = raw["position_m"][0].astype(float), raw["rotation"][0].astype(float)
        out = self.filter.update(capture_time, raw_position, raw_rotation, position_sigma, rotation_sigma)
        message = {
            "capture_time_s": capture_time, "frame": self.estimator.frame,
            "position_m": out.position_m.tolist(), "quat_wxyz": quat_wxyz_from_matrix(out.rotation).tolist(),
            "velocity_m_s": out.velocity_m_s.tolist(), "angular_velocity_rad_s": out.angular_velocity_rad_s.tolist(),
            "covariance": out.covariance.tolist(), "measurement_age_s": max(capture_time - out.measurement_time_s, 0.0),
            "accepted": bool(out.accepted), "cameras": status,
        }
        if self.publisher is not None:
            message = self.publisher.publish(message)
        else:
            message.update(schema="discopose.pose/1", seq=self.messages, publish_time_s=time.monotonic())
            message["latency_s"] = message["publish_time_s"] - capture_time
        self.messages += 1
        self.latencies.append(message["latency_s"])
        self.publish_times.append(message["publish_time_s"])
        if self._record is not None:
            record = {**message, "frame_index": {n: f.index for n, f in frames.items()},
                      "raw_position_m": raw_position.tolist(), "raw_quat_wxyz": quat_wxyz_from_matrix(raw_rotation).tolist(),
                      "raw_position_sigma_m": position_sigma.tolist(), "raw_rotation_sigma_rad": rotation_sigma}
            self._record.write(json.dumps(record) + "\n")
        if self._video is not None or self.config.show:
            self._draw(images, out, raw_position, raw_rotation)
        return message

    def _camera_from_object(self, name: str, frame_from_object: np.ndarray) -> np.ndarray:
        if self.estimator.frame == "world":
            return invert_transform(self.model_cameras[name].world_from_camera) @ frame_from_object
        return frame_from_object

    def _draw(self, images: dict, out, raw_position, raw_rotation) -> None:
        name = self.estimator.camera_names[0]
        canvas = images[name].copy()
        K = self.model_cameras[name].K
        raw_pose = self._camera_from_object(name, make_transform(raw_rotation, raw_position))
        filtered = self._camera_from_object(name, make_transform(out.rotation, out.position_m))
        draw_pose(canvas, K, raw_pose, self.keypoints, color=(255, 80, 80), axes=False)
        draw_pose(canvas, K, filtered, self.keypoints, color=(0, 255, 0), axes=True)
        covariance = out.covariance[:3, :3]
        if self.estimator.frame == "world":
            rotation = invert_transform(self.model_cameras[name].world_from_camera)[:3, :3]
            covariance = rotation @ covariance @ rotation.T
        _ellipse(canvas, K, filtered, covariance, (255, 255, 0))
        bgr = cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR)
        if self._video is not None:
            self._video.write(bgr)
        if self.config.show:
            cv2.imshow("discopose track", bgr)
            cv2.waitKey(1)

    # --------------------------------------------------------------------------------------- run loop
    def stats(self) -> dict:
        latencies = np.array(self.latencies) * 1000
        times = np.array(self.publish_times)
        hz = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
        return {"messages": self.messages, "hz": float(hz),
                "latency_ms_p50": float(np.percentile(latencies, 50)) if len(latencies) else None,
                "latency_ms_p99": float(np.percentile(latencies, 99)) if len(latencies) else None,
                "cameras": {n: {"state": s.state, "frames_read": s.frames_read, "reconnects": s.reconnects}
                            for n, s in self.sources.items()}}

    def status_line(self) -> str:
        s = self.stats()
        cams = " ".join(f"{n}:{c['state']}" for n, c in s["cameras"].items())
        p50 = s["latency_ms_p50"] or 0
        p99 = s["latency_ms_p99"] or 0
        return f"{s['hz']:.1f} Hz | latency p50 {p50:.0f} ms p99 {p99:.0f} ms | {cams} | {s['messages']} poses"

    def run(self) -> dict:
        config = self.config
        if config.record:
            Path(config.record).parent.mkdir(parents=True, exist_ok=True)
            self._record = open(config.record, "w")
        if config.record_video:
            height, width = self.model_cameras[self.estimator.camera_names[0]].height_px, \
                self.model_cameras[self.estimator.camera_names[0]].width_px
            self._video_tmp = str(Path(config.record_video).with_name(f".{Path(config.record_video).name}.tmp.mp4"))
            self._video = cv2.VideoWriter(self._video_tmp, cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (width, height))
        started = last_status = time.monotonic()
        try:
            while True:
                if all(s.ended for s in self.sources.values()):
                    break
                if config.max_frames and self.messages >= config.max_frames:
                    break
                if config.duration_s and time.monotonic() - started > config.duration_s:
                    break
                self.step()
                if time.monotonic() - last_status >= config.status_every_s:
                    log.info(self.status_line())
                    last_status = time.monotonic()
        finally:
            self.close()
        return self.stats()

    def close(self) -> None:
        for source in self.sources.values():
            source.close()
        if self.publisher is not None:
            self.publisher.close()
        if self._record is not None:
            self._record.close()
            self._record = None
        if self._video is not None:
            self._video.release()
            os.replace(self._video_tmp, self.config.record_video)
            self._video = None
