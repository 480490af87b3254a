"""PNG figures for the evaluators (rate-distortion here; the lossless bench reuses
`new_figure`, `plot_points` and `save`).

Figures are built on matplotlib's object API with the Agg canvas, never
pyplot: no GUI backend is needed, and a library call leaves no global
figure state behind.
"""
from __future__ import annotations

from pathlib import Path

# codec -> colour; layout -> marker (filled: per image files, hollow: one mosaic file)
COLOURS = {"ddpm": "black", "jpeg": "tab:orange", "webp": "tab:blue", "jpegxl": "tab:green",
           "png": "tab:purple"}
LAYOUT_MARKERS = {"per_image": ("o", True), "mosaic": ("s", False)}
NAMES = {"jpeg": "JPEG", "webp": "WebP", "jpegxl": "JPEG XL", "png": "PNG"}


def new_figure(panels: int = 1, width: float = 5.5, height: float = 4.2):
    """(figure, list of axes) side by side, on the Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width * panels, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, panels, squeeze=False)[0]
    return fig, list(axes)


def save(fig, path, dpi: int = 120) -> Path:
    """Write a PNG (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png")
    return path


def plot_points(ax, rows: list[dict], x: str = "bpd", y: str = "rmse", label_setting: bool = False):
    """One line per (codec, layout) of rows like `rd_curve.classical_points`'s, sorted by x;
    filled circles for per-image files, hollow squares for the mosaic."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["codec"], r["layout"]), []).append(r)
    for (codec, layout), pts in groups.items():
        pts = sorted(pts, key=lambda r: r[x])
        marker, filled = LAYOUT_MARKERS.get(layout, ("^", True))
        colour = COLOURS.get(codec, None)
        ax.plot([p[x] for p in pts], [p[y] for p in pts], marker=marker, ls="--" if layout == "mosaic" else ":",
                lw=1, ms=5, color=colour, mfc=colour if filled else "none",
                label=f"{NAMES.get(codec, codec)} ({layout.replace('_', ' ')})")
        if label_setting:
            for p in pts:
                ax.annotate(f"{p['setting']:g}", (p[x], p[y]), fontsize=6, xytext=(2, 2),
                            textcoords="offset points", color=colour)


def _reverse_axis_label(rec: dict) -> str:
    return "reverse process time (T - t + 1)" if "ddpm_t" in rec else "reverse process time (1 - t)"


def rd_figure(rec: dict, classical: list[dict] | None = None, title: str | None = None):
    """DDPM Fig. 5 for one `rd_curve.evaluate_rd` record: distortion against rate (with the
    classical codecs on the same images overlaid) and distortion and rate against reverse time."""
    fig, (ax_rd, ax_t) = new_figure(2)
    r = rec["results"]
    ax_rd.plot(r["bpd"], r["rmse"], "-", color=COLOURS["ddpm"], lw=1.5,
               label=f"diffusion, progressive, ideal KL rate ({rec['levels']} levels)")
    ax_rd.plot([rec["lossless"]["bpd"]], [0.0], "*", color=COLOURS["ddpm"], ms=10,
               label="diffusion, lossless (-VLB with L_0)")
    if classical:
        plot_points(ax_rd, classical)
    ax_rd.set_xlabel("rate (bits/dim)")
    ax_rd.set_ylabel("distortion: RMSE [0, 255], over the set")
    ax_rd.set_ylim(bottom=0)
    ax_rd.set_xlim(left=0)
    ax_rd.grid(alpha=0.3)
    ax_rd.legend(fontsize=7)

    rt = rec["reverse_time"]
    ax_t.plot(rt, r["rmse"], "-", color=COLOURS["ddpm"], label="distortion (RMSE)")
    ax_t.set_xlabel(_reverse_axis_label(rec))
    ax_t.set_ylabel("distortion: RMSE [0, 255], over the set")
    ax_t.set_ylim(bottom=0)
    ax_t.grid(alpha=0.3)
    ax_r = ax_t.twinx()
    ax_r.plot(rt, r["bpd"], "--", color="tab:red", label="rate (bits/dim)")
    ax_r.set_ylabel("rate (bits/dim), cumulative", color="tab:red")
    ax_r.set_ylim(bottom=0)
    lines = ax_t.get_lines() + ax_r.get_lines()
    ax_t.legend(lines, [ln.get_label() for ln in lines], fontsize=7, loc="center right")
    fig.suptitle(title or f"{rec.get('data', '')} {rec.get('split', '')}: {rec['n_images']} images, "
                 f"D = {rec['dims_per_image']}, {rec['latents']} latents".strip(), fontsize=10)
    return fig


def save_rd_figure(path, rec: dict, classical: list[dict] | None = None, title: str | None = None) -> Path:
    return save(rd_figure(rec, classical, title), path)
