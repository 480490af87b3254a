"""The lossless codec on images a user has: real photographs against PNG, WebP and JPEG XL.

    OMP_NUM_THREADS=1 python benchmarks/bench_any_image.py [IMG ...] [--name any_image] [--out DIR] [--no-set]

Without IMG: the crops of benchmarks/photos/ (real photographs from PyPI and Debian
packages, provenance in benchmarks/photos/provenance.json; rebuilt by
benchmarks/photos.py).  With IMG: any images read the way ``ddpm-codec compress``
reads them.

For each image, alone: the ``ddpm-codec`` lossless stream from the Python API with the
shipped default model and default options (``Codec().compress([img])``), decoded with
``decompress_arrays`` and checked pixel for pixel; PNG (Pillow, optimize=True,
compress_level=9), WebP lossless (Pillow, quality=100, method=6, exact) and JPEG XL
lossless (imagecodecs, lossless=True, effort 9 = cjxl -e 9), each decoded and checked;
bytes, bits/dim over pixels x channels, compress and decompress seconds
(time.perf_counter; the classical ones the fastest of 3 runs, the codec's one run).
The margin is ddpm-codec's bytes minus the best classical codec's bytes (the codec's own
classical codes are PNG, WebP and JPEG XL at effort 7; the margin against PNG and WebP
alone is given as well, as it was the codec's fallback before format version 4).  Then the whole set
in one ddpm-codec stream, against the sum of each classical codec's per-image files.

Writes benchmarks/results/NAME.json (CompressAI-like: name, description, results,
environment), NAME.md and NAME.png.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ddpm_codec.api import Codec
from ddpm_codec.io import classical
from ddpm_codec.io.images import read_image

HERE = Path(__file__).parent
PHOTOS = HERE / "photos"
OUT = HERE / "results"
CLASSICAL = ("png", "webp", "jpegxl")
LABEL = {"ddpm": "ddpm-codec", "png": "PNG", "webp": "WebP lossless", "jpegxl": "JPEG XL lossless"}
REPEATS = 3
MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}


def load_images(paths):
    """[(name, pixels (H, W) or (H, W, C) uint8, provenance or None)]."""
    if paths:
        out = []
        for p in paths:
            im = read_image(p)
            px = im.pixels[:, :, 0] if im.pixels.shape[2] == 1 else im.pixels
            out.append((Path(p).name, np.ascontiguousarray(px), {"file": str(p)}))
        return out
    prov = json.loads((PHOTOS / "provenance.json").read_text())
    out = []
    for c in prov["crops"]:
        im = read_image(PHOTOS / c["file"])
        px = im.pixels[:, :, 0] if im.pixels.shape[2] == 1 else im.pixels
        out.append((c["name"], np.ascontiguousarray(px),
                    {k: c["source"][k] for k in ("registry", "package", "version", "path", "licence")}
                    | {"transform": c["transform"]}))
    return out


def classical_run(codec, px):
    hwc = px[:, :, None] if px.ndim == 2 else px
    enc, dec = [], []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        data = classical.encode_lossless(codec, px)
        t1 = time.perf_counter()
        back = classical.decode(codec, data, hwc.shape[2])
        t2 = time.perf_counter()
        enc.append(t1 - t0)
        dec.append(t2 - t1)
    exact = back.shape == hwc.shape and bool(np.array_equal(back, hwc))
    return {"bytes": len(data), "bpd": 8 * len(data) / px.size, "encode_s": min(enc), "decode_s": min(dec),
            "exact": exact}


def ddpm_run(codec, images):
    t0 = time.perf_counter()
    data, rep = codec.compress(images)
    t1 = time.perf_counter()
    back = codec.decompress_arrays(data)
    t2 = time.perf_counter()
    exact = len(back) == len(images) and all(b.shape == a.shape and np.array_equal(b, a) for a, b in zip(images, back))
    dims = sum(a.size for a in images)
    return {"bytes": len(data), "bpd": 8 * len(data) / dims, "encode_s": t1 - t0, "decode_s": t2 - t1,
            "exact": exact,
            "layout": {"tile": rep.tile, "units": rep.units, "seed_units": rep.seed_units,
                       "chain_dims": rep.chain_dims, "pixel_groups": rep.pixel_groups,
                       "classical_only": rep.chain_dims == 0 and rep.pixel_groups == 0,
                       "ideal_net_bits": rep.ideal_net_bits}}


def environment(codec, avail):
    from PIL import Image, features

    def git(*a):
        try:
            return subprocess.run(["git", *a], cwd=HERE, capture_output=True, text=True, timeout=10).stdout.strip()
        except OSError:
            return ""
    env = {"python": platform.python_version(), "platform": platform.platform(), "machine": platform.machine(),
           "processor": platform.processor(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
           "torch_threads": torch.get_num_threads(), "numpy": np.__version__, "pillow": Image.__version__,
           "libwebp": features.version("webp"), "zlib": features.version("zlib"),
           "model_fingerprint": codec.fingerprint, "pixel_group_companion": codec.groups is not None,
           "default_steps": codec.default_steps, "git_commit": git("rev-parse", "HEAD"),
           "git_dirty": bool(git("status", "--porcelain")), "date": datetime.datetime.now().isoformat(timespec="seconds"),
           "codecs": {c: avail[c][1] for c in CLASSICAL}}
    try:
        import imagecodecs
        env["imagecodecs"] = imagecodecs.__version__
    except ImportError:
        pass
    return env


def markdown(rows, whole, cls, total_s):
    head = ("| image | mode | size | " + " | ".join(f"{LABEL[c]} bpd" for c in ("ddpm",) + cls) +
            " | best classical | margin B (vs best) | margin B (vs PNG/WebP) | ddpm layout | "
            "ddpm enc s | ddpm dec s | " + " | ".join(f"{c} enc/dec ms" for c in cls) + " |")
    lines = [f"## ddpm-codec on real photographs ({len(rows)} images alone, then the whole set in one stream; "
             "bits/dim over pixels x channels; shipped default model, default options, 1 thread)", "",
             head, "|" + "---|" * (head.count("|") - 1)]

    def bpd_cells(r):
        vals = {"ddpm": r["ddpm"]["bpd"], **{c: r[c]["bpd"] for c in cls}}
        lo = min(vals.values())
        return " | ".join(f"**{vals[k]:.3f}**" if vals[k] == lo else f"{vals[k]:.3f}" for k in ("ddpm",) + cls)

    for r in rows:
        lay = r["ddpm"]["layout"]
        how = ("classical only" if lay["classical_only"] else
               f"{lay['pixel_groups']} pixel groups" if lay["pixel_groups"] else
               f"{'tiles ' + str(lay['tile']) if lay['tile'] else 'planes'} x{lay['units']}, seed {lay['seed_units']}")
        lines.append(f"| {r['name']} | {r['mode']} | {r['width']}x{r['height']} | {bpd_cells(r)} | {r['best_classical']} | "
                     f"{r['margin_bytes']:+d} | {r['margin_bytes_png_webp']:+d} | {how} | "
                     f"{r['ddpm']['encode_s']:.1f} | {r['ddpm']['decode_s']:.1f} | " +
                     " | ".join(f"{1e3 * r[c]['encode_s']:.1f}/{1e3 * r[c]['decode_s']:.1f}" for c in cls) + " |")
    if whole:
        lines.append(f"| **whole set, one stream** | mixed | {whole['dims']} dims | {bpd_cells(whole)} | "
                     f"{whole['best_classical']} (sum of files) | {whole['margin_bytes']:+d} | "
                     f"{whole['margin_bytes_png_webp']:+d} | {whole['ddpm']['layout']['units']} units | "
                     f"{whole['ddpm']['encode_s']:.1f} | {whole['ddpm']['decode_s']:.1f} | " +
                     " | ".join(f"{1e3 * whole[c]['encode_s']:.1f}/{1e3 * whole[c]['decode_s']:.1f}" for c in cls) + " |")
    m = [r["margin_bytes"] for r in rows]
    mpw = [r["margin_bytes_png_webp"] for r in rows]
    lines += ["",
              f"Margin = ddpm-codec bytes minus the best classical codec's bytes for that image (negative: ddpm-codec "
              f"smaller). Against the best of all three: {sum(x <= 0 for x in m)} / {len(m)} images at or below, worst "
              f"{max(m):+d} B, mean {np.mean(m):+.1f} B; against the best of PNG and WebP (its fallback before "
              f"format version 4): {sum(x <= 0 for x in mpw)} / {len(mpw)} at or below, worst {max(mpw):+d} B. "
              f"Every stream decoded exactly. Classical times: fastest of {REPEATS} runs. Total run {total_s:.0f} s."]
    return "\n".join(lines) + "\n"


def plot(rows, whole, cls, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    groups = rows + ([dict(whole, name="whole set\n(one stream)")] if whole else [])
    keys = ("ddpm",) + cls
    x = np.arange(len(groups))
    w = 0.8 / len(keys)
    fig, ax = plt.subplots(figsize=(max(8, 0.9 * len(groups) + 2), 4.6))
    for k, key in enumerate(keys):
        ax.bar(x + (k - (len(keys) - 1) / 2) * w, [g[key]["bpd"] for g in groups], w, label=LABEL[key])
    ax.set_xticks(x, [g["name"].replace("_", "\n", 1) for g in groups], fontsize=7)
    ax.set_ylabel("bits/dim (pixels x channels)")
    ax.set_title("Lossless on real photographs: ddpm-codec (Fashion-MNIST model) vs classical codecs")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("images", nargs="*", help="image files (default: the crops in benchmarks/photos/)")
    ap.add_argument("--name", default="any_image", help="output name under benchmarks/results/")
    ap.add_argument("--out", type=Path, default=OUT, help="output folder (default benchmarks/results)")
    ap.add_argument("--no-set", action="store_true", help="skip the whole set in one stream")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    avail = {c: classical.codec_status(c) for c in CLASSICAL}
    cls = tuple(c for c in CLASSICAL if avail[c][0])
    for c in CLASSICAL:
        if not avail[c][0]:
            print(f"skipping {c}: {avail[c][1]}", file=sys.stderr)
    codec = Codec()
    images = load_images(args.images)
    rows = []
    for name, px, prov in images:
        r = {"name": name, "mode": MODES[1 if px.ndim == 2 else px.shape[2]],
             "height": px.shape[0], "width": px.shape[1], "channels": 1 if px.ndim == 2 else px.shape[2],
             "dims": int(px.size), "provenance": prov, "ddpm": ddpm_run(codec, [px])}
        for c in cls:
            r[c] = classical_run(c, px)
        best = min(cls, key=lambda c: r[c]["bytes"])
        pw = min((c for c in cls if c != "jpegxl"), key=lambda c: r[c]["bytes"])
        r.update(best_classical=best, best_classical_bytes=r[best]["bytes"],
                 margin_bytes=r["ddpm"]["bytes"] - r[best]["bytes"],
                 margin_bytes_png_webp=r["ddpm"]["bytes"] - r[pw]["bytes"],
                 margin_pct=100 * (r["ddpm"]["bytes"] / r[best]["bytes"] - 1))
        if not (r["ddpm"]["exact"] and all(r[c]["exact"] for c in cls)):
            raise SystemExit(f"{name}: a lossless round trip was not exact")
        rows.append(r)
        print(f"{name:22s} ddpm {r['ddpm']['bytes']:6d} B {r['ddpm']['bpd']:.3f} bpd "
              f"({r['ddpm']['encode_s']:.1f}+{r['ddpm']['decode_s']:.1f} s) | " +
              " ".join(f"{c} {r[c]['bytes']}" for c in cls) + f" | margin {r['margin_bytes']:+d} B", flush=True)
    whole = None
    if not args.no_set and len(images) > 1:
        pxs = [px for _, px, _ in images]
        dims = sum(p.size for p in pxs)
        whole = {"name": "whole set", "n_images": len(pxs), "dims": int(dims), "ddpm": ddpm_run(codec, pxs)}
        if not whole["ddpm"]["exact"]:
            raise SystemExit("whole set: the stream did not decode exactly")
        for c in cls:
            b = sum(r[c]["bytes"] for r in rows)
            whole[c] = {"bytes": b, "bpd": 8 * b / dims, "encode_s": sum(r[c]["encode_s"] for r in rows),
                        "decode_s": sum(r[c]["decode_s"] for r in rows), "exact": True,
                        "note": "sum of the per-image files"}
        best = min(cls, key=lambda c: whole[c]["bytes"])
        pw = min((c for c in cls if c != "jpegxl"), key=lambda c: whole[c]["bytes"])
        per_best = sum(r["best_classical_bytes"] for r in rows)
        whole.update(best_classical=best, best_classical_bytes=whole[best]["bytes"],
                     margin_bytes=whole["ddpm"]["bytes"] - whole[best]["bytes"],
                     margin_bytes_png_webp=whole["ddpm"]["bytes"] - whole[pw]["bytes"],
                     per_image_best_classical_bytes=per_best,
                     margin_vs_per_image_best_bytes=whole["ddpm"]["bytes"] - per_best,
                     ddpm_sum_of_alone_bytes=sum(r["ddpm"]["bytes"] for r in rows))
        print(f"whole set: ddpm {whole['ddpm']['bytes']} B ({whole['ddpm']['encode_s']:.1f}+"
              f"{whole['ddpm']['decode_s']:.1f} s) | " + " ".join(f"{c} {whole[c]['bytes']}" for c in cls) +
              f" | margin {whole['margin_bytes']:+d} B", flush=True)
    total_s = time.perf_counter() - t_start
    m = [r["margin_bytes"] for r in rows]
    out = {"name": "ddpm-codec-any-image",
           "description": ("Lossless bits-back ddpm-codec (shipped Fashion-MNIST model, default options) on real "
                           "photographs from package registries (benchmarks/photos/provenance.json) or given files, "
                           "against PNG (optimize, level 9), WebP lossless (method 6) and JPEG XL lossless (effort 9). "
                           "bpd = 8 * bytes / (H * W * C). margin_bytes = ddpm-codec bytes - best classical bytes."),
           "command": " ".join([Path(sys.executable).name] + sys.argv),
           "results": rows, "whole_set": whole,
           "summary": {"n_images": len(rows), "images_at_or_below_best_classical": sum(x <= 0 for x in m),
                       "worst_margin_bytes": max(m), "mean_margin_bytes": float(np.mean(m)),
                       "images_at_or_below_png_webp": sum(r["margin_bytes_png_webp"] <= 0 for r in rows),
                       "worst_margin_bytes_png_webp": max(r["margin_bytes_png_webp"] for r in rows),
                       "mean_bpd": {k: float(np.mean([r[k]["bpd"] for r in rows])) for k in ("ddpm",) + cls},
                       "total_run_s": total_s},
           "environment": environment(codec, avail)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(out, indent=1) + "\n")
    md = markdown(rows, whole, cls, total_s)
    (args.out / f"{args.name}.md").write_text(md)
    plot(rows, whole, cls, args.out / f"{args.name}.png")
    print(md)


if __name__ == "__main__":
    main()
