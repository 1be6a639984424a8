"""Running trained estimators: the two-line API, live tracking, filtering and pose publishing."""
from discopose.estimator.api import Pose, PoseEstimator, load

__all__ = ["Pose", "PoseEstimator", "load"]
