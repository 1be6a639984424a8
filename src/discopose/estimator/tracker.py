"""Live tracking: camera sources -> estimator (each frame with its camera) -> fusion -> filter -> publish."""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from discopose._errors import DiscoposeError
from discopose._io import output_file
from discopose.camera import CameraModel
from discopose.config import check_range
from discopose.estimator.api import Pose, PoseEstimator
from discopose.estimator.filter import FilterConfig, PoseFilter
from discopose.estimator.publisher import SCHEMA, PosePublisher
from discopose.estimator.sources import CameraSource
from discopose.estimator.worker import BackgroundJob
from discopose.geometry.symmetry import Symmetry, closest_equivalent
from discopose.geometry.transforms import invert_transform, make_transform, quat_wxyz_from_matrix
from discopose.viz import draw_pose

log = logging.getLogger(__name__)


@dataclass
class TrackConfig:
    publish: str | None = "tcp://127.0.0.1:5555"
    record: str | None = None          # JSON lines of every published message (+ raw measurement)
    record_video: str | None = None    # MP4 with wireframe, axes and uncertainty drawn
    view: str | None = None            # Rerun: "spawn" opens a viewer, a .rrd path records (estimator/viewer.py)
    show: bool = False
    tolerance_s: float = 0.030         # frames of different cameras within this are one group
    max_frames: int = 0                # 0 = until the sources end (or Ctrl-C)
    duration_s: float = 0.0
    status_every_s: float = 1.0
    # Opt-in fast path: while the filter is sure where the object is, aim the crops at its prediction and
    # skip the locator (two network passes instead of three); a rejected measurement returns to the full
    # pipeline. Off by default: with a weak model the estimate can follow its own drift (tests).
    reuse_track: bool = False
    reuse_track_max_age_s: float = 0.2
    reuse_track_max_sigma_m: float = 0.01
    # The classical tracker, where the estimator refines (and was calibrated with it): each frame the mesh is
    # aligned from the last valid pose alone, without the networks, while that pose is at most follow_max_age_s
    # old; the networks run again when the alignment's score drops below the estimator's gate, when the track is
    # lost, and every redetect_every frames (a followed track keeps its face: the networks catch a wrong one).
    follow: bool = True
    follow_max_age_s: float = 0.2
    redetect_every: int = 10
    # Several cameras with the refinement: a networks frame publishes the networks' fused pose as pending (invalid,
    # so the filter predicts through it) and the next frame aligns it jointly to that frame's images, so that no
    # frame carries both the networks and the joint alignment (three 640x480 cameras on 2 cores, measured with
    # benchmarks/frame_time.py: ~40 ms and ~50 ms, against 65-83 ms with both in one frame).
    split_networks_frames: bool = True
    # Live cameras (not clips played in lockstep), following on: the networks run on a worker thread while the frame
    # loop follows, so no frame waits for them (three 640x480 cameras on 2 cores: latency p99 24 ms against 36-44
    # with the networks in the frame; benchmarks/track_soak.py --networks background frame). Their pose starts the
    # track when it is lost and replaces it when the two disagree by more than redetect_max_deg (up to symmetry) or
    # redetect_max_diameters object diameters; several cameras' fused pose is first aligned jointly on the frame
    # loop (the step "aligning"). Frames while a lost track waits for them publish the filter's prediction (an
    # invalid measurement). A replayed clip keeps the networks in the frame: every run measures the same frames.
    networks_in_background: bool = True
    redetect_max_deg: float = 10.0
    redetect_max_diameters: float = 0.2
    # A published pose is valid while its last valid, accepted measurement is at most this old.
    valid_max_age_s: float = 0.25
    filter: FilterConfig = field(default_factory=FilterConfig)

    def __post_init__(self):
        check_range("max_frames", self.max_frames, 0)
        check_range("duration_s", self.duration_s, 0.0)
        check_range("tolerance_s", self.tolerance_s, 0.0)
        check_range("valid_max_age_s", self.valid_max_age_s, 0.0)
        check_range("follow_max_age_s", self.follow_max_age_s, 0.0)
        check_range("redetect_every", self.redetect_every, 1)
        check_range("redetect_max_deg", self.redetect_max_deg, 0.0)
        check_range("redetect_max_diameters", self.redetect_max_diameters, 0.0)


# What measured a frame: the networks; the joint alignment of the last frame's fused networks pose (several cameras,
# TrackConfig.split_networks_frames); following the last pose (TrackConfig.follow); or nothing yet, a lost track
# waiting for the networks on their worker thread (TrackConfig.networks_in_background).
STEPS = ("networks", "aligning", "following", "waiting")


@dataclass(frozen=True)
class HeldPose:
    """A pose the tracker carries into the next frame: captured at ``capture_time_s`` by ``cameras``."""

    capture_time_s: float
    pose: Pose
    cameras: list[str]


class RecentLatencies:
    """The last ``capacity`` latencies in a ring allocated (and written, so resident) up front: a tracker that runs
    for hours keeps constant memory, where a list of every message's latency grew ~7 MB an hour at 30 Hz."""

    def __init__(self, capacity: int = 18_000):  # 10 minutes at 30 Hz
        self._values = np.full(capacity, np.nan)
        self.count = 0

    def add(self, latency_s: float) -> None:
        self._values[self.count % len(self._values)] = latency_s
        self.count += 1

    def percentile_ms(self, q: float) -> float | None:
        recent = self._values[:min(self.count, len(self._values))]
        return float(np.percentile(recent, q) * 1000) if len(recent) else None


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
    """Grabs synchronized frames, estimates the pose (one camera: its frame; several: the world frame,
    fused with their calibrated extrinsics), filters it over time and publishes it."""

    def __init__(self, estimator: PoseEstimator, sources: dict[str, CameraSource],
                 calibrations: dict[str, CameraModel] | None = None, config: TrackConfig | None = None,
                 assume_nominal: bool = False):
        self.estimator = estimator
        self.config = config or TrackConfig()
        if not sources:
            raise DiscoposeError("no camera source given; pass --camera NAME=SOURCE")
        calibrations = calibrations or {}
        unknown = sorted(set(calibrations) - set(sources))
        if unknown:
            raise DiscoposeError(f"--calib for cameras {unknown} that have no --camera source (sources: "
                                 f"{sorted(sources)}); name them the same")
        self.world_frame = len(sources) > 1
        if self.world_frame:
            uncalibrated = [n for n in sources if n not in calibrations or calibrations[n].world_from_camera is None]
            if uncalibrated:
                raise DiscoposeError(f"cameras {uncalibrated} need --calib NAME=FILE with extrinsics to be fused "
                                     "(run `discopose calibrate intrinsics` and `... extrinsics`)")
        self.sources = sources
        self.calibrations = calibrations
        self.assume_nominal = assume_nominal
        self.frame = "world" if self.world_frame else f"camera:{next(iter(sources))}"
        self.symmetries = Symmetry.from_dict(estimator.object["symmetry"]).matrices()
        self.filter = PoseFilter(self.config.filter, self.symmetries)
        self.keypoints = np.asarray(estimator.object["keypoints_m"])
        for path in (self.config.record, self.config.record_video):
            if path:
                output_file(path)  # a bad output path fails now, not after the run
        self.publisher = PosePublisher(self.config.publish) if self.config.publish else None
        self.latencies = RecentLatencies()
        self._first_publish_s = self._last_publish_s = None  # for the rate over the run
        self.messages = 0
        self._last_accepted = False
        self._confidence = 0.0
        self._last_index = {name: -1 for name in sources}
        self._follow_from: HeldPose | None = None  # the last valid measurement: the next frame follows from it
        self._pending: HeldPose | None = None  # a fused networks pose whose joint alignment is the next frame's
        self._since_networks = 0
        self._last_pose: Pose | None = None  # the latest frame's measurement (a waiting frame repeats it, invalid)
        # TrackConfig.networks_in_background: the worker, started with the first frame that submits to it.
        self.background = (self.config.networks_in_background and self.config.follow and estimator.refines
                           and all(s.mode != "lockstep" for s in sources.values()))
        self._networks: BackgroundJob | None = None
        self.reseeded = 0  # background networks poses that replaced a track they disagreed with
        self.steps = dict.fromkeys(STEPS, 0)  # frames by the step (STEPS) that measured them
        self.last_step = None  # the latest frame's
        self._record = None
        self._video = None
        self._video_tmp = None
        self._view = None

    # ------------------------------------------------------------------------------------- one step
    def _grab(self) -> dict | None:
        # Pace on the first camera delivering, never on one that is gone: with none to wait for, the loop would spin
        # and take whatever had arrived, each group short of a different camera.
        primary = next((n for n, s in self.sources.items() if s.state == "ok"), next(iter(self.sources)))
        frames = {}
        lockstep = any(s.mode == "lockstep" for s in self.sources.values())
        moment_s = None  # the first frame's capture time: the group's moment
        for name, source in self.sources.items():
            # Only frames not yet processed: a camera that stopped delivering (unplugged, reconnecting) is left
            # out of the group and reported by its state, never estimated again from its last frame.
            newer_than = self._last_index[name]
            if lockstep or name == primary:
                frame = source.latest(wait_s=1.0, newer_than=newer_than)
            elif moment_s is not None and source.state == "ok":
                frame = self._frame_near(source, newer_than, moment_s)
            else:
                frame = source.latest(wait_s=0.0, newer_than=newer_than)
            if frame is not None:
                frames[name] = frame
                if moment_s is None:
                    moment_s = frame.capture_time_s
        if not frames:
            return None
        reference = max(f.capture_time_s for f in frames.values())
        return {n: f for n, f in frames.items() if reference - f.capture_time_s <= self.config.tolerance_s}

    def _frame_near(self, source: CameraSource, newer_than: int, moment_s: float):
        """A live camera's frame of the moment ``moment_s``: its newest if that was captured at most half the
        grouping tolerance before, else the next one, waited for up to the tolerance after the moment. Live cameras'
        frames of one moment come out of their decoders milliseconds apart: taking only what had arrived left a
        quarter of three cameras' groups short a camera (benchmarks/track_soak.py), or holding one camera's frame of
        the moment before, a frame behind the others from then on."""
        tolerance_s = self.config.tolerance_s
        frame = source.latest(wait_s=0.0, newer_than=newer_than)
        if frame is None or frame.capture_time_s < moment_s - tolerance_s / 2:
            wait_s = max(moment_s + tolerance_s - time.monotonic(), 0.0)
            frame = source.latest(wait_s=wait_s, newer_than=newer_than if frame is None else frame.index) or frame
        return frame

    def _priors(self, capture_time_s: float, cameras: list[CameraModel]) -> list | None:
        """Where the filter expects the object in each camera, when it is sure enough to skip the locator:
        its last measurement was accepted and recent, and its position sigma is small next to the crop."""
        f, config = self.filter, self.config
        if not (config.reuse_track and f.initialized and self._last_accepted and
                capture_time_s - f.last_measurement_s < config.reuse_track_max_age_s and
                np.sqrt(np.trace(f.P_pos[:3, :3])) < config.reuse_track_max_sigma_m):
            return None
        position = f.predicted_position(capture_time_s)
        priors = []
        for camera in cameras:
            camera_from_frame = self._camera_from_frame(camera)
            priors.append(camera_from_frame[:3, :3] @ position + camera_from_frame[:3, 3])
        return priors

    def _follow(self, pairs: list, names: list[str], capture_time_s: float):
        """The mesh aligned from the last valid pose (TrackConfig.follow), or None: run the networks."""
        config, last = self.config, self._follow_from
        if not (config.follow and self.estimator.refines and last is not None
                and capture_time_s - last.capture_time_s <= config.follow_max_age_s
                and (self.background or self._since_networks + 1 < config.redetect_every)):
            return None
        if self.world_frame and set(names) != set(last.cameras if self.background else self.sources):
            # A camera missing (or back): the networks' fusion states what these cameras support. In the
            # background the track then goes on with the cameras the networks measured it with.
            return None
        pose = self.estimator.follow(pairs, last.pose.frame_from_object, names, world=self.world_frame)
        if pose is not None and len(names) < len(self.sources):
            # Fewer cameras than the rig: at least the uncertainty fusion stated for them (the followed sigmas are
            # calibrated on the whole rig's joint alignment).
            pose = replace(pose, rotation_sigma_deg=max(pose.rotation_sigma_deg, last.pose.rotation_sigma_deg),
                           position_covariance_m2=np.maximum(pose.position_covariance_m2,
                                                             last.pose.position_covariance_m2))
        return pose

    def _networks_pose(self, pairs: list, views: list[str], priors: list | None, align: bool = True) -> Pose:
        """The networks' pose of one group: one camera refined on its image; several fused and, with ``align``,
        aligned jointly. The background job leaves the joint alignment to the frame loop (``align=False``): it is
        the same work as following, and run beside it, its Python holds the interpreter against the loop's."""
        if not self.world_frame:
            return self.estimator.predict_views(pairs, priors)[0]
        # Beside the frame loop, the networks keep to one thread: the loop needs the other core.
        poses = self.estimator.predict_views(pairs, priors, refine=False, view_threads=1 if self.background else None)
        return self.estimator.fuse_views(poses, pairs, views, align=align)

    def _adopt(self, done: tuple | None, capture_time_s: float) -> None:
        """The background networks' pose (``done``: ``((its frame's capture time, cameras, the track's pose on that
        frame or None), pose)``) starts the track when it is lost, or replaces it when the two disagree. Several
        cameras: their fused pose is aligned on this frame first (the step ``aligning``)."""
        if done is None:
            return
        (job_time_s, views, reference), pose = done
        if capture_time_s - job_time_s > self.config.follow_max_age_s:
            return
        current = self._follow_from
        tracking = current is not None and current.cameras == views
        # A lost track tries even an invalid fused pose: the joint alignment can make it valid (Estimator.align_fused).
        if not pose.valid and (tracking or not self.world_frame):
            return
        if tracking:
            if reference is None or not self._disagree(reference, pose):
                return
            self.reseeded += 1
        if self.world_frame:
            self._pending = HeldPose(job_time_s, pose, views)
        else:
            self._follow_from = HeldPose(job_time_s, pose, views)

    def _disagree(self, track: Pose, networks: Pose) -> bool:
        config = self.config
        _, angle_deg = closest_equivalent(track.rotation, networks.rotation, self.symmetries)
        shift_m = float(np.linalg.norm(track.position_m - networks.position_m))
        diameter_m = self.estimator.refine_model.diameter_m
        return angle_deg > config.redetect_max_deg or shift_m > config.redetect_max_diameters * diameter_m

    def _camera(self, name: str, image: np.ndarray) -> CameraModel:
        return self.estimator.camera_for(image, self.calibrations.get(name), self.assume_nominal, name=name)

    def step(self) -> dict | None:
        frames = self._grab()
        if not frames:
            return None
        for name, frame in frames.items():
            self._last_index[name] = frame.index
        status = {}
        for name, source in self.sources.items():
            if name in frames:
                status[name] = {"state": "ok", "age_s": time.monotonic() - frames[name].capture_time_s}
            else:
                status[name] = {"state": "stale" if source.state == "ok" else source.state, "age_s": None}
        capture_time = min(f.capture_time_s for f in frames.values())
        images = {name: frame.image_rgb for name, frame in frames.items()}
        cameras = {name: self._camera(name, image) for name, image in images.items()}
        views = list(images)
        pairs = [(images[n], cameras[n]) for n in views]
        config = self.config
        if self._networks is not None:
            self._adopt(self._networks.take(), capture_time)
        pending, self._pending = self._pending, None
        # The last frame's fused networks pose, aligned to this frame's images by the same cameras.
        if (pending is not None and pending.cameras == views
                and capture_time - pending.capture_time_s <= config.follow_max_age_s):
            pose, kind = self.estimator.align_fused(pending.pose, pairs), "aligning"
            self._since_networks += 1
            if not pose.valid and self.background and (followed := self._follow(pairs, views, capture_time)):
                pose, kind = followed, "following"  # the networks' pose did not align: the track goes on
        elif (pose := self._follow(pairs, views, capture_time)) is not None:
            kind = "following"
            self._since_networks += 1
        elif self.background and self._last_pose is not None:
            # Lost: the filter predicts (or, before it has a pose, the last estimate is repeated, invalid) until the
            # networks, on their worker thread, find the object again. Only the first frame waits for them.
            kind = "waiting"
            pose = replace(self._last_pose, valid=False, confidence=0.0, extra={"waiting": True})
        else:
            kind = "networks"
            self._since_networks = 0
            priors = self._priors(capture_time, [cameras[n] for n in views])
            if (self.world_frame and self.estimator.refines and config.split_networks_frames
                    and not self.background):
                # Several cameras: the cameras that delivered, fused (the lost ones are left out and the stated
                # covariance grows accordingly), then aligned jointly on the next frame.
                poses = self.estimator.predict_views(pairs, priors, refine=False)
                fused = self.estimator.fuse_views(poses, pairs, views, align=False)
                self._pending = HeldPose(capture_time, fused, views)
                pose = replace(fused, valid=False, extra={**fused.extra, "alignment_pending": True})
            else:
                pose = self._networks_pose(pairs, views, priors)
        if self.background and kind != "networks" and (kind == "waiting" or
                                                       self._since_networks >= config.redetect_every - 1):
            if self._networks is None:
                self._networks = BackgroundJob(partial(self._networks_pose, align=False), name="discopose-networks")
            reference = pose if kind == "following" else None
            priors = self._priors(capture_time, [cameras[n] for n in views])
            if self._networks.submit((capture_time, views, reference), pairs, views, priors):
                self._since_networks = 0
        self._last_pose = pose
        self.steps[kind] += 1
        self.last_step = kind
        self._follow_from = HeldPose(capture_time, pose, views) if pose.valid else None
        raw_position, raw_rotation = pose.position_m.astype(float), pose.rotation.astype(float)
        position_sigma = pose.position_sigma_m
        rotation_sigma = float(np.radians(pose.rotation_sigma_deg))
        # An invalid measurement is no measurement: the filter only predicts through it.
        if pose.valid:
            out = self.filter.update(capture_time, raw_position, raw_rotation, position_sigma, rotation_sigma)
            if out.accepted:
                self._confidence = pose.confidence
        elif self.filter.initialized:
            self.filter.predict(capture_time)
            out = self.filter.output(accepted=False)
        else:
            out = None
        self._last_accepted = out is not None and out.accepted
        message = {"capture_time_s": capture_time, "frame": self.frame, "cameras": status,
                   "measurement_valid": bool(pose.valid), "measurement_confidence": float(pose.confidence),
                   "accepted": self._last_accepted}
        if out is None:
            # Nothing trustworthy yet: the raw estimate, marked invalid, with its own covariance.
            covariance = np.zeros((6, 6))
            covariance[:3, :3] = pose.position_covariance_m2
            covariance[3:, 3:] = np.eye(3) * rotation_sigma ** 2
            message.update(position_m=raw_position.tolist(), quat_wxyz=quat_wxyz_from_matrix(raw_rotation).tolist(),
                           velocity_m_s=[0.0] * 3, angular_velocity_rad_s=[0.0] * 3, covariance=covariance.tolist(),
                           measurement_age_s=None, valid=False, confidence=float(pose.confidence))
        else:
            age = max(capture_time - out.measurement_time_s, 0.0)
            message.update(position_m=out.position_m.tolist(), quat_wxyz=quat_wxyz_from_matrix(out.rotation).tolist(),
                           velocity_m_s=out.velocity_m_s.tolist(),
                           angular_velocity_rad_s=out.angular_velocity_rad_s.tolist(),
                           covariance=out.covariance.tolist(), measurement_age_s=age,
                           # The filtered pose is as good as its last valid measurement, while it is recent.
                           valid=age <= self.config.valid_max_age_s, confidence=self._confidence)
        if self.publisher is not None:
            message = self.publisher.publish(message)
        else:
            message.update(schema=SCHEMA, seq=self.messages, publish_time_s=time.monotonic())
            message["latency_s"] = message["publish_time_s"] - capture_time
        self.messages += 1
        self.latencies.add(message["latency_s"])
        if self._first_publish_s is None:
            self._first_publish_s = message["publish_time_s"]
        self._last_publish_s = message["publish_time_s"]
        if self._record is not None:
            record = {**message, "frame_index": {n: f.index for n, f in frames.items()},
                      "raw_position_m": raw_position.tolist(), "raw_quat_wxyz": quat_wxyz_from_matrix(raw_rotation).tolist(),
                      "raw_position_sigma_m": position_sigma.tolist(), "raw_rotation_sigma_rad": rotation_sigma,
                      "raw_valid": bool(pose.valid), "raw_confidence": float(pose.confidence),
                      "followed": bool(pose.extra.get("followed", False)), "step": kind,
                      "alignment_pending": bool(pose.extra.get("alignment_pending", False))}
            self._record.write(json.dumps(record) + "\n")
        if self._view is not None:
            self._view.log(message, images, cameras, {n: invert_transform(self._camera_from_frame(c))
                                                      for n, c in cameras.items()}, raw_position)
        if self._video is not None or self.config.show:
            first = next(iter(self.sources))
            if first in images:
                self._draw(images[first], cameras[first], out, raw_position, raw_rotation, pose.valid, pose.confidence)
        return message

    def _camera_from_frame(self, camera: CameraModel) -> np.ndarray:
        return invert_transform(camera.world_from_camera) if self.world_frame else np.eye(4)

    def _draw(self, image: np.ndarray, camera: CameraModel, out, raw_position, raw_rotation, valid: bool,
              confidence: float) -> None:
        canvas = image.copy()
        camera_from_frame = self._camera_from_frame(camera)
        raw_pose = camera_from_frame @ make_transform(raw_rotation, raw_position)
        # Raw estimate: red when valid, grey when the estimator does not trust it.
        draw_pose(canvas, camera.K, raw_pose, self.keypoints, color=(255, 80, 80) if valid else (150, 150, 150),
                  axes=False)
        if out is not None:
            filtered = camera_from_frame @ make_transform(out.rotation, out.position_m)
            draw_pose(canvas, camera.K, filtered, self.keypoints, color=(0, 255, 0), axes=True)
            rotation = camera_from_frame[:3, :3]
            _ellipse(canvas, camera.K, filtered, rotation @ out.covariance[:3, :3] @ rotation.T, (255, 255, 0))
        cv2.putText(canvas, f"{'valid' if valid else 'INVALID'} {confidence:.2f}", (4, 14), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4, (255, 255, 255) if valid else (255, 60, 60), 1, cv2.LINE_AA)
        bgr = cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR)
        if self._video is not None:
            if self._video_size is None:
                self._video_size = (bgr.shape[1], bgr.shape[0])
                if not self._video.open(self._video_tmp, cv2.VideoWriter_fourcc(*"mp4v"), 30.0, self._video_size):
                    self._video = None  # nothing to move into place when the run closes
                    raise DiscoposeError(f"--record-video {self.config.record_video}: OpenCV cannot write an MP4 "
                                         "there; choose another path (or record poses only with --record)")
            if (bgr.shape[1], bgr.shape[0]) == self._video_size:
                self._video.write(bgr)
        if self.config.show:
            cv2.imshow("discopose track", bgr)
            cv2.waitKey(1)

    # --------------------------------------------------------------------------------------- run loop
    def stats(self) -> dict:
        """The rate over the whole run; latency percentiles over the last 10 minutes (all of a shorter run)."""
        span_s = (self._last_publish_s - self._first_publish_s) if self.messages > 1 else 0.0
        hz = (self.messages - 1) / span_s if span_s > 0 else 0.0
        return {"messages": self.messages, "hz": float(hz), "followed": self.steps["following"],
                "steps": dict(self.steps),
                "background_networks": {"runs": self._networks.runs if self._networks else 0,
                                        "reseeded": self.reseeded},
                "latency_ms_p50": self.latencies.percentile_ms(50),
                "latency_ms_p99": self.latencies.percentile_ms(99),
                "cameras": {n: {"state": s.state, "frames_read": s.frames_read, "reconnects": s.reconnects}
                            for n, s in self.sources.items()}}

    def status_line(self) -> str:
        s = self.stats()
        cams = " ".join(f"{n}:{c['state']}" for n, c in s["cameras"].items())
        p50 = s["latency_ms_p50"] or 0
        p99 = s["latency_ms_p99"] or 0
        return f"{s['hz']:.1f} Hz | latency p50 {p50:.0f} ms p99 {p99:.0f} ms | {cams} | {s['messages']} poses"

    def warm_up(self) -> None:
        """One pass of the networks on a blank frame per camera: the first real frame then costs what every
        frame costs, instead of the seconds a cold start takes (which would set the run's latency tail)."""
        views = []
        for name in self.sources:
            calibration = self.calibrations.get(name)
            camera = calibration or self.estimator.model_camera
            views.append((np.zeros((camera.height_px, camera.width_px, 3), np.uint8), camera))
        self.estimator.predict_views(views)

    def run(self) -> dict:
        config = self.config
        self.warm_up()
        started = last_status = time.monotonic()
        try:  # everything from here on ends in close(): camera threads left running abort the interpreter
            if config.record:
                self._record = open(config.record, "w")
            if config.view:
                from discopose.estimator.viewer import RerunView
                self._view = RerunView(config.view, self.estimator.object)
            if config.record_video:
                # Opened on the first frame drawn, at that frame's size.
                self._video_tmp = str(Path(config.record_video).with_name(f".{Path(config.record_video).name}.tmp.mp4"))
                self._video, self._video_size = cv2.VideoWriter(), None
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
        failed = [source.error for source in self.sources.values() if source.error]
        if failed:
            raise DiscoposeError(f"{failed[0]}; the run ended early")
        return self.stats()

    def close(self) -> None:
        if self._networks is not None:
            self._networks.close()  # kept: stats() reads its count
        for source in self.sources.values():
            source.close()
        if self.publisher is not None:
            self.publisher.close()
        if self._record is not None:
            self._record.close()
            self._record = None
        if self._view is not None:
            self._view.close()
            self._view = None
        if self._video is not None:
            self._video.release()
            if self._video_size is not None:
                os.replace(self._video_tmp, self.config.record_video)
            self._video = None
