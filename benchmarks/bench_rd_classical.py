"""Classical lossy anchors for the rate-distortion curve: JPEG, WebP and JPEG XL
on Fashion-MNIST test images at several settings, per image and as one mosaic.
Writes benchmarks/results/rd_classical.json (+ rd_classical.png) and prints
markdown tables, with DESIGN.md's anchors beside the measured values.

    OMP_NUM_THREADS=1 python benchmarks/bench_rd_classical.py [--n 10000] [--quick]

Rate in bits/dim with D = N * C * H * W of the originals; distortion is the
RMSE on [0, 255] over all values of all images (`classical.lossy_bits_per_dim`).
The mosaic of 10k images is DESIGN's 100 x 100 grid.
"""
import argparse
import json
import platform
import sys
import time
from pathlib import Path

from ddpm_codec.data.datasets import load_dataset
from ddpm_codec.eval.rd_curve import CLASSICAL_SETTINGS, classical_compressai, classical_points
from ddpm_codec.io import classical

RESULTS = Path(__file__).resolve().parent / "results"
# DESIGN.md anchors (100 x 100 mosaic of the test split): (codec, setting) -> (bits/dim, RMSE)
ANCHORS = {("webp", 50.0): (1.48, 5.06), ("webp", 10.0): (0.86, 10.7), ("jpegxl", 2.0): (1.78, 5.49)}


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for codec in ("jpeg", "webp", "jpegxl"):
        out[codec] = classical.codec_status(codec)[1]
    return out


def table(rows) -> str:
    lines = ["| codec | layout | setting | bits/dim | RMSE [0,255] | PSNR (dB) | seconds |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['codec']} | {r['layout']} | {r['setting']:g} | {r['bpd']:.4f} | {r['rmse']:.3f} |"
                     f" {r['psnr']:.2f} | {r['seconds']:.1f} |")
    return "\n".join(lines)


def anchor_rows(rows, n) -> list[dict]:
    out = []
    for (codec, q), (bpd, err) in ANCHORS.items():
        got = [r for r in rows if r["codec"] == codec and r["layout"] == "mosaic" and r["setting"] == q]
        if got:
            out.append({"codec": codec, "setting": q, "design_bpd": bpd, "design_rmse": err,
                        "bpd": got[0]["bpd"], "rmse": got[0]["rmse"], "n_images": n,
                        "comparable": n == 10000})
    return out


def anchor_table(anchors) -> str:
    lines = ["| mosaic anchor | DESIGN bits/dim | measured | DESIGN RMSE | measured |", "|---|---|---|---|---|"]
    for a in anchors:
        lines.append(f"| {a['codec']} {a['setting']:g} | {a['design_bpd']:.2f} | {a['bpd']:.3f} |"
                     f" {a['design_rmse']:.2f} | {a['rmse']:.3f} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10000, help="first N test images (10000: DESIGN's mosaic)")
    ap.add_argument("--quick", action="store_true", help="1000 images")
    ap.add_argument("--data", default="fashion_mnist")
    ap.add_argument("--out", default=str(RESULTS / "rd_classical.json"))
    ap.add_argument("--no-plot", action="store_true")
    args = ap.parse_args(argv)
    n = 1000 if args.quick else args.n
    images = load_dataset(args.data, "test", n=n)
    rows, skipped = [], []
    for codec, settings in CLASSICAL_SETTINGS.items():
        for layout in ("per_image", "mosaic"):
            for q in settings:
                t0 = time.perf_counter()
                got, why = classical_points(images, {codec: (q,)}, (layout,))
                if why:
                    skipped += [w for w in why if w not in skipped]
                    break
                got[0]["seconds"] = time.perf_counter() - t0
                rows += got
    for s in skipped:
        print(f"skipped {s}", file=sys.stderr)
    anchors = anchor_rows(rows, len(images))
    rec = {"name": "classical lossy anchors", "data": args.data, "split": "test", "n_images": len(images),
           "dims_per_image": int(images[0].size),
           "conventions": {"bits_per_dim": "bytes * 8 / (N * C * H * W), headers included",
                           "rmse": "over all values of all images, [0, 255], uint8 reconstruction",
                           "setting": "pillow quality (jpeg, webp), butteraugli distance (jpegxl)",
                           "mosaic": "all N images tiled into one near-square image (100 x 100 for 10k)"},
           "environment": _versions(), "rows": rows, "skipped": skipped, "anchors": anchors,
           "compressai": classical_compressai(rows)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rec, indent=1, allow_nan=False) + "\n")
    print(f"## Classical lossy codecs, {args.data} test, first {len(images)} images (D = {images[0].size})\n")
    print(table(rows) + "\n")
    if anchors:
        print(anchor_table(anchors) + ("\n" if len(images) == 10000 else
                                        "\n(anchors are for the 10k mosaic; this run used fewer images)\n"))
    if not args.no_plot:
        from ddpm_codec.eval.plots import new_figure, plot_points, save
        fig, (ax,) = new_figure(1, 7, 5)
        plot_points(ax, rows, label_setting=True)
        for (codec, q), (bpd, err) in ANCHORS.items():
            ax.plot([bpd], [err], "x", color="red", ms=8)
        ax.plot([], [], "x", color="red", label="DESIGN.md anchors (mosaic)")
        ax.set(xlabel="rate (bits/dim)", ylabel="RMSE [0, 255], over the set", xlim=(0, None), ylim=(0, None),
               title=f"{args.data} test, {len(images)} images")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        print(f"wrote {save(fig, out.with_suffix('.png'))}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
