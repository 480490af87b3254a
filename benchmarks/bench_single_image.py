"""One 28 x 28 Fashion-MNIST image alone, with and without the pixel-group net.

    python benchmarks/bench_single_image.py [--n 10] [--offset 0] [--steps 100] [--name single_image]

Each test image is compressed on its own (one stream, one image, no name) by
the codec with the shipped model, which tries the classical seed alone and,
with the pixel-group companion, the image as conditionally coded pixel groups,
and keeps the smaller stream; every stream is decoded and checked.  Beside
it per image: the pixel-group stream's size and its ideal bits (what the
coder's probabilities say, header and word padding excluded), the bits of its
directly coded groups, the image's -VLB under the joint model on the same
chain, and PNG, WebP and JPEG XL lossless on that image alone.

Writes benchmarks/results/NAME.json and .md.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ddpm_codec.bound.vlb import chain_terms
from ddpm_codec.codec import lossless
from ddpm_codec.codec.units import ImageRecord
from ddpm_codec.data.datasets import load_fashion_mnist
from ddpm_codec.eval.bench import pixel_group_stream
from ddpm_codec.format import container
from ddpm_codec.io import classical
from ddpm_codec.io.checkpoint import load_companion, load_model

OUT = Path(__file__).parent / "results"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--offset", type=int, default=0)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--model", default=None)
    ap.add_argument("--name", default="single_image")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model, meta = load_model(args.model)
    groups = load_companion(args.model, meta["fingerprint"])
    if groups is None:
        raise SystemExit("this model has no pixel-group companion (PATH_groups.json)")
    test = load_fashion_mnist("test")[args.offset:args.offset + args.n]
    times = model.schedule.chain(args.steps)
    rows = []
    for i, img in enumerate(tqdm(test, desc="images alone")):
        px = img.reshape(28, 28)
        rec = ImageRecord(pixels=px[:, :, None].copy(), name="", mode="L")
        t0 = time.perf_counter()
        data, rep = lossless.encode([rec], model, meta["fingerprint"], steps=args.steps, groups_model=groups)
        t1 = time.perf_counter()
        back = lossless.decode(data, model, meta["fingerprint"], groups_model=groups)[0].pixels
        t2 = time.perf_counter()
        assert np.array_equal(back, rec.pixels), f"image {i} did not round-trip"
        g, grep = pixel_group_stream(rec, data, rep, groups, args.steps)
        parsed = container.parse(g)
        vlb = chain_terms(model, torch.from_numpy(img.reshape(1, 1, 28, 28).copy()), times,
                          torch.Generator().manual_seed(i)).total.sum() / 784
        cl = {c: 8 * classical.lossless_num_bytes(c, px) / 784
              for c in classical.LOSSLESS_CODECS if classical.codec_status(c)[0]}
        rows.append({"index": args.offset + i, "file_bpd": 8 * len(data) / 784,
                     "chosen": "pixel groups" if rep.pixel_groups else "classical seed only",
                     "pixel_groups_bpd": 8 * len(g) / 784, "pixel_groups_ideal_bpd": grep.ideal_net_bits / 784,
                     "direct_bits": grep.seed_bits, "group_codes": parsed.header["pixel_groups"],
                     "header_and_framing_bytes": len(g) - len(parsed.payload),
                     "neg_vlb_bpd": float(vlb), "classical_bpd": cl,
                     "encode_s": t1 - t0, "decode_s": t2 - t1})
    mean = {k: float(np.mean([r[k] for r in rows])) for k in
            ("file_bpd", "pixel_groups_bpd", "pixel_groups_ideal_bpd", "neg_vlb_bpd", "encode_s", "decode_s",
             "direct_bits", "header_and_framing_bytes")}
    mean["classical_bpd"] = {c: float(np.mean([r["classical_bpd"][c] for r in rows])) for c in rows[0]["classical_bpd"]}
    best = min(mean["classical_bpd"], key=mean["classical_bpd"].get)
    wins = sum(r["file_bpd"] < min(r["classical_bpd"].values()) for r in rows)
    out = {"model": meta["fingerprint"], "companion": groups[1], "t_eval": args.steps, "offset": args.offset,
           "n_images": len(rows), "threads": 1, "mean": mean, "best_classical": best,
           "images_below_every_classical": wins, "rows": rows}
    OUT.mkdir(exist_ok=True)
    (OUT / f"{args.name}.json").write_text(json.dumps(out, indent=1) + "\n")
    cls = list(mean["classical_bpd"])
    lines = [f"## One Fashion-MNIST test image alone ({len(rows)} images from {args.offset}, T_eval {args.steps}, "
             "bits/dim, means over images)", "",
             "| file (alone) | pixel groups | their ideal bits | -VLB (joint model) | " + " | ".join(cls) +
             " | file vs " + best + " | images below every classical | enc s | dec s |",
             "|---|---|---|---|" + "---|" * len(cls) + "---|---|---|---|",
             f"| **{mean['file_bpd']:.3f}** | {mean['pixel_groups_bpd']:.3f} | {mean['pixel_groups_ideal_bpd']:.3f} | "
             f"{mean['neg_vlb_bpd']:.3f} | " + " | ".join(f"{mean['classical_bpd'][c]:.3f}" for c in cls) +
             f" | {100 * (mean['file_bpd'] / mean['classical_bpd'][best] - 1):+.1f}% | {wins} / {len(rows)} | "
             f"{mean['encode_s']:.1f} | {mean['decode_s']:.1f} |"]
    (OUT / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
