"""What the tracker believes, in a Rerun viewer (``discopose track --view``) or a ``.rrd`` recording.

Entities (the tracker's frame is ``world``: the calibrated world with several cameras, the camera's own
frame with one):

* ``world/<camera>``: the camera's pose, with ``world/<camera>/image`` its pinhole (frustum), the frame
  and ``world/<camera>/image/cube`` the published pose's box projected into it;
* ``world/object``: the published pose (its ``box`` green while valid, grey otherwise) and
  ``world/uncertainty``: the 2-sigma position ellipsoid of its covariance;
* ``world/raw``: the raw measurement's position;
* ``plots/valid``, ``plots/confidence``, ``plots/latency_ms``, ``plots/rate_hz``: time series.

Timelines: ``frame`` (published message number) and ``capture_time`` (seconds on the capture clock).
"""
from __future__ import annotations

import cv2
import numpy as np

from discopose._errors import DiscoposeError
from discopose.camera import CameraModel
from discopose.geometry.transforms import invert_transform, make_transform, matrix_from_quat_wxyz, quat_wxyz_from_matrix
from discopose.viz import BOX_EDGES

VALID_RGB, INVALID_RGB = (40, 220, 60), (150, 150, 150)
JPEG_QUALITY = 80  # images dominate a recording; JPEG keeps an hour of 640x480 at 30 Hz to a few GB


class RerunView:
    """Streams the tracker's state to Rerun: ``target`` ``"spawn"`` opens a viewer, a path records a .rrd."""

    def __init__(self, target: str, object_info: dict, application_id: str = "discopose-track"):
        try:
            import rerun as rr
        except ImportError:
            raise DiscoposeError("--view needs the Rerun SDK: pip install 'discopose[view]' (or rerun-sdk)") from None
        self.rr = rr
        self.recording = rr.RecordingStream(application_id)
        if target == "spawn":
            try:
                self.recording.spawn()
            except Exception as exc:  # no display, no viewer binary
                raise DiscoposeError(f"--view: cannot start the Rerun viewer ({exc}); record to a file instead "
                                     "(--view track.rrd) and open it with `rerun track.rrd`") from None
        else:
            if not str(target).endswith(".rrd"):
                raise DiscoposeError(f"--view {target}: give a .rrd file to record, or no value to open a viewer")
            self.recording.save(target)
        self.keypoints = np.asarray(object_info["keypoints_m"], float)
        low, high = self.keypoints[:8].min(0), self.keypoints[:8].max(0)
        self.recording.log("world/object/box", rr.Boxes3D(half_sizes=[(high - low) / 2], centers=[(high + low) / 2]),
                           static=True)
        self._cameras_logged: set[str] = set()
        self._last_publish_s = None

    def _log_camera(self, name: str, camera: CameraModel, world_from_camera: np.ndarray) -> None:
        rr = self.rr
        self.recording.log(f"world/{name}", rr.Transform3D(translation=world_from_camera[:3, 3],
                                                           mat3x3=world_from_camera[:3, :3]), static=True)
        self.recording.log(f"world/{name}/image",
                           rr.Pinhole(image_from_camera=camera.K, width=camera.width_px, height=camera.height_px,
                                      camera_xyz=rr.ViewCoordinates.RDF), static=True)
        self._cameras_logged.add(name)

    def log(self, message: dict, images: dict[str, np.ndarray], cameras: dict[str, CameraModel],
            world_from_cameras: dict[str, np.ndarray], raw_position_m: np.ndarray) -> None:
        """One published ``message`` with the frames it came from, their cameras and where they sit in the
        tracker's frame, and the raw (unfiltered) measurement's position."""
        rr, rec = self.rr, self.recording
        rec.set_time("frame", sequence=int(message["seq"]))
        rec.set_time("capture_time", duration=float(message["capture_time_s"]))
        rotation = matrix_from_quat_wxyz(message["quat_wxyz"])
        position = np.asarray(message["position_m"], float)
        frame_from_object = make_transform(rotation, position)
        valid = bool(message["valid"])
        colour = VALID_RGB if valid else INVALID_RGB
        rec.log("world/object", rr.Transform3D(translation=position, mat3x3=rotation))
        rec.log("world/object/box", rr.Boxes3D.from_fields(colors=[colour]))
        covariance = np.asarray(message["covariance"], float)[:3, :3]
        eigenvalues, eigenvectors = np.linalg.eigh(covariance)
        if np.linalg.det(eigenvectors) < 0:
            eigenvectors[:, 0] *= -1
        w, x, y, z = quat_wxyz_from_matrix(eigenvectors)
        rec.log("world/uncertainty", rr.Ellipsoids3D(centers=[position], half_sizes=[2 * np.sqrt(np.clip(eigenvalues, 0, None))],
                                                     quaternions=[rr.Quaternion(xyzw=[x, y, z, w])], colors=[colour]))
        rec.log("world/raw", rr.Points3D([raw_position_m], radii=[0.002], colors=[(255, 80, 80)]))
        for name, image in images.items():
            camera, world_from_camera = cameras[name], world_from_cameras[name]
            if name not in self._cameras_logged:
                self._log_camera(name, camera, world_from_camera)
            rec.log(f"world/{name}/image", rr.Image(image).compress(jpeg_quality=JPEG_QUALITY))
            camera_from_object = invert_transform(world_from_camera) @ frame_from_object
            points = self.keypoints[:8] @ camera_from_object[:3, :3].T + camera_from_object[:3, 3]
            if (points[:, 2] > 1e-3).all():
                # Through the lens model, so the box lies on the distorted image as the camera delivers it.
                pixels = cv2.projectPoints(points, np.zeros(3), np.zeros(3), camera.K,
                                           camera.dist_coeffs)[0].reshape(-1, 2)
                rec.log(f"world/{name}/image/cube", rr.LineStrips2D([[pixels[i], pixels[j]] for i, j in BOX_EDGES],
                                                                    colors=[colour]))
        rec.log("plots/valid", rr.Scalars(float(valid)))
        rec.log("plots/confidence", rr.Scalars(float(message["confidence"])))
        rec.log("plots/latency_ms", rr.Scalars(1000.0 * float(message["latency_s"])))
        publish_s = float(message["publish_time_s"])
        if self._last_publish_s is not None and publish_s > self._last_publish_s:
            rec.log("plots/rate_hz", rr.Scalars(1.0 / (publish_s - self._last_publish_s)))
        self._last_publish_s = publish_s

    def close(self) -> None:
        self.recording.flush()
        self.recording.disconnect()
