"""Tracking quality against ground truth: per-frame (raw network) vs filtered error and jitter."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from discopose._errors import DiscoposeError
from discopose.geometry.transforms import matrix_from_quat_wxyz
from discopose.models.metrics import re


def ground_truth_poses(ground_truth_jsonl: str | Path, frame: str) -> dict[int, np.ndarray]:
    """A rendered clip's true pose (4x4) per frame index, in ``frame`` as poses are published (``world`` or
    ``camera:<name>``)."""
    rows = [json.loads(line) for line in Path(ground_truth_jsonl).read_text().splitlines() if line.strip()]
    if frame == "world":
        return {row["frame"]: np.asarray(row["world_from_object"]) for row in rows}
    camera = frame.split(":", 1)[1]
    return {row["frame"]: np.asarray(row["camera_from_object"][camera]) for row in rows}


def tracking_quality(records_jsonl: str | Path, ground_truth_jsonl: str | Path, symmetries: np.ndarray | None = None,
                     skip: int = 10) -> dict:
    """Compare a ``--record`` file with a rendered clip's ``.gt.jsonl``, in the frame the poses were
    published in (``camera:<name>`` or ``world``).

    Jitter is the mean frame-to-frame deviation: |(estimate[k+1] - estimate[k]) - (truth[k+1] - truth[k])|,
    in mm and degrees, over consecutive processed frames. The first ``skip`` poses (filter warm-up) are
    left out.
    """
    records = [json.loads(line) for line in Path(records_jsonl).read_text().splitlines() if line.strip()][skip:]
    if not records:
        raise DiscoposeError(f"{records_jsonl} holds no more than {skip} poses; track longer to judge quality")
    frame = records[0]["frame"]
    truth = ground_truth_poses(ground_truth_jsonl, frame)
    result = {"frames": len(records), "frame": frame}
    for kind, pos_key, quat_key in (("raw", "raw_position_m", "raw_quat_wxyz"), ("filtered", "position_m", "quat_wxyz")):
        t_err, r_err, steps_t, steps_r = [], [], [], []
        previous = None
        for record in records:
            index = next(iter(record["frame_index"].values()))
            gt = truth[index]
            position = np.asarray(record[pos_key])
            rotation = matrix_from_quat_wxyz(record[quat_key])
            t_err.append(1000 * np.linalg.norm(position - gt[:3, 3]))
            r_err.append(re(rotation, gt[:3, :3], symmetries))
            if previous is not None and index == previous[0] + 1:
                _, prev_pos, prev_rot, prev_gt = previous
                delta_est, delta_gt = position - prev_pos, gt[:3, 3] - prev_gt[:3, 3]
                steps_t.append(1000 * np.linalg.norm(delta_est - delta_gt))
                relative_est = rotation @ prev_rot.T
                relative_gt = gt[:3, :3] @ prev_gt[:3, :3].T
                steps_r.append(re(relative_est, relative_gt))
            previous = (index, position, rotation, gt)
        result[kind] = {"te_mm_median": float(np.median(t_err)), "re_deg_median": float(np.median(r_err)),
                        "jitter_mm": float(np.mean(steps_t)) if steps_t else None,
                        "jitter_deg": float(np.mean(steps_r)) if steps_r else None}
    return result
