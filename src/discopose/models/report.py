"""``metrics.json`` + ``report.html`` with PNG plots for an evaluation run."""
from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

from discopose._io import atomic_write_bytes, atomic_write_json, atomic_write_text, output_folder
from discopose.viz import contact_sheet, draw_pose, encode_png


def _figure():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: Path) -> str:
    import io
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())
    _figure().close(fig)
    return path.name


def write_report(out_dir: str | Path, errors: list[dict], summary: dict, predictions: dict, meta: dict,
                 title: str, worst_views: list[np.ndarray] | None = None, baseline: dict | None = None,
                 per_sample: list[dict] | None = None, plots: bool = True) -> Path:
    """Write metrics.json, plots and report.html into ``out_dir``; returns the HTML path. Without ``plots`` the
    report holds the tables and the worst cases only (matplotlib's figures are ~0.2 s each)."""
    out_dir = output_folder(out_dir)
    te_mm = np.array([e["te_mm"] for e in errors])
    re_deg = np.array([e["re_deg"] for e in errors])
    figures = _error_figures(out_dir, te_mm, re_deg, summary, predictions) if plots else []
    if worst_views:
        atomic_write_bytes(out_dir / "worst_cases.png", encode_png(contact_sheet(worst_views, columns=4)))
        figures.append(("Worst cases first (green: truth, red: prediction)", "worst_cases.png"))
    return _write_metrics_and_page(out_dir, title, summary, meta, baseline, per_sample, figures)


def _error_figures(out_dir: Path, te_mm: np.ndarray, re_deg: np.ndarray, summary: dict, predictions: dict
                   ) -> list[tuple[str, str]]:
    """The report's plots as PNGs in ``out_dir``: ``(title, file name)`` each."""
    plt = _figure()
    plots = []

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    axes[0].hist(te_mm, bins=40, color="tab:blue")
    axes[0].set_xlabel("translation error (mm)")
    axes[1].hist(re_deg, bins=40, color="tab:orange")
    axes[1].set_xlabel("rotation error (deg)")
    for ax in axes:
        ax.set_ylabel("samples")
    plots.append(("Error histograms", _save(fig, out_dir / "errors_hist.png")))

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, values, label in ((axes[0], te_mm, "translation error (mm)"), (axes[1], re_deg, "rotation error (deg)")):
        ordered = np.sort(values)
        ax.plot(ordered, np.arange(1, len(ordered) + 1) / len(ordered))
        ax.set_xlabel(label)
        ax.set_ylabel("fraction of samples")
        ax.grid(alpha=0.3)
    plots.append(("Cumulative error distributions", _save(fig, out_dir / "errors_cdf.png")))

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    axes[0].scatter(predictions["visible_fraction"], te_mm, s=6, alpha=0.6, label="translation (mm)")
    axes[0].scatter(predictions["visible_fraction"], re_deg, s=6, alpha=0.6, label="rotation (deg)")
    axes[0].set_xlabel("visible fraction of the object")
    axes[0].legend()
    axes[1].scatter(predictions["distance_m"] * 1000, te_mm, s=6, alpha=0.6, label="translation (mm)")
    axes[1].scatter(predictions["distance_m"] * 1000, re_deg, s=6, alpha=0.6, label="rotation (deg)")
    axes[1].set_xlabel("camera-object distance (mm)")
    axes[1].legend()
    plots.append(("Error against visibility and distance", _save(fig, out_dir / "errors_vs_conditions.png")))

    if len(summary.get("by_distance", [])) > 1:
        rows = summary["by_distance"]
        centres = [row["distance_m"][0] if row["distance_m"][1] is None else
                   (row["distance_m"][0] + row["distance_m"][1]) / 2 for row in rows]
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
        axes[0].plot(centres, [row["te_mm_median"] for row in rows], "o-", label="translation (mm)")
        axes[0].plot(centres, [row["re_deg_median"] for row in rows], "s-", label="rotation (deg)")
        axes[0].set_ylabel("median error")
        axes[0].legend()
        for key, label in (("valid_frac", "valid"), ("gross_invalid_frac", "gross errors flagged"),
                           ("position_within_1sigma", "position within 1 sigma")):
            points = [(c, row[key]) for c, row in zip(centres, rows) if row.get(key) is not None]
            if points:
                axes[1].plot(*zip(*points), "o-", label=label)
        axes[1].set_ylim(0, 1.05)
        axes[1].legend(fontsize=7)
        for ax in axes:
            ax.set_xlabel("camera-object distance (m, bin centre)")
            ax.grid(alpha=0.3)
        plots.append(("By distance: error, validity and 1 sigma coverage per bin",
                      _save(fig, out_dir / "by_distance.png")))

    if "uncertainty" in summary:
        sigma_mm = predictions["position_sigma_m"].mean(1) * 1000
        fig, ax = plt.subplots(figsize=(4.5, 3.2))
        ax.scatter(sigma_mm, te_mm, s=6, alpha=0.6)
        ax.set_xlabel("predicted position sigma (mm, mean of axes)")
        ax.set_ylabel("translation error (mm)")
        plots.append(("Predicted uncertainty against actual error", _save(fig, out_dir / "uncertainty.png")))

    if "validity" in summary and "confidence" in predictions:
        valid = np.asarray(predictions["valid"], bool)
        fig, ax = plt.subplots(figsize=(4.5, 3.2))
        for keep, label in ((valid, "valid"), (~valid, "invalid")):
            ax.scatter(predictions["confidence"][keep], te_mm[keep], s=6, alpha=0.6, label=label)
        ax.set_xlabel("stated confidence")
        ax.set_ylabel("translation error (mm)")
        ax.set_yscale("log")
        ax.legend()
        plots.append(("Validity: stated confidence against actual error", _save(fig, out_dir / "validity.png")))
    return plots


def _write_metrics_and_page(out_dir: Path, title: str, summary: dict, meta: dict, baseline: dict | None,
                            per_sample: list[dict] | None, plots: list[tuple[str, str]]) -> Path:
    metrics = {"title": title, "summary": summary, "baseline_mean_pose": baseline,
               "model": {k: meta.get(k) for k in ("spec", "pretrained", "epoch", "train_data")}}
    if per_sample is not None:
        metrics["per_sample"] = per_sample
    atomic_write_json(out_dir / "metrics.json", metrics)
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v['median']:.2f}</td><td>{v['mean']:.2f}</td>"
                   f"<td>{v['p90']:.2f}</td></tr>" for k, v in summary.items() if isinstance(v, dict) and "median" in v)
    head_rows = _head_table(summary["heads"]) if "heads" in summary else ""
    extra = json.dumps({k: summary[k] for k in ("success", "uncertainty", "validity", "add_s_rel_diameter_median")
                        if k in summary},
                       indent=1)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}td,th{{padding:2px 10px}}img{{max-width:100%}}</style>
</head><body><h1>{html.escape(title)}</h1><p>{summary['count']} samples.</p>
<table><tr><th>error</th><th>median</th><th>mean</th><th>p90</th></tr>{rows}</table>
{head_rows}
<pre>{html.escape(extra)}</pre>
{f"<p>Mean-pose baseline: {html.escape(json.dumps(baseline))}</p>" if baseline else ""}
{''.join(f'<h2>{html.escape(t)}</h2><img src="{src}">' for t, src in plots)}
</body></html>"""
    return atomic_write_text(out_dir / "report.html", page)


ROTATION_HEADS_SHOWN = ("regressed", "pnp", "reported", "chance")


def rotation_head_cells(heads: dict) -> list[tuple[str, str, str, str]]:
    """The one rendering of the per-head rotation errors (:func:`discopose.models.evaluate.head_errors`), which
    the validation line, the report and the demo's summary share: ``(head, median degrees, up to the shape's
    symmetry, share with a PnP pose)`` for each head present, chance last; "none found" where most samples
    had no pose."""
    degrees = lambda value: "none found" if value is None else f"{value:.1f}"  # noqa: E731
    return [(name, degrees(heads[name]["re_deg"]), degrees(heads[name]["re_shape_deg"]),
             "" if name == "chance" else f"found {100 * heads[name]['found_frac']:.0f}%")
            for name in ROTATION_HEADS_SHOWN if name in heads]


def format_rotation_heads(heads: dict) -> str:
    """Each rotation head's median error in one line, chance in brackets."""
    cells = rotation_head_cells(heads)
    text = ", ".join(f"{name} {full} deg ({shape} up to shape)" for name, full, shape, _ in cells if name != "chance")
    chance = [(full, shape) for name, full, shape, _ in cells if name == "chance"]
    return text + (f" [chance {chance[0][0]} ({chance[0][1]})]" if chance else "")


def _head_table(heads: dict) -> str:
    """Each rotation head alone beside chance: a head that learns nothing shows here."""
    rows = [f"<tr><td>{name}</td><td>{full}</td><td>{shape}</td><td>{found}</td></tr>"
            for name, full, shape, found in rotation_head_cells(heads)]
    return ("<h2>Rotation per head</h2><table><tr><th>head</th><th>median deg</th>"
            "<th>up to the shape's symmetry</th><th></th></tr>" + "".join(rows) + "</table>")


def overlay_prediction(rgb: np.ndarray, camera_labels: dict, predicted_camera_from_object: np.ndarray,
                       keypoints_m: np.ndarray, caption: str | None = None) -> np.ndarray:
    """The image with the true (green) and predicted (red) object boxes, and ``caption`` on top."""
    import cv2
    K = np.asarray(camera_labels["K"])
    image = rgb.copy()
    draw_pose(image, K, np.asarray(camera_labels["camera_from_object"]), keypoints_m, color=(0, 255, 0), axes=False)
    draw_pose(image, K, predicted_camera_from_object, keypoints_m, color=(255, 0, 0), axes=True)
    if caption:
        scale = max(image.shape[1] / 640, 0.35)
        for color, thickness in (((0, 0, 0), 3), ((255, 255, 255), 1)):
            cv2.putText(image, caption, (4, int(18 * scale)), cv2.FONT_HERSHEY_SIMPLEX, 0.55 * scale, color,
                        thickness, cv2.LINE_AA)
    return image


def plot_val_curve(curve_jsonl: str | Path, png: str | Path) -> str | None:
    """Validation error against images seen (``val_curve.jsonl`` from training): each rotation head's median and
    chance on a log axis, the position error beside them. Returns the PNG's path, or None when the curve has fewer
    than two points."""
    rows = [json.loads(line) for line in Path(curve_jsonl).read_text().splitlines() if line.strip()]
    if len(rows) < 2:
        return None
    plt = _figure()
    fig, (rotation, position) = plt.subplots(1, 2, figsize=(10, 3.6))
    seen = np.array([row["images_seen"] for row in rows]) / 1000
    for key, label in (("regressed/re_deg", "regressed"), ("pnp/re_deg", "PnP"), ("reported/re_deg", "reported"),
                       ("chance/re_deg", "chance")):
        values = [row["heads"].get(key) for row in rows]
        if any(v is not None for v in values):
            rotation.plot(seen, [np.nan if v is None else v for v in values], "o-" if label != "chance" else "k--",
                          label=label, markersize=3)
    rotation.set_yscale("log")
    rotation.set(xlabel="images seen (thousands)", ylabel="median rotation error (deg)", title="rotation")
    rotation.grid(True, which="both", alpha=0.3)
    rotation.legend()
    position.plot(seen, [row["te_mm_median"] for row in rows], "o-", markersize=3)
    position.set(xlabel="images seen (thousands)", ylabel="median position error (mm)", title="position")
    position.grid(True, alpha=0.3)
    _save(fig, Path(png))
    return str(png)
