"""Camera sources: a grabbing thread per camera that keeps only the newest frame.

A source is a device index (``0``), a video file, an RTSP/HTTP URL, or a folder of images. Each frame
is stamped with ``time.monotonic()`` when it is read. A live source that fails is reopened with
exponential backoff; the tracker keeps running on the cameras it still has.

``realtime`` (default for files and folders: paced at their frame rate, frames dropped when the
consumer is slow, exactly like a live camera) or ``lockstep`` (every frame delivered once, for
offline evaluation of a recording).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from discopose._errors import DiscoposeError

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}
SKIPPED_IMAGE = "skipping %s: not a readable image (corrupt, truncated or not an image)"


@dataclass
class Frame:
    image_rgb: np.ndarray
    capture_time_s: float
    index: int


class ImageFolderCapture:
    """cv2.VideoCapture-like reader over a sorted folder of images. An image that cannot be decoded is
    skipped with a warning naming it, as a camera drops a bad frame; a folder without one readable
    image is an error."""

    def __init__(self, folder: str, fps: float = 30.0):
        self.paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.paths:
            raise DiscoposeError(f"camera folder {folder!r} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        self.position = 0
        self.fps = fps
        # Decoded now so that a folder of nothing but unreadable files fails before tracking starts, with
        # one error rather than a warning per file.
        self._pending = self._next_image(warn=False)
        if self._pending is None:
            raise DiscoposeError(f"camera folder {folder!r}: none of its {len(self.paths)} images can be read "
                                 f"(e.g. {self.paths[0].name}); replace them with valid PNG/JPEG files")
        for path in self.paths[:self.position - 1]:
            log.warning(SKIPPED_IMAGE, path)

    def _next_image(self, warn: bool = True) -> np.ndarray | None:
        """The next image in order that decodes, skipping those that do not."""
        while self.position < len(self.paths):
            path = self.paths[self.position]
            self.position += 1
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is not None:
                return image
            if warn:
                log.warning(SKIPPED_IMAGE, path)
        return None

    def isOpened(self) -> bool:  # noqa: N802 - mirrors cv2.VideoCapture
        return True

    def read(self):
        image = self._pending if self._pending is not None else self._next_image()
        self._pending = None
        return image is not None, image

    def get(self, prop):
        return self.fps if prop == cv2.CAP_PROP_FPS else 0

    def release(self):
        pass


def open_capture(uri: str):
    """An OpenCV capture for ``uri``: device index, folder, file or URL."""
    if uri.isdigit():
        return cv2.VideoCapture(int(uri)), True
    if Path(uri).is_dir():
        return ImageFolderCapture(uri), False
    if "://" not in uri and not Path(uri).exists():
        raise DiscoposeError(f"camera source {uri!r} is neither a device index, an existing file/folder nor a URL")
    return cv2.VideoCapture(uri), "://" in uri or uri.startswith("/dev/")


class CameraSource:
    """Grabs frames from ``uri`` in a thread. ``latest()`` returns the newest frame (or None)."""

    def __init__(self, name: str, uri: str, mode: str | None = None, open_fn=open_capture,
                 max_backoff_s: float = 5.0):
        self.name, self.uri = name, str(uri)
        self._open_fn = open_fn
        self._lock = threading.Condition()
        self._frame: Frame | None = None
        self._taken = True
        self._stop = threading.Event()
        self.state = "starting"
        self.frames_read = 0
        self.reconnects = 0
        self.error: str | None = None  # why the grabbing thread stopped, when it stopped on an error
        self.max_backoff_s = max_backoff_s
        self._capture, self.live = self._open_fn(self.uri)
        if not self._capture.isOpened():
            raise DiscoposeError(f"camera {name!r}: cannot open {uri!r}; check the device/path/URL")
        if mode not in (None, "realtime", "lockstep"):
            raise DiscoposeError(f"camera {name!r}: mode {mode!r} is unknown; use realtime or lockstep")
        self.mode = mode or "realtime"
        fps = float(self._capture.get(cv2.CAP_PROP_FPS) or 0)
        self.period_s = 1.0 / fps if (not self.live and fps > 0) else 0.0
        self._thread = threading.Thread(target=self._run, name=f"camera-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._grab_frames()
        except Exception as exc:  # noqa: BLE001 - whatever it is, the consumer must not wait on this camera forever
            self.error = f"camera {self.name!r} ({self.uri}) stopped: {type(exc).__name__}: {exc}".splitlines()[0]
            log.error("%s", self.error)
            self.state = "ended"
            with self._lock:
                self._lock.notify_all()

    def _grab_frames(self) -> None:
        backoff, index, next_time = 0.1, 0, time.monotonic()
        while not self._stop.is_set():
            try:
                ok, image = self._capture.read()
            except Exception as exc:  # noqa: BLE001 - some backends raise when a USB device vanishes
                if not self.live:
                    raise
                log.warning("camera %s: read raised %s: %s", self.name, type(exc).__name__, exc)
                ok, image = False, None
            if not ok:
                if not self.live:
                    self.state = "ended"
                    with self._lock:
                        self._lock.notify_all()
                    return
                self.state = "reconnecting"
                log.warning("camera %s: read failed; reconnecting in %.1f s", self.name, backoff)
                if self._stop.wait(backoff):
                    return
                backoff = min(backoff * 2, self.max_backoff_s)
                # Apart from the reopen: a pulled device's backend may raise on release() as on read(), and
                # the old capture is dropped either way.
                try:
                    self._capture.release()
                except Exception as exc:  # noqa: BLE001
                    log.warning("camera %s: release raised %s: %s", self.name, type(exc).__name__, exc)
                try:
                    self._capture, _ = self._open_fn(self.uri)
                    self.reconnects += 1
                except Exception as exc:  # a vanished device raises in some backends
                    log.warning("camera %s: reopen failed (%s)", self.name, exc)
                continue
            backoff = 0.1
            if self.period_s:  # files play at their own frame rate, like a camera would
                next_time += self.period_s
                delay = next_time - time.monotonic()
                if delay > 0 and self.mode == "realtime":
                    time.sleep(delay)
            frame = Frame(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), time.monotonic(), index)
            index += 1
            with self._lock:
                if self.mode == "lockstep":
                    while not self._taken and not self._stop.is_set():
                        self._lock.wait(0.1)
                self._frame, self._taken = frame, False
                self.frames_read += 1
                self.state = "ok"
                self._lock.notify_all()

    def latest(self, wait_s: float = 0.0, newer_than: int = -1) -> Frame | None:
        """The newest frame whose index is above ``newer_than``, waiting up to ``wait_s`` for one."""
        deadline = time.monotonic() + wait_s
        with self._lock:
            while (self._frame is None or self._frame.index <= newer_than) and self.state != "ended":
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._lock.wait(remaining)
            frame = self._frame
            if frame is not None and frame.index > newer_than:
                self._taken = True
                self._lock.notify_all()
                return frame
            return None

    @property
    def ended(self) -> bool:
        return self.state == "ended" and (self._frame is None or self._taken)

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
        self._thread.join(timeout=2)
        try:
            self._capture.release()
        except Exception as exc:  # noqa: BLE001 - a pulled device may raise here too; closing must not
            log.warning("camera %s: release raised %s: %s", self.name, type(exc).__name__, exc)
