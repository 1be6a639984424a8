"""Pose stream over ZeroMQ PUB/SUB (``docs/pose_message.md``).

Each message is one frame: the topic ``b"pose "`` followed by a UTF-8 JSON object (one frame, so
subscribers may use ZMQ_CONFLATE to keep only the newest)::

    {"schema": "discopose.pose/2", "seq": 17,
     "capture_time_s": 1234.5678,   # monotonic clock of the capture (time.monotonic on the tracker host)
     "publish_time_s": 1234.5901,   # same clock, when published; latency_s = publish - capture
     "latency_s": 0.0223, "frame": "camera:cam0" | "world",
     "position_m": [x, y, z], "quat_wxyz": [w, x, y, z],
     "velocity_m_s": [...], "angular_velocity_rad_s": [...],
     "covariance": 6x6 (position m^2, then rotation rad^2 in the world-frame tangent space),
     "measurement_age_s": 0.0 (null before the first valid measurement), "accepted": true,
     "valid": true, "confidence": 0.97,                        # the published (filtered) pose
     "measurement_valid": true, "measurement_confidence": 0.97, # this frame's raw estimate
     "cameras": {"cam0": {"state": "ok" | "reconnecting" | "ended" | "stale", "age_s": 0.01}}}
"""
from __future__ import annotations

import json
import time

from discopose._errors import DiscoposeError

SCHEMA = "discopose.pose/2"
TOPIC = b"pose"
DEFAULT_ADDRESS = "tcp://127.0.0.1:5555"
REQUIRED = {"schema": str, "seq": int, "capture_time_s": float, "publish_time_s": float, "latency_s": float,
            "frame": str, "position_m": list, "quat_wxyz": list, "velocity_m_s": list,
            "angular_velocity_rad_s": list, "covariance": list, "measurement_age_s": (float, type(None)),
            "accepted": bool, "valid": bool, "confidence": float, "measurement_valid": bool,
            "measurement_confidence": float, "cameras": dict}


def validate_message(message: dict) -> dict:
    """Raise ValueError unless ``message`` follows the schema; returns it."""
    for key, kind in REQUIRED.items():
        if key not in message:
            raise ValueError(f"pose message lacks {key!r}")
        value = message[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            continue
        if not isinstance(value, kinds):
            raise ValueError(f"pose message field {key!r} should be {' or '.join(k.__name__ for k in kinds)}, "
                             f"got {type(value).__name__}")
    if message["schema"] != SCHEMA:
        raise ValueError(f"unknown schema {message['schema']!r}, expected {SCHEMA}")
    if len(message["position_m"]) != 3 or len(message["quat_wxyz"]) != 4 or len(message["covariance"]) != 6:
        raise ValueError("pose message has wrong vector sizes")
    return message


class PosePublisher:
    """Binds a PUB socket (localhost by default) and publishes pose messages."""

    def __init__(self, address: str = DEFAULT_ADDRESS):
        import zmq
        self._context = zmq.Context.instance()
        self.socket = self._context.socket(zmq.PUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.SNDHWM, 100)
        try:
            self.socket.bind(address)
        except zmq.ZMQError as exc:
            self.socket.close()
            raise DiscoposeError(f"cannot publish on {address} ({exc}); choose another --publish address/port") from None
        self.address = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.seq = 0

    def publish(self, message: dict) -> dict:
        message = {"schema": SCHEMA, "seq": self.seq, **message}
        message["publish_time_s"] = time.monotonic()
        message["latency_s"] = message["publish_time_s"] - message["capture_time_s"]
        self.socket.send(TOPIC + b" " + json.dumps(message).encode())
        self.seq += 1
        return message

    def close(self) -> None:
        self.socket.close()


class PoseSubscriber:
    """Policy-side subscriber::

        with PoseSubscriber("tcp://127.0.0.1:5555") as sub:
            message = sub.receive(timeout_s=1.0)   # dict, or None on timeout
    """

    def __init__(self, address: str = DEFAULT_ADDRESS, conflate: bool = False):
        import zmq
        self._zmq = zmq
        self.socket = zmq.Context.instance().socket(zmq.SUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        if conflate:  # keep only the newest message: what a control loop usually wants
            self.socket.setsockopt(zmq.CONFLATE, 1)
        self.socket.setsockopt(zmq.SUBSCRIBE, TOPIC)
        self.socket.connect(address)

    def receive(self, timeout_s: float = 1.0) -> dict | None:
        if not self.socket.poll(int(timeout_s * 1000)):
            return None
        payload = self.socket.recv()
        return validate_message(json.loads(payload.split(b" ", 1)[1]))

    def close(self) -> None:
        self.socket.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
