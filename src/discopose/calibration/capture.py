"""Photos of the calibration board from a live camera: keep a frame whenever the board is fully seen, at most
one per ``interval_s``, until ``count`` are saved. Reads through the tracker's own capture code
(:class:`~discopose.estimator.sources.CameraSource`), so what calibrates the camera is what tracking will see."""
from __future__ import annotations

import time
from pathlib import Path

import cv2

from discopose._errors import DiscoposeError
from discopose._io import atomic_write_bytes
from discopose.calibration.boards import BoardSpec, detect_board


def capture_board_views(uri: str, board: BoardSpec, out_dir: str | Path, count: int = 20, interval_s: float = 1.0,
                        timeout_s: float = 300.0, report=print) -> list[Path]:
    """Save ``count`` frames showing ``board`` from camera ``uri`` (device index, file, folder or URL) into
    ``out_dir`` as ``view_NN.png``; ``report`` gets a line per saved view. Move the board between views: tilt it
    and cover the corners of the image, as OpenCV's calibration needs."""
    from discopose.estimator.sources import CameraSource
    if count < 5:
        raise DiscoposeError(f"--count {count}: calibration needs at least 5 views (15-20 are better)")
    out_dir = Path(out_dir)
    source = CameraSource("calibration", uri)
    saved: list[Path] = []
    last_saved_s = None
    started = time.monotonic()
    newest = -1
    try:
        while len(saved) < count and time.monotonic() - started < timeout_s:
            frame = source.latest(wait_s=0.5, newer_than=newest)
            if frame is None:
                if source.ended:
                    break
                continue
            newest = frame.index
            if last_saved_s is not None and frame.capture_time_s - last_saved_s < interval_s:
                continue
            bgr = cv2.cvtColor(frame.image_rgb, cv2.COLOR_RGB2BGR)
            if detect_board(board, bgr) is None:
                continue
            path = out_dir / f"view_{len(saved):02d}.png"
            atomic_write_bytes(path, cv2.imencode(".png", bgr)[1].tobytes())
            saved.append(path)
            last_saved_s = frame.capture_time_s
            report(f"view {len(saved)}/{count}: {path} (now move or tilt the board)")
    finally:
        source.close()
    if source.error:
        raise DiscoposeError(f"camera {uri!r}: {source.error}")
    if len(saved) < count:
        raise DiscoposeError(f"saw the board in only {len(saved)} of the {count} views asked for (in {uri!r}); hold "
                             f"the whole board in view, closer and well lit" + (", for longer (--timeout)" if
                                                                                 source.live else ""))
    return saved
