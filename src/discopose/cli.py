"""The ``discopose`` command line. Every subcommand maps onto a library function of the same name."""
from __future__ import annotations

import argparse
import logging
import signal
import sys

from discopose._errors import DiscoposeError

log = logging.getLogger("discopose")


def _render_overrides(args) -> list[str]:
    overrides = list(args.set or [])
    if args.object:
        overrides.append(f"object.mesh={args.object}")
    if args.object_scale is not None:
        overrides.append(f"object.mesh_scale_to_m={args.object_scale}")
    if args.symmetry:
        overrides.append(f"object.symmetry.kind={args.symmetry}")
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    return overrides


def _add_render_args(sub) -> None:
    p = sub.add_parser("render", help="render a domain-randomized dataset (or a preview sheet)")
    p.add_argument("--out", required=True, help="output folder or fsspec URL (or PNG path with --preview)")
    p.add_argument("--num", type=int, default=1000, help="number of samples (default 1000)")
    p.add_argument("--config", help="YAML/JSON render config (see docs/render_config.md)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field, e.g. camera.count=3")
    p.add_argument("--seed", type=int, help="dataset seed (same as --set seed=N)")
    p.add_argument("--object", help="object mesh .ply/.obj/.glb (default: the built-in lettered 57 mm cube)")
    p.add_argument("--object-scale", type=float, help="mesh units to metres, e.g. 0.001 for BOP models in mm")
    p.add_argument("--symmetry", choices=["none", "cube", "discrete", "axis"], help="object symmetry group")
    p.add_argument("--workers", type=int, help="render processes (default: one per CPU core)")
    p.add_argument("--backend", default="local", choices=["local", "ray"], help="local processes or a Ray cluster")
    p.add_argument("--address", help="Ray cluster address, e.g. ray://head:10001 (default: start a local Ray)")
    p.add_argument("--preview", type=int, metavar="N", help="render N samples into a contact sheet PNG at --out")
    p.add_argument("--overlay", action="store_true", help="draw labels on the preview")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_render)


def cmd_render(args) -> None:
    from discopose.render.config import RenderConfig

    config = RenderConfig.load(args.config, _render_overrides(args))
    if args.preview is not None:
        if args.preview < 1:
            raise DiscoposeError(f"--preview {args.preview}: give the number of samples to draw, at least 1")
        from discopose.render.preview import render_preview
        path = render_preview(config, args.preview, args.out, overlay=args.overlay)
        print(f"wrote preview of {args.preview} samples to {path}")
        return
    from discopose.datasets.generate import generate_dataset
    manifest = generate_dataset(args.out, args.num, config, workers=args.workers, backend=args.backend,
                                address=args.address, progress=not args.quiet)
    rate = manifest["num_samples"] / max(manifest["render_seconds"], 1e-9)
    print(f"wrote {manifest['num_samples']} samples in {len(manifest['shards'])} shards to {args.out} "
          f"({manifest['render_seconds']:.1f} s, {rate:.1f} img/s this run)")


def _add_inspect_args(sub) -> None:
    p = sub.add_parser("inspect", help="summarize a dataset and draw labelled samples")
    p.add_argument("dataset", help="dataset folder or URL")
    p.add_argument("--num", type=int, default=8, help="samples to draw (default 8)")
    p.add_argument("--out", default="inspect.png", help="PNG to write (default inspect.png)")
    p.add_argument("--verify", action="store_true", help="check every shard's sha256 against the manifest")
    p.set_defaults(func=cmd_inspect)


def cmd_inspect(args) -> None:
    import numpy as np

    from discopose._io import atomic_write_bytes
    from discopose.datasets.reader import check_shards, iter_samples, open_dataset
    from discopose.viz import contact_sheet, draw_labels, encode_png

    info = open_dataset(args.dataset, require_complete=False)
    print(info.summary())
    if args.verify:
        if not info.manifest.get("complete"):
            raise DiscoposeError(f"{args.dataset} is incomplete (an interrupted render); rerun the same "
                                 "`discopose render` command to finish it, then verify")
        check_shards(info, verify_hashes=True)
        print(f"verified    {len(info.manifest['shards'])} shards: sha256 and sample counts match")
    keypoints = np.asarray(info.manifest["object"]["keypoints_m"])
    tiles = []
    for sample in iter_samples(info, limit=args.num):
        for name, view in sample["views"].items():
            tiles.append(draw_labels(view["rgb"], sample["labels"]["cameras"][name], keypoints))
    if tiles:
        atomic_write_bytes(args.out, encode_png(contact_sheet(tiles, columns=len(info.camera_names) *
                                                              max(1, int(np.sqrt(args.num))))))
        print(f"wrote {len(tiles)} labelled views to {args.out}")


CROP_ONLY = ("rotation_head", "dense_stride")


def _add_train_args(sub) -> None:
    p = sub.add_parser("train", help="train a pose estimator on rendered shards (torchrun for several GPUs)")
    p.add_argument("--data", required=True, help="training dataset (from discopose render)")
    p.add_argument("--val", help="validation dataset")
    p.add_argument("--out", required=True, help="run folder: best/, last/, tensorboard/")
    p.add_argument("--config", help="YAML/JSON TrainConfig")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a TrainConfig field")
    p.add_argument("--backbone", help="torchvision backbone, e.g. mobilenet_v2, resnet18")
    p.add_argument("--pretrained", choices=["imagenet", "none"])
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", dest="batch_size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--num-workers", dest="num_workers", type=int)
    p.add_argument("--crops", help="zoom-in crops (render --set camera.aim=object): train a two-stage estimator, "
                   "--data being the locator's full frames")
    p.add_argument("--crops-val", dest="crops_val", help="validation crops")
    p.add_argument("--calib", help="frames of another family than training (other textures, lights, sensor effects) "
                   "to calibrate the stated uncertainty and validity flag on (default: --val)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> None:
    from discopose.config import apply_overrides, from_dict, load_mapping
    from discopose.models.train import TrainConfig, train, train_estimator

    data = load_mapping(args.config) if args.config else {}
    for name in ("backbone", "pretrained", "epochs", "batch_size", "lr", "num_workers"):
        value = getattr(args, name)
        if value is not None:
            data[name] = value
    data = apply_overrides(data, args.set or [])
    if args.crops:
        metas = train_estimator(args.data, args.crops, args.out, frames_val=args.val, crops_val=args.crops_val,
                                # The crop network's heads are the crop stage's knobs; the locator keeps its own.
                                locator_config=from_dict(TrainConfig, {**{k: v for k, v in data.items()
                                                                          if k not in CROP_ONLY}, "stage": "locator"}),
                                crop_config=from_dict(TrainConfig, {**data, "stage": "crop"}),
                                resume=args.resume, progress=not args.quiet)
        if args.calib or args.val:
            from discopose.estimator.calibrate import calibrate_estimator
            calibrate_estimator(f"{args.out}/best", args.calib or args.val)
        print(f"estimator in {args.out}/best (stages in {args.out}/locator and {args.out}/crop)")
    else:
        metas = {"": train(args.data, args.out, val=args.val, config=from_dict(TrainConfig, data),
                           resume=args.resume, progress=not args.quiet)}
        print(f"checkpoints in {args.out}/best and {args.out}/last")
    for stage, meta in metas.items():
        metrics = meta.get("val_metrics") or {}
        if metrics:
            print(f"{stage or meta['spec']['stage']} validation (its own view): median {metrics['te_mm']['median']:.1f} mm, "
                  f"{metrics['re_deg']['median']:.1f} deg, ADD(-S) < 10% d: {100 * metrics['success']['add(-s)<10%d']:.0f}%")


def _add_eval_args(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint: metrics.json + report.html")
    p.add_argument("--model", required=True, help="estimator folder (a run's best/) or a shipped model: cube")
    p.add_argument("--data", help="dataset to evaluate on")
    p.add_argument("--bop", help="BOP folder to evaluate on instead (writes bop_results.csv too)")
    p.add_argument("--bop-results", action="store_true",
                   help="also write bop_results.csv (BOP19: scene_id,im_id,obj_id,score,R,t,time) for bop_toolkit")
    p.add_argument("--out", help="report folder (default MODEL/eval)")
    p.add_argument("--limit", type=int, help="evaluate at most N samples")
    p.add_argument("--single-camera", action="store_true",
                   help="several-camera data: score the first camera alone instead of the fused world pose")
    p.add_argument("--refine", action=argparse.BooleanOptionalAction, default=None,
                   help="align the object's mesh to each full-resolution image after the networks, and report what "
                        "it changed (metrics.json summary.refine); default: as the estimator was calibrated")
    p.add_argument("--no-plots", dest="plots", action="store_false",
                   help="the report's tables and worst cases without its error plots (faster for many evaluations)")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args) -> None:
    from discopose.evaluation import evaluate_checkpoint

    if not args.data and not args.bop:
        raise DiscoposeError("give --data (a discopose dataset) or --bop (a BOP folder)")
    from discopose.pretrained import is_shipped, resolve_model
    model = resolve_model(args.model)
    out = args.out or (f"eval_{model.name}" if is_shipped(model) else str(model / "eval"))
    if args.limit is not None and args.limit < 1:
        raise DiscoposeError(f"--limit {args.limit}: give a positive number of samples (or leave it out for all)")
    result = evaluate_checkpoint(str(model), args.data, out, bop=args.bop, limit=args.limit,
                                 fuse=not args.single_camera, bop_results=args.bop_results, refine=args.refine,
                                 plots=args.plots)
    s, b = result["summary"], result["baseline"]
    print(f"{s['count']} samples ({result['frame']} frame): median {s['te_mm']['median']:.1f} mm, "
          f"{s['re_deg']['median']:.1f} deg, {100 * s['success']['re<30deg']:.0f}% within 30 deg, "
          f"ADD(-S) < 10% d: {100 * s['success']['add(-s)<10%d']:.1f}%; {s['ms_per_frame']['median']:.0f} ms a frame")
    if "refine" in s:
        r = s["refine"]
        flagged = "" if r["worse_flagged_frac"] is None else f", {100 * r['worse_flagged_frac']:.0f}% of them flagged"
        print(f"refinement taken on {100 * r['applied_frac']:.0f}% of the frames ({r['ms_median']:.0f} ms median); "
              f"networks alone: {r['network']['te_mm_median']:.1f} mm, {r['network']['re_deg_median']:.1f} deg; "
              f"{100 * r['better_frac']:.0f}% made better and {100 * r['worse_frac']:.0f}% worse by > "
              f"{r['worse_deg']:.0f} deg{flagged}")
    print(f"chance (mean-pose baseline, positions from {b['positions_from']}): {b['te_mm_median']:.1f} mm, "
          f"{b['re_deg_median']:.1f} deg, {100 * b['re<30deg']:.0f}% within 30 deg")
    print(f"wrote {out}/metrics.json and {out}/report.html"
          + (f", and {out}/bop_results.csv (BOP19 format)" if args.bop or args.bop_results else ""))


def _add_cube_args(sub) -> None:
    p = sub.add_parser("cube", help="the built-in cube in the physical world")
    steps = p.add_subparsers(dest="cube_step", required=True)
    q = steps.add_parser("print", help="a printable net of the cube (PDF at exact scale, scale bar, glue tabs)")
    q.add_argument("--out", required=True, help="PDF to write, e.g. cube.pdf")
    q.add_argument("--size", type=float, default=0.057, help="edge in metres (default 0.057, what the shipped model knows)")
    q.add_argument("--paper", choices=["a4", "letter"], default="a4")
    q.set_defaults(func=cmd_cube_print)


def cmd_cube_print(args) -> None:
    from discopose.printing import write_cube_pdf
    layout = write_cube_pdf(args.out, size_m=args.size, paper=args.paper)
    print(f"wrote {args.out}: print at 100% (actual size) on {args.paper}; each face must measure "
          f"{layout['edge_mm']:.1f} mm and the scale bar 50 mm. Cut, fold, glue; then track it with --model cube"
          + (" (the shipped model knows the 57 mm cube; another size needs its own training)"
             if abs(args.size - 0.057) > 1e-6 else ""))


def _add_pack_args(sub) -> None:
    p = sub.add_parser("pack", help="make a shipped model (fp16, model card) from a finished demo run")
    p.add_argument("--demo", required=True, help="the demo's --out folder")
    p.add_argument("--name", default="cube", help="the name users load it by (default cube)")
    p.add_argument("--out", help="where to write (default: inside the package, src/discopose/pretrained/NAME)")
    p.add_argument("--command", help="the command that trained it, for the model card (default: the demo's)")
    p.add_argument("--code-version", help="git commit that trained it (default: recorded by the demo)")
    p.add_argument("--no-onnx", action="store_true",
                   help="skip the ONNX networks (export and parity check, ~20 s): the copy runs on "
                        "backend='torch' only")
    p.set_defaults(func=cmd_pack)


def cmd_pack(args) -> None:
    import json
    from pathlib import Path

    from discopose.pretrained import SHIPPED_DIR, folder_mb, pack_estimator
    demo = Path(args.demo)
    summary_path = demo / "demo_summary.json"
    if not summary_path.is_file():
        raise DiscoposeError(f"{summary_path} does not exist; give the --out folder of a finished `discopose demo`")
    summary = json.loads(summary_path.read_text())
    code_version = args.code_version or summary.get("code_version")
    if not code_version:
        raise DiscoposeError(f"{summary_path} does not record the code version; give --code-version (git commit)")
    plan = summary["plan"]
    from discopose._hardware import describe_cpu
    from discopose.models.checkpoint import read_meta
    locator = read_meta(demo / "run" / "best" / "locator")
    curve = demo / "run" / "crop" / "val_curve.jsonl"
    card = {"name": args.name, "trained_by": args.command or f"discopose demo --{plan['name']} --seed {plan['seed']}",
            "seed": plan["seed"], "code_version": code_version, "plan": plan,
            # A budgeted demo trained the epochs its budget chose, not the plan's.
            "crop_views": plan["crops"] * (summary.get("budget") or {}).get("crop_epochs", plan["crop_epochs"]),
            "budget": summary.get("budget"),
            "trained_distances_m": (locator.get("train_render_config") or {}).get("camera", {}).get("distance_range_m"),
            "seconds": summary.get("seconds"),
            # The CPU the demo ran on (recorded by it); older summaries lack it: then the CPU that packed it.
            "cpu": summary.get("cpu") or f"packed on: {describe_cpu()}",
            "figures": summary["results"], "tracking": summary.get("tracking"),
            # The crop stage's validation against crop views seen (TrainConfig.val_every_steps).
            "val_curve": [{k: row[k] for k in ("images_seen", "te_mm_median", "re_deg_median", "reported_re_deg_median")}
                          for row in map(json.loads, curve.read_text().splitlines())] if curve.is_file() else None}
    out = Path(args.out) if args.out else SHIPPED_DIR / args.name
    pack_estimator(demo / "run" / "best", out, card, onnx=not args.no_onnx)
    print(f"packed {demo / 'run' / 'best'} as {out} ({folder_mb(out):.1f} MB, fp16 weights); load it with "
          f"discopose.load({args.name!r})" if not args.out else f"packed into {out} ({folder_mb(out):.1f} MB)")


def _add_export_args(sub) -> None:
    p = sub.add_parser("export", help="export an estimator's networks to ONNX (model.onnx each) for onnxruntime")
    p.add_argument("--model", required=True, help="estimator folder (or one checkpoint)")
    p.set_defaults(func=cmd_export)


def cmd_export(args) -> None:
    from discopose.models.export import export_estimator
    for path in export_estimator(args.model):
        print(f"wrote {path}")


def _add_bop_export_args(sub) -> None:
    p = sub.add_parser("bop-export", help="write a dataset's view of one camera as a BOP scene folder")
    p.add_argument("dataset")
    p.add_argument("--out", required=True)
    p.add_argument("--camera", help="camera name (default: the first)")
    p.set_defaults(func=cmd_bop_export)


def cmd_bop_export(args) -> None:
    from discopose.datasets.bop import export_bop
    print(f"wrote BOP scene to {export_bop(args.dataset, args.out, camera=args.camera)}")


def _add_calibrate_args(sub) -> None:
    p = sub.add_parser("calibrate", help="camera calibration: board, intrinsics, extrinsics")
    steps = p.add_subparsers(dest="step", required=True)
    q = steps.add_parser("board", help="a printable board: PDF at exact scale, or PNG")
    q.add_argument("--type", dest="board_type", choices=["chessboard", "charuco"], default="chessboard")
    q.add_argument("--board", help="full spec, e.g. chessboard:9x6:0.025 or charuco:7x5:0.04:0.03")
    q.add_argument("--px-per-square", type=int, default=200, help="PNG only: pixels per square")
    q.add_argument("--paper", choices=["a4", "letter"], default="a4", help="PDF only: the paper size")
    q.add_argument("--out", required=True, help="board.pdf (exact scale, with a scale bar) or board.png")
    q = steps.add_parser("capture", help="save views of the board from a camera, whenever it is fully seen")
    q.add_argument("--camera", default="0", help="device index, video file, image folder or URL (default 0)")
    q.add_argument("--board", help="spec as printed (default chessboard:9x6:0.025)")
    q.add_argument("--type", dest="board_type", choices=["chessboard", "charuco"], default="chessboard")
    q.add_argument("--out", default="calib", help="folder for view_NN.png (default calib)")
    q.add_argument("--count", type=int, default=20, help="views to save (default 20)")
    q.add_argument("--interval", type=float, default=1.0, help="seconds between saved views (default 1)")
    q.add_argument("--timeout", type=float, default=300.0, help="give up after this many seconds (default 300)")
    q = steps.add_parser("intrinsics", help="K and distortion from board images -> camera file")
    q.add_argument("--images", required=True, help="glob pattern, quoted: 'cam_left/*.jpg'")
    q.add_argument("--board", required=True, help="e.g. chessboard:9x6:0.025")
    q.add_argument("--name", default="camera", help="camera name stored in the file")
    q.add_argument("--out", required=True, help="camera file (.yaml or .json)")
    q = steps.add_parser("extrinsics", help="world_from_camera from one image of a board at a known pose")
    q.add_argument("--camera", required=True, help="camera file with intrinsics")
    q.add_argument("--image", required=True)
    q.add_argument("--board", required=True)
    q.add_argument("--board-pose", help="JSON/YAML with world_from_board (4x4, metres); default: board = world")
    q.add_argument("--out", help="camera file to write (default: update --camera)")
    p.set_defaults(func=cmd_calibrate)


def cmd_calibrate(args) -> None:
    from discopose._io import atomic_write_bytes
    from discopose.calibration.boards import BoardSpec, draw_board
    from discopose.calibration.intrinsics import calibrate_extrinsics, calibrate_intrinsics
    from discopose.camera import CameraModel

    if args.step in ("board", "capture") and not args.board:
        args.board = "chessboard:9x6:0.025" if args.board_type == "chessboard" else "charuco:7x5:0.04:0.03"
    board = BoardSpec.parse(args.board)
    if args.step == "board" and str(args.out).lower().endswith(".pdf"):
        from discopose.printing import write_board_pdf
        write_board_pdf(args.out, board, paper=args.paper)
        width_m, height_m = board.size_m
        print(f"wrote {args.out}: print at 100% (actual size); each square must measure {board.square_m * 1000:.1f} mm "
              f"(board {width_m * 1000:.0f} x {height_m * 1000:.0f} mm)")
    elif args.step == "board":
        import cv2
        if args.px_per_square < 1:
            raise DiscoposeError(f"--px-per-square {args.px_per_square}: give a positive number of pixels, e.g. 200")
        image = draw_board(board, px_per_square=args.px_per_square, margin_px=args.px_per_square // 2)
        atomic_write_bytes(args.out, cv2.imencode(".png", image)[1].tobytes())
        width_m, height_m = board.size_m
        print(f"wrote {args.out}: print it so the squares measure {board.square_m * 1000:.1f} mm "
              f"(board {width_m * 1000:.0f} x {height_m * 1000:.0f} mm without margin)")
    elif args.step == "capture":
        from discopose.calibration.capture import capture_board_views
        saved = capture_board_views(args.camera, board, args.out, count=args.count, interval_s=args.interval,
                                    timeout_s=args.timeout)
        print(f"saved {len(saved)} views of {board} to {args.out}; next: discopose calibrate intrinsics "
              f"--images '{args.out}/*.png' --board {board} --out camera.yaml")
    elif args.step == "intrinsics":
        result = calibrate_intrinsics(args.images, board, name=args.name)
        result.camera.save(args.out)
        for path, reason in result.rejected.items():
            print(f"rejected {path}: {reason}")
        K = result.camera.K
        print(f"{len(result.per_image_rms_px)} views: fx {K[0, 0]:.2f} fy {K[1, 1]:.2f} cx {K[0, 2]:.2f} cy {K[1, 2]:.2f}, "
              f"RMS {result.camera.rms_px:.3f} px -> {args.out}")
    else:
        import json
        import numpy as np
        world_from_board = None
        if args.board_pose:
            from discopose.camera import rigid_transform
            from discopose.config import load_mapping
            data = load_mapping(args.board_pose, what="board pose file")
            if "world_from_board" not in data:
                raise DiscoposeError(f"{args.board_pose} must hold world_from_board: a 4x4 matrix (metres)")
            world_from_board = rigid_transform(data["world_from_board"], "world_from_board", args.board_pose)
        camera = calibrate_extrinsics(CameraModel.load(args.camera), args.image, board, world_from_board)
        camera.save(args.out or args.camera)
        print(f"world_from_camera (RMS {camera.meta['extrinsics_rms_px']:.3f} px) -> {args.out or args.camera}\n"
              f"{json.dumps(np.round(camera.world_from_camera, 5).tolist())}")


def _named(items: list[str] | None, flag: str) -> dict[str, str]:
    named = {}
    for item in items or []:
        if "=" not in item:
            raise DiscoposeError(f"{flag} {item!r} must look like NAME=VALUE, e.g. {flag} cam0=0")
        name, value = item.split("=", 1)
        named[name] = value
    return named


def _add_track_args(sub) -> None:
    p = sub.add_parser("track", help="track the object live on camera feeds and publish poses over ZeroMQ")
    p.add_argument("--model", required=True, help="estimator folder (a run's best/) or a shipped model: cube")
    p.add_argument("--camera", action="append", metavar="NAME=SOURCE",
                   help="device index, video file, RTSP/HTTP URL or image folder, e.g. cam0=0")
    p.add_argument("--calib", action="append", metavar="NAME=FILE", help="camera file from discopose calibrate")
    p.add_argument("--assume-nominal", action="store_true",
                   help="no --calib: assume the model's camera rescaled to the frame size (warns; same lens only)")
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx"],
                   help="auto (default): onnxruntime when the model has exported networks (the shipped one does)")
    p.add_argument("--publish", default="tcp://127.0.0.1:5555", help="ZeroMQ PUB address (default localhost:5555)")
    p.add_argument("--no-publish", action="store_true")
    p.add_argument("--record", help="write every pose message to this JSON-lines file")
    p.add_argument("--record-video", help="write an MP4 with the pose drawn on the first camera")
    p.add_argument("--show", action="store_true", help="show a window (needs a display)")
    p.add_argument("--view", nargs="?", const="spawn", metavar="FILE.rrd",
                   help="see what the tracker believes in a Rerun viewer (cameras, frames, pose, uncertainty, "
                        "validity, latency); with a path, record a .rrd instead")
    p.add_argument("--every-frame", action="store_true", help="process every frame of files (offline evaluation)")
    p.add_argument("--fast-track", action="store_true",
                   help="while the track is sure, aim the crops at the filter's prediction and skip the locator")
    p.add_argument("--refine", action=argparse.BooleanOptionalAction, default=None,
                   help="align the object's mesh to each full-resolution frame after the networks (several cameras: "
                        "jointly, in the world frame); default: as the estimator was calibrated")
    p.add_argument("--no-follow", action="store_true",
                   help="run the networks on every frame instead of aligning the mesh from the last frame's pose "
                        "(the default where the estimator refines: networks every --redetect-every frames)")
    p.add_argument("--redetect-every", type=int, default=10, metavar="N",
                   help="while following, run the networks at least every N frames (default 10)")
    p.add_argument("--networks-in-frame", action="store_true",
                   help="live cameras: run the networks in the frame loop (a frame waits for them) instead of on a "
                        "worker thread beside it while the loop follows (the default)")
    p.add_argument("--max-frames", type=int)
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.set_defaults(func=cmd_track)


def cmd_track(args) -> None:
    from discopose.camera import CameraModel
    from discopose.estimator.api import load
    from discopose.estimator.sources import CameraSource
    from discopose.estimator.tracker import TrackConfig, Tracker

    estimator = load(args.model, backend=args.backend, refine=args.refine)
    cameras = _named(args.camera, "--camera")
    if not cameras:
        raise DiscoposeError("give at least one --camera NAME=SOURCE, e.g. --camera cam0=0")
    calibrations = {name: CameraModel.load(path) for name, path in _named(args.calib, "--calib").items()}
    mode = "lockstep" if args.every_frame else "realtime"
    sources = {}
    try:
        for name, uri in cameras.items():
            sources[name] = CameraSource(name, uri, mode=mode)
        config = TrackConfig(publish=None if args.no_publish else args.publish, record=args.record,
                             record_video=args.record_video, show=args.show, max_frames=args.max_frames or 0,
                             duration_s=args.duration or 0.0, reuse_track=args.fast_track, view=args.view,
                             follow=not args.no_follow, redetect_every=args.redetect_every,
                             networks_in_background=not args.networks_in_frame)
        tracker = Tracker(estimator, sources, calibrations, config, assume_nominal=args.assume_nominal)
    except BaseException:
        for source in sources.values():
            source.close()
        raise
    if tracker.publisher is not None:
        print(f"publishing poses on {tracker.publisher.address} (topic 'pose', schema discopose.pose/2)")
    stats = tracker.run()
    print(f"{stats['messages']} poses at {stats['hz']:.1f} Hz, capture->publish latency p50 "
          f"{stats['latency_ms_p50'] or 0:.1f} ms, p99 {stats['latency_ms_p99'] or 0:.1f} ms"
          + (f", {stats['followed']} followed by the mesh alone" if estimator.refines else ""))
    for path in (args.record, args.record_video, args.view if args.view != "spawn" else None):
        if path:
            print(f"wrote {path}" + (f" (open it with: rerun {path})" if path == args.view else ""))


def _add_demo_args(sub) -> None:
    p = sub.add_parser("demo", help="the whole pipeline on embedded defaults: render, train, evaluate, track")
    p.add_argument("--out", default="demo", help="output folder (default ./demo)")
    p.add_argument("--quick", action="store_true", help="a few-minute version (what the tests run)")
    p.add_argument("--long", action="store_true", help="the long CPU recipe: 240,000 crop views (about 2 h on an avx512 2-core CPU)")
    p.add_argument("--seed", type=int, default=0, help="seed of every dataset and training run (default 0)")
    p.add_argument("--workers", type=int, help="render processes (default: one per core)")
    p.add_argument("--publish", default="tcp://127.0.0.1:5555", help="ZeroMQ address for the pose stream")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted demo in the same --out: finished datasets and training stages are kept")
    p.add_argument("--budget", type=float, metavar="MIN",
                   help="wall-clock budget in minutes (default: 30, none with --quick and --long): after rendering, the training "
                        "rate is measured and, on a CPU too slow for the whole recipe, the crop stage trains fewer "
                        "epochs (down to 4 of 5); 0 keeps the whole recipe")
    p.add_argument("--object", help="your own mesh (.ply/.obj/.glb/.gltf/.stl/.off; a BOP models/obj_NNNNNN.ply reads "
                                    "models_info.json beside it) instead of the built-in cube")
    p.add_argument("--object-scale", type=float, help="mesh units to metres (default: BOP models and meshes over 5 "
                                                      "units across are millimetres, 0.001; otherwise metres, 1)")
    p.add_argument("--symmetry", choices=["none", "axis", "axis:x", "axis:y", "axis:z", "cube", "discrete"],
                   help="the object's symmetry (default: models_info.json's for BOP models, else none); axis = z")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> None:
    from discopose.demo import format_summary, run_demo
    plan = "quick" if args.quick else ("long" if args.long else "full")
    user_object = None
    if args.object:
        from discopose.render.objects import describe_user_object
        user_object = describe_user_object(args.object, args.object_scale, args.symmetry)
        print(f"object {args.object}: {user_object.diameter_m * 1000:.0f} mm across; " + "; ".join(user_object.notes))
    elif args.object_scale is not None or args.symmetry:
        raise DiscoposeError("--object-scale and --symmetry describe a mesh: give --object too")
    if args.budget is not None and args.budget < 0:
        raise DiscoposeError(f"--budget {args.budget:g}: give minutes >= 0 (0: no budget)")
    summary = run_demo(args.out, plan=plan, workers=args.workers, publish=args.publish, progress=not args.quiet,
                       seed=args.seed, resume=args.resume, user_object=user_object, budget_min=args.budget)
    print(format_summary(summary))


def _add_realistic_args(sub) -> None:
    p = sub.add_parser("realistic", help="render the realistic proxy test set (path traced, webcam model; "
                                         "evaluation only)")
    p.add_argument("--out", required=True, help="output folder or fsspec URL")
    p.add_argument("--num", type=int, default=100, help="number of samples (default 100)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    p.add_argument("--cameras", type=int, default=1, help="cameras around the workspace (default 1)")
    p.add_argument("--no-webcam", action="store_true", help="ideal camera: no distortion, blur, noise or JPEG")
    p.add_argument("--no-hand", action="store_true", help="no hand holding the object")
    p.add_argument("--spp", type=int, help="path-tracing samples per pixel (default 4)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a render config field")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_realistic)


def cmd_realistic(args) -> None:
    from discopose.realistic.pathtraced import render_realistic_dataset
    manifest = render_realistic_dataset(args.out, args.num, seed=args.seed, cameras=args.cameras,
                                        webcam=not args.no_webcam, hand=not args.no_hand, progress=not args.quiet,
                                        spp=args.spp, overrides=args.set)
    print(f"wrote {manifest['num_samples']} realistic proxy samples (for evaluation only) to {args.out} "
          f"({manifest['render_seconds']:.1f} s this run)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="discopose", description=__doc__)
    parser.add_argument("-v", "--verbose", "--debug", dest="verbose", action="store_true",
                        help="debug logging, and the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)
    # In the order `discopose --help` lists them; each command's arguments are declared beside what it runs.
    for add_args in (_add_demo_args, _add_render_args, _add_realistic_args, _add_inspect_args, _add_bop_export_args,
                     _add_train_args, _add_eval_args, _add_track_args, _add_calibrate_args, _add_cube_args,
                     _add_pack_args, _add_export_args):
        add_args(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("OpenGL", "trimesh", "PIL", "matplotlib", "torch.onnx", "onnxscript"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # SIGTERM is what timeout, Docker, Kubernetes and Slurm send: stop like Ctrl-C (workers with us).
    previous_handler = signal.signal(signal.SIGTERM, _terminate)
    try:
        args.func(args)
    except DiscoposeError as exc:
        print(f"discopose {args.command}: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        if args.verbose:
            raise
        return 2
    except OSError as exc:
        if not isinstance(exc.filename, str):  # not about a path: a bug or the machine, keep the traceback
            raise
        # A path the library did not check itself (a file in the way of a folder, no permission, disk full).
        from discopose._io import describe_path_error
        print(f"discopose {args.command}: error: {describe_path_error(exc)}", file=sys.stderr)
        if args.verbose:
            raise
        return 2
    except KeyboardInterrupt as exc:
        how = "terminated" if isinstance(exc, Terminated) else "interrupted"
        print(f"discopose {args.command}: {how}; rerun the same command to resume", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
    return 0


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is so that cleanup runs as for Ctrl-C."""


def _terminate(signum, frame):
    raise Terminated()


if __name__ == "__main__":
    sys.exit(main())
