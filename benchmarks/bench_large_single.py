"""One large image alone: tiles against whole planes and classical codecs.

    python benchmarks/bench_large_single.py [--steps 100] [--quick]

Each image is compressed on its own (one stream, one image) three ways: as
tiles of the model's training size (`--tiles always`), as one whole plane
(`--tiles never`: one unit cannot fund a chain, so this is the classical seed
alone or a PRNG-seeded chain, whichever is smaller) and as the codec's default
(`auto`, which tries model-size tiles, twice that and one plane, and keeps the
smallest). Beside them: PNG, WebP and JPEG XL lossless on the same image, and
the -VLB of the model-size tiles (what their chain costs ideally). Images: mosaics of Fashion-MNIST test images (tiles
aligned with the garments) and crops of larger mosaics shifted by half a
garment (tiles cut through them; the tiles are as even as the U-Net allows).

Writes benchmarks/results/large_single.json and .md.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from ddpm_codec.bound.vlb import chain_terms
from ddpm_codec.codec import lossless
from ddpm_codec.codec.units import ImageRecord, to_units
from ddpm_codec.data.datasets import load_fashion_mnist
from ddpm_codec.format.container import CodecError
from ddpm_codec.io import classical
from ddpm_codec.io.checkpoint import load_model

OUT = Path(__file__).parent / "results"


def mosaic(tiles: np.ndarray, rows: int, cols: int) -> np.ndarray:
    return np.ascontiguousarray(tiles[:rows * cols].reshape(rows, cols, 28, 28).transpose(0, 2, 1, 3)
                                .reshape(rows * 28, cols * 28))


def cases(test: np.ndarray, quick: bool):
    """(name, image) pairs; each instance takes fresh test images."""
    k = 0
    plan = [("56x56 mosaic", 2, 2, None, 3), ("84x84 mosaic", 3, 3, None, 3),
            ("70x70 shifted crop", 3, 3, 70, 3), ("100x100 shifted crop", 5, 5, 100, 2),
            ("280x280 mosaic", 10, 10, None, 1)]
    for name, r, c, crop, count in plan[:3] if quick else plan:
        for _ in range(1 if quick else count):
            img = mosaic(test[k:], r, c)
            k += r * c
            if crop:
                img = np.ascontiguousarray(img[14:14 + crop, 14:14 + crop])
            yield name, img


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--quick", action="store_true", help="one image of each of the small kinds")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model, meta = load_model(None)
    fp = meta["fingerprint"]
    test = load_fashion_mnist("test")[:, 0]
    times = model.schedule.chain(args.steps)
    rows = []
    for name, img in cases(test, args.quick):
        rec = [ImageRecord(pixels=img[:, :, None], name="image.png", mode="L")]
        d = img.size
        row = {"image": name, "height": img.shape[0], "width": img.shape[1]}
        for mode in ("always", "never", "auto"):
            t0 = time.perf_counter()
            try:
                data, rep = lossless.encode(rec, model, fp, steps=args.steps, tiles=mode)
            except CodecError:          # larger than one plane may be
                row[mode] = None
                continue
            t1 = time.perf_counter()
            back = lossless.decode(data, model, fp)[0].pixels[:, :, 0]
            t2 = time.perf_counter()
            assert np.array_equal(back, img), "round trip failed"
            row[mode] = {"bpd": 8 * len(data) / d, "bytes": len(data), "units": rep.units,
                         "seed_units": rep.seed_units, "tile": rep.tile, "encode_s": t1 - t0, "decode_s": t2 - t1}
        units = to_units(rec, 1, model.unet.multiple, row["always"]["tile"])
        bits = 0.0
        for shape in {u.pixels.shape for u in units}:          # edge tiles may be smaller
            batch = torch.from_numpy(np.stack([u.pixels for u in units if u.pixels.shape == shape]))
            bits += float(chain_terms(model, batch, times, generator=torch.Generator().manual_seed(0)).total.sum())
        row["tiles_neg_vlb_bpd"] = bits / d                     # padded dims included, over real dims
        for codec in classical.LOSSLESS_CODECS:
            if classical.codec_status(codec)[0]:
                row[codec] = 8 * classical.lossless_num_bytes(codec, img) / d
        rows.append(row)
        whole = f"{row['never']['bpd']:.3f}" if row["never"] else "n/a"
        print(f"{name}: tiles {row['always']['bpd']:.3f}  whole {whole}  auto "
              f"{row['auto']['bpd']:.3f}  (-VLB of tiles {row['tiles_neg_vlb_bpd']:.3f})  "
              + "  ".join(f"{c} {row[c]:.3f}" for c in classical.LOSSLESS_CODECS if c in row), flush=True)
    out = {"model": fp, "t_eval": args.steps, "threads": 1, "rows": rows}
    OUT.mkdir(exist_ok=True)
    (OUT / "large_single.json").write_text(json.dumps(out, indent=1) + "\n")
    (OUT / "large_single.md").write_text(table(rows, args.steps))


def table(rows: list, steps: int) -> str:
    """The markdown table of means per kind of image."""
    def cell(v):
        return "refused" if np.isnan(v) else f"{v:.3f}"
    kinds = list(dict.fromkeys(r["image"] for r in rows))
    lines = [f"## One large image alone (Fashion-MNIST test mosaics and shifted crops, T_eval {steps}, "
             "bits/dim, means over the images of each kind)", "",
             "| image | n | 28-pixel tiles | whole plane | auto (file) | auto's layout | -VLB of 28-pixel tiles "
             "| png | webp | jpegxl | auto vs JPEG XL | enc s | dec s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for k in kinds:
        rs = [r for r in rows if r["image"] == k]

        def m(f):
            return float(np.mean([f(r) for r in rs]))
        jxl = m(lambda r: r.get("jpegxl", np.nan))
        auto = m(lambda r: r["auto"]["bpd"])
        picks = [r["auto"]["tile"] for r in rs]
        layout = ", ".join(f"{'plane' if t == 0 else f'{t}-px tiles'} x{picks.count(t)}"
                           for t in sorted(set(picks), reverse=True))
        lines.append(f"| {k} | {len(rs)} | {m(lambda r: r['always']['bpd']):.3f} | {cell(m(lambda r: r['never']['bpd'] if r['never'] else np.nan))} "
                     f"| **{auto:.3f}** | {layout} | {m(lambda r: r['tiles_neg_vlb_bpd']):.3f} | {m(lambda r: r.get('png', np.nan)):.3f} "
                     f"| {m(lambda r: r.get('webp', np.nan)):.3f} | {jxl:.3f} | {100 * (auto / jxl - 1):+.1f}% "
                     f"| {m(lambda r: r['auto']['encode_s']):.1f} | {m(lambda r: r['auto']['decode_s']):.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
