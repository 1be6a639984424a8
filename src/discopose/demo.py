"""``discopose demo``: the whole pipeline on embedded defaults, on a CPU, end to end.

render (locator frames, zoom-in crops, test sets) -> train the two-stage estimator (ImageNet init) ->
evaluate (in-family, held-out appearance, a 3-camera rig fused vs its first camera alone, the locator
alone) -> render a continuous-motion clip -> track it live through the camera code path, publishing on
localhost -> ``demo_summary.json`` with every figure the README quotes.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from dataclasses import asdict, dataclass, replace

from discopose._errors import DiscoposeError
from discopose._io import atomic_write_json, output_folder

log = logging.getLogger(__name__)

# The default world is the mission's: the cube in a hand, with people's limbs and a table around it.
# Training never sees value-noise textures (blends are built from the listed kinds only), so the
# held-out test below shares no texture kind or light type mix with training; its clutter is the
# same as in training, so its score measures appearance alone.
NO_HAND = ["hand.prob=0", "limbs.prob=0", "table.prob=0"]
TRAIN_LOOKS = ["textures.kinds=[solid, gradient, stripes, checker, blend]"]
HELD_OUT_LOOKS = ["textures.kinds=[noise]", "lighting.types=[point]", "lighting.color_saturation_max=0"]
# What the stated uncertainty and the validity flag are calibrated on: a third family (unseen textures,
# spot and directional lights only, stronger sensor noise and blur, JPEG at webcam quality), so that
# they are fitted where the networks are unsure, not where they are already right.
CALIBRATION_LOOKS = ["textures.kinds=[noise]", "lighting.types=[spot, directional]", "noise.gaussian_sigma=[2, 10]",
                     "noise.blur_prob=0.6", "noise.blur_sigma_px=[0.3, 1.5]", "output.jpeg_quality=70"]
# Distances: training spans the render default (0.12-1.3 m); the test sets and the realistic proxy span the
# stated working volume; the calibration family and the "beyond" test reach past it on both sides, so the
# validity flag is fitted and measured where the estimator must say it does not know.
BEYOND_VOLUME_M = (0.1, 1.5)
# The realistic proxy's heavy grip: three to five thick fingers whose tips rest on the cube's faces (never its
# edges), reaching well up its sides, so that fingers lie across the letters the networks read the faces by.
HEAVY_GRIP = ["hand.finger_count=[3, 5]", "hand.finger_radius_frac=[0.1, 0.14]", "hand.edge_prob=0",
              "hand.fingertip_length_frac=[0.25, 0.4]", "hand.contact_elevation_deg=[20, 70]", "hand.thumb_prob=1"]


@dataclass
class DemoPlan:
    frame_px: tuple      # (width, height) of the locator's training frames, a webcam's 4:3
    crop_px: int         # zoom-in crops
    test_px: tuple       # (width, height) of test frames and the clip: what a webcam delivers
    frames: int
    crops: int
    val: int
    test: int
    locator_epochs: int
    crop_epochs: int
    batch_size: int
    clip_frames: int
    calibration: int     # frames of the calibration family
    realistic: int       # path-traced webcam frames of the realistic proxy, one camera, the hand holding the cube
    realistic_no_hand: int  # the same without the hand
    realistic_rig3: int  # path-traced 3-camera scenes
    realistic_px: tuple  # (width, height) of the proxy's webcam
    seed: int = 0
    crop_val_every_steps: int = 0  # the crop stage's validation within epochs too (its error-vs-views curve)
    # Wall-clock budget of the whole demo: after rendering, the training rate is measured on this machine and the
    # crop stage gets the most epochs (down to BUDGET_MIN_CROP_EPOCHS) that fit (see budgeted_crop_epochs).
    budget_min: float | None = None
    # Error plots in every set's report; else in the headline sets' only (the synthetic test set and the realistic
    # proxy): a dozen reports' matplotlib figures were a third of the quick plan's evaluation time.
    plots_every_set: bool = True


# About 28 minutes on a 2-core avx512 CPU (README: measured); budget_min keeps slower CPUs near 30 where it can.
FULL = DemoPlan(frame_px=(128, 96), crop_px=96, test_px=(640, 480), frames=3000, crops=12000, val=300, test=300,
                locator_epochs=4, crop_epochs=5, batch_size=32, clip_frames=300, calibration=400, realistic=40,
                realistic_no_hand=20, realistic_rig3=10, realistic_px=(640, 480), budget_min=30.0)
# The long CPU recipe (the shipped model's), over the same working volume: 2x the frames, 10x the crops, each
# seen twice: 240,000 crop views (the floor; an earlier five-pass, 240k-view recipe reached 4.5 deg on
# renders). About 2 h on an avx512 2-core CPU (crops render at ~120/s and train at ~95/s there), twice that on
# an AVX2-only one.
LONG = DemoPlan(frame_px=(128, 96), crop_px=96, test_px=(640, 480), frames=6000, crops=120000, val=300, test=300,
                locator_epochs=4, crop_epochs=2, batch_size=32, clip_frames=300, calibration=400, realistic=40,
                realistic_no_hand=20, realistic_rig3=10, realistic_px=(640, 480), crop_val_every_steps=625)
QUICK = DemoPlan(frame_px=(64, 48), crop_px=64, test_px=(128, 96), frames=120, crops=160, val=24, test=24,
                 locator_epochs=1, crop_epochs=1, batch_size=16, clip_frames=60, calibration=32, realistic=3,
                 realistic_no_hand=3, realistic_rig3=2, realistic_px=(128, 96), plots_every_set=False)


# What the demo does after training (calibration, the evaluations, the clip), in crop-training images: ~210 s on
# the avx512 class, whose crop stage trains at ~93 crops/s (the full plan's stages: calibration 23 s, evaluation
# 156-161 s, tracking 34 s). On a slower CPU both slow down together; with only torch held to AVX2 kernels the
# inference (ONNX Runtime) does not, and this over-reserves by about a minute.
AFTER_TRAINING_IMAGES = 19_000
# The fewest crop epochs a budget may leave (measured, seed 0, torch held to AVX2 kernels, against the whole recipe's
# 9.6 deg in family / 22.9 deg realistic with the hand): 4 epochs 14.0 / 21.9 deg, 2 epochs 46.8 / 57.7 deg (the
# orientation is not learnt yet); 3 not measured.
BUDGET_MIN_CROP_EPOCHS = 4


def budgeted_crop_epochs(plan: DemoPlan, elapsed_s: float, locator_images_s: float, crop_images_s: float) -> dict:
    """The crop stage's epochs for ``plan.budget_min``: the plan's when the projected demo fits (render time so
    far, the locator's and crop stage's images at their measured rates, what follows training), else the most that
    fit, never under BUDGET_MIN_CROP_EPOCHS (a projection that still overruns is said, not hidden)."""
    def projected_s(crop_epochs: int) -> float:
        return (elapsed_s + plan.frames * plan.locator_epochs / locator_images_s
                + (plan.crops * crop_epochs + AFTER_TRAINING_IMAGES) / crop_images_s)
    epochs = plan.crop_epochs
    while epochs > BUDGET_MIN_CROP_EPOCHS and projected_s(epochs) > 60 * plan.budget_min:
        epochs -= 1
    return {"budget_min": plan.budget_min, "crop_epochs": epochs, "planned_crop_epochs": plan.crop_epochs,
            "elapsed_s": round(elapsed_s, 1), "locator_images_s": round(locator_images_s, 1),
            "crop_images_s": round(crop_images_s, 1), "projected_min": round(projected_s(epochs) / 60, 1),
            "fits": projected_s(epochs) <= 60 * plan.budget_min}


def _headline(result: dict) -> dict:
    s, b = result["summary"], result["baseline"]
    row = {"te_mm_median": s["te_mm"]["median"], "re_deg_median": s["re_deg"]["median"],
           "te_mm_p90": s["te_mm"]["p90"], "re_deg_p90": s["re_deg"]["p90"],
           "re_within_30deg": s["success"]["re<30deg"], "add_s_success": s["success"]["add(-s)<10%d"],
           "count": s["count"], "frame": result["frame"], "chance": b}
    if "re_shape_deg" in s:
        row["re_shape_deg_median"] = s["re_shape_deg"]["median"]
    if "uncertainty" in s:
        row["uncertainty"] = s["uncertainty"]
    if "validity" in s:
        row["validity"] = s["validity"]
    if "heads" in s:
        row["heads"] = s["heads"]
    if "refine" in s:  # the networks alone beside the refined figures, and the share the refinement made worse
        r = s["refine"]
        row["refine"] = {"network_te_mm_median": r["network"]["te_mm_median"],
                         "network_re_deg_median": r["network"]["re_deg_median"], "applied_frac": r["applied_frac"],
                         "worse_frac": r["worse_frac"], "worse_flagged_frac": r["worse_flagged_frac"],
                         "ms_median": r["ms_median"]}
    for key in ("by_distance", "by_volume_third"):
        if key in s:
            row[key] = s[key]
    return row


PLANS = {"full": FULL, "quick": QUICK, "long": LONG}


def code_version() -> str:
    """The git commit of the discopose source tree (with ``-dirty`` for uncommitted changes), else the version."""
    import subprocess
    import discopose
    source = Path(discopose.__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=source, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "."], cwd=source, capture_output=True,
                               text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return f"discopose {discopose.__version__} (not a git checkout)"
    return commit + ("-dirty" if dirty else "")


def run_demo(out: str = "demo", plan: "str | DemoPlan" = "full", workers: int | None = None, publish: str = "tcp://127.0.0.1:5555",
             progress: bool = True, seed: int = 0, resume: bool = False, user_object=None,
             budget_min: float | None = None) -> dict:
    """Render, train, calibrate, evaluate and track in ``out``; returns (and writes) ``demo_summary.json``.

    ``budget_min``: replaces the plan's wall-clock budget (0: none; see DemoPlan.budget_min).

    ``user_object``: a :class:`~discopose.render.objects.UserObject` (``describe_user_object``) to run the
    same recipe on a user's mesh instead of the built-in cube; distances follow its size."""
    from discopose._hardware import describe_cpu
    from discopose.datasets.generate import generate_dataset
    from discopose.estimator.api import load
    from discopose.estimator.calibrate import calibrate_estimator
    from discopose.estimator.publisher import PoseSubscriber
    from discopose.estimator.quality import tracking_quality
    from discopose.estimator.sources import CameraSource
    from discopose.estimator.tracker import TrackConfig, Tracker
    from discopose.geometry.symmetry import Symmetry
    from discopose.evaluation import evaluate_checkpoint
    from discopose.models.train import TrainConfig, train_estimator
    from discopose.render.config import WORKING_VOLUME_M, RenderConfig
    from discopose.render.preview import render_preview
    from discopose.render.trajectory import render_trajectory_video

    if seed < 0:
        # Every dataset's seed is derived from it; a negative one would fail later, in a derived form.
        raise DiscoposeError(f"--seed {seed}: give a non-negative integer")
    if isinstance(plan, DemoPlan):
        name, plan = "custom", DemoPlan(**{**asdict(plan), "seed": seed})
    else:
        name, plan = plan, DemoPlan(**{**asdict(PLANS[plan]), "seed": seed})
    if budget_min is not None:
        plan = replace(plan, budget_min=budget_min or None)
    quick = name in ("quick", "custom")
    root = output_folder(out)
    timings = {}

    def stage(name):
        timings[name] = time.perf_counter()
        log.info("demo: %s", name)

    obj = user_object.render_overrides() if user_object is not None else []

    def size(px):
        width, height = (px, px) if isinstance(px, int) else px
        return [f"camera.width_px={width}", f"camera.height_px={height}"] + obj

    def distances(volume_m):  # a user's object: distances scale with its size, as in render_overrides
        ratio = user_object.size_ratio if user_object is not None else 1.0
        return [f"camera.distance_range_m=[{ratio * volume_m[0]:.5f}, {ratio * volume_m[1]:.5f}]"]

    volume, beyond = distances(WORKING_VOLUME_M), distances(BEYOND_VOLUME_M)
    crop = ["camera.aim=object", "output.depth=true"] + size(plan.crop_px)  # depth: the dense head's targets
    # Every dataset derives its seed from the demo seed, so `--seed` reruns the whole demo independently.
    sets = {
        "frames": (plan.frames, size(plan.frame_px) + TRAIN_LOOKS),
        # Camera-sized frames: they validate the locator (remapped) and calibrate the stated uncertainty.
        "frames_val": (plan.val, size(plan.test_px) + TRAIN_LOOKS),
        "crops": (plan.crops, crop + TRAIN_LOOKS),
        "crops_val": (plan.val, crop + TRAIN_LOOKS),
        "test": (plan.test, size(plan.test_px) + TRAIN_LOOKS + volume),
        "test_no_hand": (plan.test, size(plan.test_px) + TRAIN_LOOKS + NO_HAND + volume),
        "test_held_out": (plan.test, size(plan.test_px) + HELD_OUT_LOOKS + volume),
        # Dactyl's setting: three cameras around the workspace, calibrated (each sample's labels).
        "test_rig3": (plan.test, size(plan.test_px) + TRAIN_LOOKS + ["camera.count=3"] + volume),
        "calibration": (plan.calibration, size(plan.test_px) + CALIBRATION_LOOKS + beyond),
        "test_beyond": (plan.test, size(plan.test_px) + TRAIN_LOOKS + beyond),
    }
    stage("render")
    for offset, (split, (count, overrides)) in enumerate(sets.items()):
        config = RenderConfig.load(overrides=overrides + [f"seed={plan.seed * 100 + offset}"])
        generate_dataset(str(root / "data" / split), count, config, workers=workers, progress=progress)
    # The realistic proxy: another renderer (path traced, global illumination) through a webcam model.
    # It is only ever evaluated on, never trained or calibrated on.
    from discopose.realistic.pathtraced import render_realistic_dataset
    width, height = plan.realistic_px
    realistic = {"realistic": dict(num=plan.realistic, cameras=1, hand=True),
                 "realistic_no_hand": dict(num=plan.realistic_no_hand, cameras=1, hand=False),
                 "realistic_rig3": dict(num=plan.realistic_rig3, cameras=3, hand=True),
                 "realistic_heavy_grip": dict(num=plan.realistic_no_hand, cameras=1, hand=True, overrides=HEAVY_GRIP)}
    if user_object is not None and not user_object.textured:
        log.warning("demo: %s has vertex colours, no texture image; the realistic proxy renders textured objects "
                    "only, so its rows are left out", user_object.mesh)
        realistic = {}
    for offset, (split, kwargs) in enumerate(realistic.items()):
        kwargs = dict(kwargs)
        render_realistic_dataset(str(root / "data" / split), seed=plan.seed * 100 + 70 + offset, width_px=width,
                                 height_px=height, progress=progress,
                                 overrides=obj + volume + kwargs.pop("overrides", []), **kwargs)
    render_preview(RenderConfig.load(overrides=size(160) + TRAIN_LOOKS), 16, root / "disco_samples.png",
                   overlay=False)
    render_preview(RenderConfig.load(overrides=crop + TRAIN_LOOKS), 16, root / "crop_samples.png", overlay=False)

    stage("train")
    common = dict(batch_size=plan.batch_size, num_workers=1 if quick else 2, seed=plan.seed)
    data = root / "data"
    # --resume goes on from whatever the folder holds: a run stopped before its training began starts it.
    started = any((root / "run" / stage / "last" / "train_state.pt").is_file() for stage in ("locator", "crop"))
    locator_config = TrainConfig(stage="locator", epochs=plan.locator_epochs, **common)
    crop_config = TrainConfig(stage="crop", epochs=plan.crop_epochs, val_every_steps=plan.crop_val_every_steps,
                              **common)
    budget = _budget(plan, root, data, locator_config, crop_config, time.perf_counter() - timings["render"],
                     resume and started)
    if budget is not None:
        crop_config = replace(crop_config, epochs=budget["crop_epochs"])
    train_estimator(str(data / "frames"), str(data / "crops"), str(root / "run"), frames_val=str(data / "frames_val"),
                    crops_val=str(data / "crops_val"), locator_config=locator_config, crop_config=crop_config,
                    progress=progress, resume=resume and started)
    model = root / "run" / "best"
    stage("calibrate")
    # Calibrated as it runs, refinement on: load() then refines by default and the trust model reads its score
    # (a user's mesh too: the estimator folder carries it).
    calibrate_estimator(model, str(data / "calibration"), refine=True)

    stage("evaluate")

    def evaluate(dataset: str, report: str, estimator=model, headline: bool = False, **options) -> dict:
        return evaluate_checkpoint(str(estimator), str(data / dataset), str(root / report),
                                   plots=headline or plan.plots_every_set, **options)
    results = {
        "test": evaluate("test", "report", headline=True),
        "test_no_hand": evaluate("test_no_hand", "report_no_hand"),
        "test_held_out": evaluate("test_held_out", "report_held_out"),
        "test_beyond": evaluate("test_beyond", "report_beyond"),
        "rig3_fused": evaluate("test_rig3", "report_rig3"),
        "rig3_first_camera": evaluate("test_rig3", "report_rig3_cam0", fuse=False),
        # Ablation for free: the locator alone, i.e. one full-frame network without the zoom-in.
        "test_locator_only": evaluate("test", "report_locator_only", estimator=root / "run" / "locator" / "best"),
    }
    if realistic:
        results.update({
            "realistic": evaluate("realistic", "report_realistic", headline=True),
            "realistic_no_hand": evaluate("realistic_no_hand", "report_realistic_no_hand"),
            "realistic_heavy_grip": evaluate("realistic_heavy_grip", "report_realistic_heavy_grip"),
            "realistic_rig3_fused": evaluate("realistic_rig3", "report_realistic_rig3"),
            "realistic_rig3_first_camera": evaluate("realistic_rig3", "report_realistic_rig3_cam0", fuse=False)})

    stage("track")
    clip_config = RenderConfig.load(overrides=size(plan.test_px) + TRAIN_LOOKS + [f"seed={plan.seed * 100 + 50}"])
    clip = render_trajectory_video(clip_config, root / "clip.mp4", num_frames=plan.clip_frames, seed=3)
    estimator = load(model)
    camera_name, video = next(iter(clip.videos.items()))
    source = CameraSource(camera_name, str(video))  # realtime: paced and dropping frames, like a webcam
    from discopose.camera import CameraModel
    tracker = Tracker(estimator, {camera_name: source}, {camera_name: CameraModel.load(clip.cameras[camera_name])},
                      config=TrackConfig(publish=publish, record=str(root / "poses.jsonl"),
                                         record_video=str(root / "tracking_overlay.mp4")))
    received = []
    stop = threading.Event()
    address = tracker.publisher.address if tracker.publisher else None

    def listen():  # the policy side: a plain subscriber on localhost
        with PoseSubscriber(address) as subscriber:
            while not stop.is_set():
                if subscriber.receive(timeout_s=0.1):
                    received.append(time.monotonic())
    listener = threading.Thread(target=listen, daemon=True)
    if address:
        listener.start()
        time.sleep(0.2)
    stats = tracker.run()
    stop.set()
    if address:
        listener.join(timeout=2)
    symmetries = Symmetry.from_dict(estimator.object["symmetry"]).matrices()
    quality = tracking_quality(root / "poses.jsonl", clip.ground_truth, symmetries if len(symmetries) > 1 else None,
                               # Skip the filter's warm-up, but on a slow machine (a realtime clip drops the frames it
                               # cannot keep up with) never more than a quarter of what was published.
                               skip=min(10, plan.clip_frames // 4, stats["messages"] // 4))
    stage("done")

    names = list(timings)
    durations = {a: round(timings[b] - timings[a], 1) for a, b in zip(names, names[1:])}
    summary = {
        "plan": {"name": name, **asdict(plan)}, "budget": budget, "code_version": code_version(),
        "object": estimator.object["name"] if user_object is None else {
            "mesh": user_object.mesh, "scale_to_m": user_object.scale_to_m, "diameter_m": user_object.diameter_m,
            "symmetry": user_object.symmetry.to_dict(), "notes": user_object.notes},
        "seconds": durations, "total_seconds": round(sum(durations.values()), 1), "cpu": describe_cpu(),
        "results": {name: _headline(result) for name, result in results.items()},
        "tracking": {**{k: stats[k] for k in ("messages", "hz", "latency_ms_p50", "latency_ms_p99")},
                     "subscriber_received": len(received), "quality": quality},
        "artefacts": {"samples": str(root / "disco_samples.png"), "crops": str(root / "crop_samples.png"),
                      "report": str(root / "report" / "report.html"), "model": str(model),
                      "tensorboard": str(root / "run" / "crop" / "tensorboard"),
                      "clip": str(video), "overlay_video": str(root / "tracking_overlay.mp4"),
                      "poses": str(root / "poses.jsonl")},
    }
    atomic_write_json(root / "demo_summary.json", summary)
    return summary


def _budget(plan: DemoPlan, root: Path, data: Path, locator_config, crop_config, elapsed_s: float,
            resumed: bool) -> dict | None:
    """Sizes the crop stage to ``plan.budget_min`` (budgeted_crop_epochs) from both stages' training rates measured
    here; kept in run/budget.json, so that --resume goes on with the schedule the run started with."""
    if plan.budget_min is None:
        return None
    from discopose.models.train import measure_training_rate
    saved = root / "run" / "budget.json"
    if resumed and saved.is_file():
        return json.loads(saved.read_text())
    def rate(dataset: str, config, images: int, epochs: int) -> float:
        # Three windows of up to 8 steps, each 1/40 of the stage's training steps (down to one step): a short
        # stage is not measured for longer than it trains (the quick plan's fixed 8-step windows were 3x its training).
        steps = max(1, min(8, images * epochs // config.batch_size // 40))
        return measure_training_rate(str(data / dataset), config, steps=steps, warmup=min(3, steps))
    budget = budgeted_crop_epochs(plan, elapsed_s, rate("frames", locator_config, plan.frames, plan.locator_epochs),
                                  rate("crops", crop_config, plan.crops, plan.crop_epochs))
    log.info("demo: budget %g min: this CPU trains %.0f frames/s and %.0f crops/s, so the crop stage gets %d of %d "
             "epochs (projected %.1f min%s)", plan.budget_min, budget["locator_images_s"], budget["crop_images_s"],
             budget["crop_epochs"], plan.crop_epochs, budget["projected_min"],
             "" if budget["fits"] else ": over budget even at the fewest epochs")
    atomic_write_json(saved, budget)
    return budget


def format_distance_bands(rows: list[dict]) -> str:
    """One line: per camera-distance bin, the median position error (mm and % of the distance), rotation
    error, and the share of gross errors flagged invalid where there were any."""
    def band(row):
        low, high = row["distance_m"]
        text = (f"{low:g}-{'' if high is None else f'{high:g}'} m {row['te_mm_median']:.0f} mm "
                f"({100 * row['te_rel_median']:.1f}%) {row['re_deg_median']:.0f} deg")
        if row.get("gross_count"):
            text += f", {100 * row['gross_invalid_frac']:.0f}% of {row['gross_count']} gross flagged"
        return text + f" [n={row['count']}]"
    return "; ".join(band(row) for row in rows)


def format_summary(summary: dict) -> str:
    track = summary["tracking"]
    quality = track["quality"]
    lines = [f"demo finished in {summary['total_seconds'] / 60:.1f} min ({json.dumps(summary['seconds'])}), "
             f"seed {summary['plan']['seed']}"]
    budget = summary.get("budget")
    if budget:
        lines.append(f"budget {budget['budget_min']:g} min: crop stage {budget['crop_epochs']} of "
                     f"{budget['planned_crop_epochs']} epochs at {budget['crop_images_s']:.0f} crops/s "
                     f"(projected {budget['projected_min']:.1f} min)")
    for name, row in summary["results"].items():
        chance = row["chance"]
        lines.append(f"{name:28s} median {row['te_mm_median']:5.1f} mm {row['re_deg_median']:5.1f} deg, "
                     f"p90 {row['te_mm_p90']:5.1f} mm {row['re_deg_p90']:5.1f} deg, "
                     f"{100 * row['re_within_30deg']:3.0f}% within 30 deg "
                     f"(chance: {chance['te_mm_median']:.1f} mm, {chance['re_deg_median']:.1f} deg, "
                     f"{100 * chance['re<30deg']:.0f}%)")
        if "uncertainty" in row and "validity" in row:
            u, v = row["uncertainty"], row["validity"]
            pct = lambda x: "-" if x is None else f"{100 * x:.0f}%"  # noqa: E731
            axes = "/".join(pct(x) for x in u["position_within_1sigma_per_axis"])
            lines.append(f"{'':28s} 1 sigma covers {axes} (x/y/z), rotation within 2 sigma {pct(u['rotation_within_2sigma'])}; "
                         f"valid {pct(v['valid_frac'])}: good ones valid {pct(v['good_valid_frac'])}, "
                         f"gross ones invalid {pct(v['gross_invalid_frac'])} ({v['gross_count']} gross)")
        if "refine" in row:
            r = row["refine"]
            flagged = "" if r["worse_flagged_frac"] is None else f", {100 * r['worse_flagged_frac']:.0f}% of those flagged"
            lines.append(f"{'':28s} networks alone {r['network_te_mm_median']:.1f} mm {r['network_re_deg_median']:.1f} deg; "
                         f"refinement taken on {100 * r['applied_frac']:.0f}%, {100 * r['worse_frac']:.0f}% made worse "
                         f"by > 5 deg{flagged} ({r['ms_median']:.0f} ms)")
        if "heads" in row:
            from discopose.models.report import format_rotation_heads
            lines.append(f"{'':28s} rotation per head: " + format_rotation_heads(row["heads"]))
        if row.get("by_distance"):
            lines.append(f"{'':28s} by distance: " + format_distance_bands(row["by_distance"]))
    lines += [
        f"tracking: {track['hz']:.1f} Hz, latency p50 {track['latency_ms_p50']:.1f} ms p99 {track['latency_ms_p99']:.1f} ms, "
        f"{track['messages']} poses published, {track['subscriber_received']} received by a localhost subscriber",
        f"tracking error raw -> filtered: {quality['raw']['te_mm_median']:.1f} -> {quality['filtered']['te_mm_median']:.1f} mm, "
        f"{quality['raw']['re_deg_median']:.1f} -> {quality['filtered']['re_deg_median']:.1f} deg; "
        f"jitter {quality['raw']['jitter_mm'] or 0:.2f} -> {quality['filtered']['jitter_mm'] or 0:.2f} mm/frame",
    ]
    lines += [f"  {name:13s} {path}" for name, path in summary["artefacts"].items()]
    return "\n".join(lines)
