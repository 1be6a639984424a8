"""Refinement: the known mesh aligned to a camera's full-resolution image, after the networks.

One call::

    from discopose.refine import RefineModel, refine_pose
    model = RefineModel.from_object_meta(estimator.object)          # the built-in cube: 8 corners, 12 creases
    result = refine_pose(image, camera, model, pose.frame_from_object)
    result.camera_from_object, result.score                          # refined 4x4 and how well the image supports it

Shaped like a model-based tracker (M3T/ICG): ``model`` (what is precomputed from the mesh), one file per
modality (``region``: the silhouette on correspondence lines with colour histograms; ``edges``: the visible
crease edges searched along their normals), ``projection`` (pure projection and Jacobian functions) and
``optimizer`` (sums the modalities of every camera, damped Gauss-Newton coarse to fine, scores, tries several
starts). Plain numpy/cv2/scipy: no torch and no renderer, so a tracker on ONNX Runtime can use it.
"""
from discopose.refine.config import RefineConfig, RefineResult, follow_schedule
from discopose.refine.model import RefineModel
from discopose.refine.optimizer import refine_pose, refine_world_pose

__all__ = ["RefineConfig", "RefineModel", "RefineResult", "follow_schedule", "refine_pose", "refine_world_pose"]
