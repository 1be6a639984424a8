"""The learned estimator against the fiducial alternative, on the same hand-held scenes through the same webcam.

Each scene is rendered twice with the same seed - once with the lettered cube (read by the learned estimator),
once with an ArUco cube (a marker per face, read by OpenCV's aruco module + PnP) - then both frames go through
the same drawn webcam (lens distortion, blur, noise, JPEG; ``realistic/webcam.py``). Reported per occlusion level
(the object's visible fraction): median errors and the share of frames with any pose, and for the learned
estimator the share it flags valid.

    python benchmarks/fiducial_vs_learned.py --model cube --num 200 --out runs/fiducial
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

BINS = ((0.9, 1.01), (0.6, 0.9), (0.3, 0.6), (0.0, 0.3))


def _errors(estimate: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    from discopose.geometry.transforms import rotation_angle_deg
    return (float(np.linalg.norm(estimate[:3, 3] - truth[:3, 3]) * 1000),
            rotation_angle_deg(estimate[:3, :3], truth[:3, :3]))


def run(model: str, num: int, out: Path, width: int, height: int, seed: int) -> dict:
    import discopose
    from discopose._io import atomic_write_json
    from discopose.baselines.aruco_cube import ArucoCube, write_aruco_cube
    from discopose.datasets.format import camera_from_labels
    from discopose.geometry.transforms import make_transform
    from discopose.realistic.webcam import WebcamConfig, apply_webcam, distorted_camera, sample_webcam
    from discopose.render.config import RenderConfig
    from discopose.render.renderer import DiscoRenderer

    out.mkdir(parents=True, exist_ok=True)
    mesh = write_aruco_cube(out / "aruco_cube.glb")
    # The default world (hand holding the object, limbs, table), the cube in its printed colours.
    world = [f"camera.width_px={width}", f"camera.height_px={height}", "hand.prob=1", "object.appearance=original"]
    lettered = DiscoRenderer(RenderConfig.load(overrides=world))
    aruco = DiscoRenderer(RenderConfig.load(overrides=world + [f"object.mesh={mesh}"]))
    estimator, reader = discopose.load(model), ArucoCube()
    webcam_config = WebcamConfig()
    rows = []
    started = time.perf_counter()
    try:
        for index in range(num):
            scene_seed = seed * 100_000 + index
            views = {"learned": lettered.render(lettered.sample_params(scene_seed))["cam0"],
                     "fiducial": aruco.render(aruco.sample_params(scene_seed))["cam0"]}
            webcam = sample_webcam(np.random.default_rng(scene_seed), webcam_config)
            row = {"index": index}
            for name, view in views.items():
                pinhole = camera_from_labels("cam0", view["labels"])
                image = apply_webcam(view["rgb"], webcam, K=pinhole.K)
                camera = distorted_camera(pinhole, webcam)
                truth = np.asarray(view["labels"]["camera_from_object"])
                row[f"{name}_visible"] = float(view["labels"]["visible_fraction"])
                if name == "learned":
                    pose = estimator.predict(image, camera=camera)
                    row["learned_te_mm"], row["learned_re_deg"] = _errors(make_transform(pose.rotation,
                                                                                          pose.position_m), truth)
                    row["learned_valid"] = bool(pose.valid)
                else:
                    estimate, markers = reader.estimate(image, camera)
                    row["fiducial_markers"] = markers
                    if estimate is not None:
                        row["fiducial_te_mm"], row["fiducial_re_deg"] = _errors(estimate, truth)
            rows.append(row)
            if (index + 1) % 20 == 0:
                print(f"{index + 1}/{num} scenes, {(time.perf_counter() - started) / (index + 1):.2f} s each", flush=True)
    finally:
        lettered.close()
        aruco.close()

    def median(values):
        return float(np.median(values)) if values else None

    table = []
    for low, high in BINS:
        learned = [r for r in rows if low <= r["learned_visible"] < high]
        fiducial = [r for r in rows if low <= r["fiducial_visible"] < high]
        posed = [r for r in fiducial if "fiducial_te_mm" in r]
        valid = [r for r in learned if r["learned_valid"]]
        table.append({
            "visible": [low, min(high, 1.0)], "learned_n": len(learned), "fiducial_n": len(fiducial),
            "learned_te_mm": median([r["learned_te_mm"] for r in learned]),
            "learned_re_deg": median([r["learned_re_deg"] for r in learned]),
            "learned_valid_share": len(valid) / len(learned) if learned else None,
            # What a hand controller can act on: valid and within 5 degrees.
            "learned_valid_5deg_share": sum(r["learned_re_deg"] <= 5 for r in valid) / len(learned) if learned else None,
            "learned_valid_te_mm": median([r["learned_te_mm"] for r in valid]),
            "learned_valid_re_deg": median([r["learned_re_deg"] for r in valid]),
            "fiducial_pose_share": len(posed) / len(fiducial) if fiducial else None,
            "fiducial_te_mm": median([r["fiducial_te_mm"] for r in posed]),
            "fiducial_re_deg": median([r["fiducial_re_deg"] for r in posed]),
        })
    result = {"model": str(model), "num": num, "seed": seed, "size": [width, height], "table": table, "rows": rows}
    atomic_write_json(out / "fiducial_vs_learned.json", result)
    return result


def _fmt(value, digits=1, pct=False):
    if value is None:
        return "-"
    return f"{100 * value:.0f}%" if pct else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="cube")
    parser.add_argument("--num", type=int, default=200)
    parser.add_argument("--out", default="runs/fiducial")
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    result = run(args.model, args.num, Path(args.out), width, height, args.seed)
    print(f"\n{args.num} hand-held scenes, {width}x{height} webcam model, seed {args.seed}\n")
    print("| visible | n | learned: median mm / deg | learned: valid | valid and <= 5 deg | valid: median mm / deg | "
          "ArUco cube: any pose | ArUco: median mm / deg |")
    print("|---|---|---|---|---|---|---|---|")
    for row in result["table"]:
        print(f"| {row['visible'][0]:.1f}-{row['visible'][1]:.1f} | {row['learned_n']} / {row['fiducial_n']} | "
              f"{_fmt(row['learned_te_mm'])} / {_fmt(row['learned_re_deg'])} | {_fmt(row['learned_valid_share'], pct=True)} | "
              f"{_fmt(row['learned_valid_5deg_share'], pct=True)} | "
              f"{_fmt(row['learned_valid_te_mm'])} / {_fmt(row['learned_valid_re_deg'])} | "
              f"{_fmt(row['fiducial_pose_share'], pct=True)} | {_fmt(row['fiducial_te_mm'])} / {_fmt(row['fiducial_re_deg'])} |")
    print(f"\nwrote {args.out}/fiducial_vs_learned.json")


if __name__ == "__main__":
    main()
