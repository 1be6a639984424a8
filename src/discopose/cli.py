"""The ``discopose`` command line. Every subcommand maps onto a library function of the same name."""
from __future__ import annotations

import argparse
import logging
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


def cmd_render(args) -> None:
    from discopose.render.config import RenderConfig

    config = RenderConfig.load(args.config, _render_overrides(args))
    if args.preview:
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


def cmd_inspect(args) -> None:
    import numpy as np

    from discopose._io import atomic_write_bytes
    from discopose.datasets.reader import iter_samples, open_dataset
    from discopose.viz import contact_sheet, draw_labels, encode_png

    info = open_dataset(args.dataset, require_complete=False)
    print(info.summary())
    if args.verify:
        from discopose.datasets.storage import Storage, scan_shard
        storage = Storage(info.url)
        for shard in info.manifest["shards"]:
            count, digest = scan_shard(storage, shard["name"])
            if digest != shard["sha256"] or count != shard["num_samples"]:
                raise DiscoposeError(f"{shard['name']} does not match the manifest (sha256 or sample count); "
                                     "delete it and rerun `discopose render` with the same arguments")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="discopose", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

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

    p = sub.add_parser("inspect", help="summarize a dataset and draw labelled samples")
    p.add_argument("dataset", help="dataset folder or URL")
    p.add_argument("--num", type=int, default=8, help="samples to draw (default 8)")
    p.add_argument("--out", default="inspect.png", help="PNG to write (default inspect.png)")
    p.add_argument("--verify", action="store_true", help="check every shard's sha256 against the manifest")
    p.set_defaults(func=cmd_inspect)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        args.func(args)
    except DiscoposeError as exc:
        print(f"discopose {args.command}: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        if args.verbose:
            raise
        return 2
    except KeyboardInterrupt:
        print(f"discopose {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
