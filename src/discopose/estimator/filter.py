"""Temporal filter: a Kalman filter on position and an error-state filter on SO(3), each with a velocity
that decays towards zero while unobserved (constant velocity over a frame, settling over a gap).

State: position p (m), velocity v (m/s), orientation R (3x3), angular velocity w (rad/s, world frame).
Orientation uncertainty lives in the tangent space: R_true = exp([d]x) R_est with d ~ N(0, P_rot).
Measurements are gated by their Mahalanobis distance under the predicted covariance, which includes
the network's own stated uncertainty; a rotation measurement is first replaced by its symmetric
equivalent closest to the prediction, so the filter never flips between equivalent poses.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from discopose.geometry.symmetry import closest_equivalent
from discopose.geometry.transforms import rotation_from_vector, rotation_vector

# Gate on the 6-dof innovation (3 position + 3 rotation): 99.9% of inliers with correctly stated
# uncertainty pass (chi-squared, 6 degrees of freedom).
CHI2_6DOF_999 = 22.46


@dataclass
class FilterConfig:
    """Process noise: white acceleration (m/s^2) and angular acceleration (rad/s^2) densities."""

    acceleration_std: float = 0.5
    angular_acceleration_std: float = 4.0
    gate_chi2: float = CHI2_6DOF_999
    # Consecutive rejected measurements after which the filter trusts the data again (re-initialises).
    max_rejections: int = 5
    # Velocities decay towards zero with this time constant (s) while nothing corrects them: across a gap in
    # valid measurements the pose settles near the last fused one instead of extrapolating a noisy velocity
    # without bound (a hand-held object reverses within a second). Over one frame it is a constant-velocity model.
    velocity_decay_s: float = 0.5


@dataclass
class FilterOutput:
    position_m: np.ndarray
    velocity_m_s: np.ndarray
    rotation: np.ndarray
    angular_velocity_rad_s: np.ndarray
    covariance: np.ndarray  # 6x6: position (m^2) then rotation tangent (rad^2)
    measurement_time_s: float
    accepted: bool


class PoseFilter:
    def __init__(self, config: FilterConfig | None = None, symmetries: np.ndarray | None = None):
        self.config = config or FilterConfig()
        self.symmetries = np.eye(3)[None] if symmetries is None else np.asarray(symmetries)
        self.initialized = False
        self.rejections = 0
        self.time_s = 0.0
        self.last_measurement_s = -np.inf

    def _reset(self, position, rotation, position_var, rotation_var, time_s):
        self.p, self.v = np.asarray(position, float).copy(), np.zeros(3)
        self.R, self.w = np.asarray(rotation, float).copy(), np.zeros(3)
        self.P_pos = np.zeros((6, 6))
        self.P_pos[:3, :3] = np.diag(position_var)
        self.P_pos[3:, 3:] = np.eye(3) * 0.5 ** 2  # unknown velocity: 0.5 m/s
        self.P_rot = np.zeros((6, 6))
        self.P_rot[:3, :3] = np.eye(3) * rotation_var
        self.P_rot[3:, 3:] = np.eye(3) * np.radians(180) ** 2
        self.time_s = time_s
        self.initialized = True
        self.rejections = 0

    def _transition(self, dt: float, q: float):
        tau = self.config.velocity_decay_s
        decay = np.exp(-dt / tau)
        F = np.eye(6)
        F[:3, 3:] = np.eye(3) * tau * (1 - decay)  # the decaying velocity's integral (dt for small dt)
        F[3:, 3:] = np.eye(3) * decay
        # Discretised white-acceleration noise (the undamped model's: a little conservative over long gaps).
        Q = np.zeros((6, 6))
        Q[:3, :3] = np.eye(3) * dt ** 3 / 3
        Q[:3, 3:] = Q[3:, :3] = np.eye(3) * dt ** 2 / 2
        Q[3:, 3:] = np.eye(3) * dt
        return F, Q * q ** 2

    def predict(self, time_s: float) -> None:
        dt = max(time_s - self.time_s, 0.0)
        if not self.initialized or dt == 0:
            return
        F, Q = self._transition(dt, self.config.acceleration_std)
        state = F @ np.concatenate([self.p, self.v])
        self.p, self.v = state[:3], state[3:]
        self.P_pos = F @ self.P_pos @ F.T + Q
        F, Q = self._transition(dt, self.config.angular_acceleration_std)
        self.R = rotation_from_vector(self.w * F[0, 3]) @ self.R
        self.w = self.w * F[3, 3]
        self.P_rot = F @ self.P_rot @ F.T + Q
        self.time_s = time_s

    def predicted_position(self, time_s: float) -> np.ndarray:
        """Where the motion model expects the object at ``time_s``, without changing the state."""
        F, _ = self._transition(max(time_s - self.time_s, 0.0), self.config.acceleration_std)
        return self.p + F[0, 3] * self.v

    def closest_equivalent(self, rotation: np.ndarray) -> np.ndarray:
        """The symmetric equivalent of ``rotation`` nearest the current estimate."""
        return closest_equivalent(self.R, rotation, self.symmetries)[0]

    def update(self, time_s: float, position_m, rotation, position_sigma_m, rotation_sigma_rad: float) -> FilterOutput:
        """Fuse one measurement taken at ``time_s`` (seconds, monotonic clock)."""
        position_var = np.asarray(position_sigma_m, float) ** 2
        rotation_var = float(rotation_sigma_rad) ** 2
        rotation = np.asarray(rotation, float)
        if not self.initialized:
            self._reset(position_m, rotation, position_var, rotation_var, time_s)
            self.last_measurement_s = time_s
            return self.output(accepted=True)
        self.predict(time_s)
        rotation = self.closest_equivalent(rotation)
        H = np.hstack([np.eye(3), np.zeros((3, 3))])
        innovation_p = np.asarray(position_m, float) - self.p
        S_p = H @ self.P_pos @ H.T + np.diag(position_var)
        innovation_r = rotation_vector(rotation @ self.R.T)
        S_r = H @ self.P_rot @ H.T + np.eye(3) * rotation_var
        distance = innovation_p @ np.linalg.solve(S_p, innovation_p) + innovation_r @ np.linalg.solve(S_r, innovation_r)
        if distance > self.config.gate_chi2:
            self.rejections += 1
            if self.rejections >= self.config.max_rejections:
                # The object moved in a way the motion model did not expect (or was swapped): restart.
                self._reset(position_m, rotation, position_var, rotation_var, time_s)
                self.last_measurement_s = time_s
                return self.output(accepted=True)
            return self.output(accepted=False)
        self.rejections = 0
        K = self.P_pos @ H.T @ np.linalg.inv(S_p)
        state = np.concatenate([self.p, self.v]) + K @ innovation_p
        self.p, self.v = state[:3], state[3:]
        self.P_pos = (np.eye(6) - K @ H) @ self.P_pos
        K = self.P_rot @ H.T @ np.linalg.inv(S_r)
        correction = K @ innovation_r
        self.R = rotation_from_vector(correction[:3]) @ self.R
        self.w = self.w + correction[3:]
        self.P_rot = (np.eye(6) - K @ H) @ self.P_rot
        self.last_measurement_s = time_s
        return self.output(accepted=True)

    def output(self, accepted: bool = True) -> FilterOutput:
        covariance = np.zeros((6, 6))
        covariance[:3, :3] = self.P_pos[:3, :3]
        covariance[3:, 3:] = self.P_rot[:3, :3]
        return FilterOutput(self.p.copy(), self.v.copy(), self.R.copy(), self.w.copy(), covariance,
                            self.last_measurement_s, accepted)
