"""`ddpm-codec bench`: real file sizes against the model's -VLB, and the
classical lossless codecs on the same images.

For each T_eval, one record:
  neg_vlb_bpd        exact -VLB of the same images on the same chain (every
                     term summed, KL form; an MC estimate over the noise)
  ideal_net_bpd      the Bit-Swap-form -VLB along the coder's own sampled
                     path (what the net bits should equal up to coder overhead)
  net_bpd            stream bits minus the seed (initial) bits, per dim of the
                     images the chain coded (`seed_images` are coded classically
                     as the seed); compared with neg_vlb_chain_bpd, the -VLB of
                     those same images: net_gap_pct, with net_gap_se_pct the
                     standard error of that gap from the Monte Carlo noise of
                     both sides (one latent path per image each)
  file_bpd           every byte of the file: header, consumed seed, payload
  initial_bits       seed bits the first pops consumed (stored in the file)
  encode/decode_s_per_image, coding_time_share (time outside the network)
D = N * C * H * W of the original images throughout.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from ddpm_codec.bound.vlb import chain_terms
from ddpm_codec.codec import lossless
from ddpm_codec.codec.chain import DEFAULT_GRID


def lossless_record(model, fingerprint, images: np.ndarray, steps: int, seed: int = 0, grid=None) -> dict:
    recs = [lossless.ImageRecord(pixels=a.transpose(1, 2, 0).copy(), name="", mode="L" if a.shape[0] == 1 else "RGB")
            for a in images]
    dims = int(images.size)
    grid = DEFAULT_GRID if grid is None else float(grid)
    t0 = time.perf_counter()
    data, rep = lossless.encode(recs, model, fingerprint, steps=steps, grid_fraction=grid,
                                 classical_choice=False)   # the chain's own bits against its -VLB
    t_enc = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = lossless.decode(data, model, fingerprint)
    t_dec = time.perf_counter() - t0
    exact = all(np.array_equal(a.pixels, b.pixels) for a, b in zip(recs, out))
    if not exact:
        raise AssertionError("bench: decoded images differ from the originals")
    times = model.schedule.chain(steps)
    terms = chain_terms(model, torch.from_numpy(images.copy()), times, torch.Generator().manual_seed(seed))
    vlb = float(terms.total.sum()) / dims
    m = rep.seed_units                      # images coded classically as the seed
    chain_dims = max(rep.chain_dims, 1)
    keep = np.ones(len(images), bool)
    keep[rep.seed_images] = False
    vlb_chain = float(terms.total[torch.from_numpy(keep)].sum()) / chain_dims if keep.any() else float("nan")
    # Monte Carlo noise of the comparison: the coder's path and the KL form each draw
    # their own noise, so per image d_i = ideal_i - KL-form_i has mean ~0 and the
    # standard error of sum(d_i) is sqrt(sum d_i^2) (the images' own spread cancels)
    d = np.array([rep.ideal_bits_by_image[i] - float(terms.total[i]) for i in sorted(rep.ideal_bits_by_image)])
    gap_se_pct = 100 * float(np.sqrt((d ** 2).sum())) / max(vlb_chain * chain_dims, 1e-9)
    return {
        "t_eval": int(steps), "grid_fraction": grid, "n_images": len(images), "dims": dims,
        "neg_vlb_bpd": vlb,
        "neg_vlb_terms_bpd": {k: v for k, v in terms.summary().items() if k.endswith("_bpd")},
        "neg_vlb_chain_bpd": vlb_chain,
        "ideal_net_bpd": rep.ideal_net_bits / chain_dims,
        "net_bpd": rep.net_bpd,
        "file_bpd": rep.file_bpd,
        "initial_bits": rep.seed_bits_consumed,
        "seed_images": m,
        "seed_bits": rep.seed_bits,
        "net_gap_pct": 100 * (rep.net_bpd / vlb_chain - 1),
        "net_gap_se_pct": gap_se_pct,
        "file_gap_pct": 100 * (rep.file_bpd / vlb - 1),
        "encode_s_per_image": t_enc / len(images),
        "decode_s_per_image": t_dec / len(images),
        "coding_time_share": max(0.0, 1 - rep.network_s / max(rep.total_s, 1e-9)),
        "groups": len(rep.groups),
        "exact_roundtrip": exact,
    }


def classical_records(images: np.ndarray) -> list[dict]:
    from ddpm_codec.io import classical
    out = []
    for codec in ("png", "webp", "jpegxl"):
        ok, why = classical.codec_status(codec)
        if not ok:
            out.append({"codec": codec, "available": False, "reason": why})
            continue
        for layout in ("per_image", "mosaic"):
            r = classical.lossless_bits_per_dim(codec, images, layout=layout)
            out.append({"codec": codec, "layout": layout, "bpd": r.bits_per_dim, "available": True})
    return out


def markdown(records: list[dict], classical: list[dict]) -> str:
    lines = ["| T_eval | -VLB | net | file | net gap (+- SE) | file gap | seed images | enc s/img | dec s/img | coding share |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        lines.append(f"| {r['t_eval']} | {r['neg_vlb_bpd']:.4f} | {r['net_bpd']:.4f} | {r['file_bpd']:.4f} | "
                     f"{r['net_gap_pct']:+.3f}% +- {r['net_gap_se_pct']:.3f}% | {r['file_gap_pct']:+.2f}% | {r['seed_images']} | "
                     f"{r['encode_s_per_image']:.3f} | {r['decode_s_per_image']:.3f} | {100 * r['coding_time_share']:.1f}% |")
    if classical:
        lines += ["", "| classical | per image | mosaic |", "|---|---|---|"]
        by = {}
        for c in classical:
            if c.get("available"):
                by.setdefault(c["codec"], {})[c["layout"]] = c["bpd"]
        for codec, v in by.items():
            lines.append(f"| {codec} | {v.get('per_image', float('nan')):.4f} | {v.get('mosaic', float('nan')):.4f} |")
    return "\n".join(lines)


def single_markdown(singles: list[dict]) -> str:
    """One row per T_eval: each image alone, against its -VLB and classical codecs alone."""
    if not singles:
        return ""
    codecs = list(singles[0]["classical_per_image"])
    groups = "mean_pixel_groups_bpd" in singles[0]
    lines = ["| T_eval | images | file (alone) | " + ("pixel groups | " if groups else "") +
             "PRNG-seeded chain | -VLB | " + " | ".join(codecs) + " |",
             "|---|---|---|" + ("---|" if groups else "") + "---|---|" + "---|" * len(codecs)]
    for r in singles:
        cl = " | ".join(f"{r['classical_per_image'][c]:.3f}" for c in codecs)
        g = f"{r['mean_pixel_groups_bpd']:.3f} | " if groups else ""
        lines.append(f"| {r['t_eval']} | {r['n_images']} | {r['mean_per_image']:.3f} | {g}"
                     f"{r['mean_random_chain_bpd']:.3f} | {r['mean_neg_vlb_bpd']:.3f} | {cl} |")
    return "\n".join(lines)


def pixel_group_stream(rec, data: bytes, rep, groups_model, steps: int) -> tuple:
    """(stream, report) of one image coded by pixel groups: the codec's own when it
    kept that stream, else coded here (the codec kept its classical seed)."""
    if rep.pixel_groups:
        return data, rep
    return lossless._encode_pixel_groups([rec], *groups_model, steps, lossless.DEFAULT_GRID, True, 0)


def single_image_record(model, fingerprint, images: np.ndarray, steps: int, groups_model=None) -> dict:
    """Each image compressed alone (its own file, no name): what the codec
    writes (checked to decode exactly), the PRNG-seeded chain and, with a
    pixel-group net, the pixel-group stream it weighed against the classical
    fallback, the image's -VLB, and PNG / WebP / JPEG XL on that image alone."""
    from ddpm_codec.io import classical
    times = model.schedule.chain(steps)
    out = {"t_eval": int(steps), "n_images": len(images), "per_image": [], "random_chain_bpd": [],
           "neg_vlb_bpd": [], "chosen": [], "classical_per_image": {}, "encode_s": [], "decode_s": []}
    if groups_model is not None:
        out.update({"pixel_groups_bpd": [], "pixel_groups_ideal_bpd": [], "pixel_groups_direct_bits": []})
    for n, a in enumerate(images):
        rec = lossless.ImageRecord(pixels=a.transpose(1, 2, 0).copy(), name="", mode="L" if a.shape[0] == 1 else "RGB")
        t0 = time.perf_counter()
        data, rep = lossless.encode([rec], model, fingerprint, steps=steps, groups_model=groups_model)
        t1 = time.perf_counter()
        back = lossless.decode(data, model, fingerprint, groups_model=groups_model)[0].pixels
        out["decode_s"].append(time.perf_counter() - t1)
        out["encode_s"].append(t1 - t0)
        if not np.array_equal(back, rec.pixels):
            raise RuntimeError(f"image {n} alone did not round-trip")
        classical_only = rep.chain_dims == 0
        out["per_image"].append(8 * len(data) / a.size)
        out["chosen"].append("pixel groups" if rep.pixel_groups else
                             "classical seed only" if classical_only else "chain")
        if groups_model is not None:
            g, grep = pixel_group_stream(rec, data, rep, groups_model, steps)
            out["pixel_groups_bpd"].append(8 * len(g) / a.size)
            out["pixel_groups_ideal_bpd"].append(grep.ideal_net_bits / a.size)
            out["pixel_groups_direct_bits"].append(grep.seed_bits)
            # with pixel groups the codec no longer tries the PRNG-seeded chain: code it here
            random_bytes = len(lossless.encode([rec], model, fingerprint, steps=steps, seed_mode="random")[0])
        else:                             # the codec weighed it against the classical seed
            random_bytes = rep.rejected_bytes if classical_only else len(data)
        out["random_chain_bpd"].append(8 * random_bytes / a.size)
        t = chain_terms(model, torch.from_numpy(a[None].copy()), times, torch.Generator().manual_seed(n))
        out["neg_vlb_bpd"].append(float(t.total.sum()) / a.size)
    for codec in classical.LOSSLESS_CODECS:
        if classical.codec_status(codec)[0]:
            out["classical_per_image"][codec] = classical.lossless_bits_per_dim(
                codec, images, layout="per_image").bits_per_dim
    for key in ("per_image", "random_chain_bpd", "neg_vlb_bpd", "pixel_groups_bpd", "pixel_groups_ideal_bpd",
                "encode_s", "decode_s"):
        if key in out:
            out[f"mean_{key}"] = float(np.mean(out[key]))
    out["single_image_file_bpd"] = out["mean_per_image"]
    return out


def plot(records: list[dict], classical: list[dict], path, title: str = "") -> None:
    """bits/dim against T_eval: -VLB, net and file, classical codecs as lines."""
    from ddpm_codec.eval.plots import COLOURS, NAMES, new_figure, save
    fig, (ax,) = new_figure(1, width=6.5)
    t = [r["t_eval"] for r in records]
    ax.plot(t, [r["neg_vlb_bpd"] for r in records], "k-", marker="o", label="-VLB (exact, same images)")
    ax.plot(t, [r["net_bpd"] for r in records], "k--", marker="x", label="bits-back net")
    ax.plot(t, [r["file_bpd"] for r in records], "r:", marker="s", label="file (all bytes)")
    for c in classical:
        if c.get("available"):
            ax.axhline(c["bpd"], color=COLOURS.get(c["codec"], "grey"),
                       ls="-" if c["layout"] == "per_image" else "--", lw=1,
                       label=f"{NAMES.get(c['codec'], c['codec'])} ({c['layout'].replace('_', ' ')})")
    ax.set_xscale("log")
    ax.set_xlabel("T_eval (chain steps)")
    ax.set_ylabel("bits/dim (D = N*C*H*W)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save(fig, path)
