"""`nll`: the exact -VLB of a model on a data split, with every term reported.

Results carry the conventions with them (pixel scaling, D, chain, images,
weights) so a figure can never be read without its denominator.  Shards of
a split can be evaluated apart and merged: per-image totals are kept so the
merge is exact.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from tqdm import tqdm

from ddpm_codec.bound.vlb import chain_terms, concat_terms, sampled_chain_terms
from ddpm_codec.diffusion.model import DiffusionModel

CONVENTIONS = {
    "pixel_scaling": "x = pixel / 127.5 - 1",
    "bits_per_dim": "total bits / (N * C * H * W)",
}


def evaluate_nll(model: DiffusionModel, images: np.ndarray, steps: int, batch: int = 100, seed: int = 0,
                 progress: bool = True, first_index: int = 0, step_samples: int = 0) -> dict:
    """-VLB (bits/dim) with the L_T / diffusion / L_0 breakdown and per-step terms.

    step_samples = 0: every transition of the chain (exact up to the one noise
    draw per term); k > 0: a stratified sample of k transitions per image
    (:func:`vlb.sampled_chain_terms`), an unbiased estimate.  Either way the
    record carries the standard error over images.  The randomness of image i
    comes from a generator seeded with (seed, i), so a sharded run draws
    exactly what the unsharded run draws."""
    if step_samples < 0:
        raise ValueError("step_samples must be >= 0")
    times = model.schedule.chain(steps)
    # the noise of a batch is (K+1) x batch images in float64: keep it under ~256 MB
    per_image = (times.numel() + 1) * int(np.prod(images.shape[1:])) * 8
    batch = max(1, min(batch, int(256e6 // per_image)))
    parts = []
    with tqdm(total=len(images), desc=f"nll ({steps} steps)", disable=not progress, unit="img") as bar:
        for a in range(0, len(images), batch):
            chunk = images[a:a + batch]
            gens = [torch.Generator().manual_seed(int(seed) * 1_000_003 + first_index + a + j)
                    for j in range(len(chunk))]
            pix = torch.from_numpy(np.array(chunk))
            if step_samples:
                parts.append(sampled_chain_terms(model, pix, times, step_samples, gens))
            else:
                noise = torch.stack([torch.randn((times.numel() + 1, *chunk.shape[1:]), generator=g,
                                                 dtype=torch.float64) for g in gens], 1)   # (K+1, B, C, H, W)
                parts.append(chain_terms(model, pix, times, noise=noise))
            bar.update(len(chunk))
    terms = concat_terms(parts)
    d = terms.dims
    rec = {**CONVENTIONS, **terms.summary(),
           "times": terms.times.tolist(),
           "per_step_bpd": (terms.diffusion.mean(0) / d).tolist(),
           "per_image_bits": terms.total.tolist(),
           "bpd_se": _se_bpd(terms.total, d),
           "estimator": (f"stratified sample of {min(step_samples, steps)} of {steps} transitions per image"
                         if step_samples else "every transition"),
           "step_samples": int(step_samples),
           "first_index": int(first_index),
           "seed": int(seed)}
    rec["total_bits"] = float(terms.total.sum())
    return rec


def _se_bpd(per_image_bits, dims: int) -> float:
    """Standard error of the mean bits/dim over images (image spread plus any
    sampling of steps)."""
    n = per_image_bits.numel()
    return float(per_image_bits.std() / dims / n ** 0.5) if n > 1 else float("nan")


def merge_shards(records: list[dict]) -> dict:
    """Merge shard results (same model, chain and seed) into one record."""
    if not records:
        raise ValueError("no shard results to merge")
    records = sorted(records, key=lambda r: r["first_index"])
    base = records[0]
    for r in records[1:]:
        for key in ("steps", "dims_per_image", "seed", "model_fingerprint", "step_samples"):
            if r.get(key) != base.get(key):
                raise ValueError(f"shards disagree on {key}: {base.get(key)!r} vs {r.get(key)!r}")
    n = sum(r["n_images"] for r in records)
    w = [r["n_images"] / n for r in records]
    out = dict(base)
    for key in ("bpd", "prior_bpd", "diffusion_bpd", "decoder_bpd"):
        out[key] = float(sum(wi * r[key] for wi, r in zip(w, records)))
    out["per_step_bpd"] = np.sum([wi * np.asarray(r["per_step_bpd"]) for wi, r in zip(w, records)], 0).tolist()
    out["per_image_bits"] = sum((r["per_image_bits"] for r in records), [])
    out["total_bits"] = float(sum(r["total_bits"] for r in records))
    out["n_images"] = n
    out["shards"] = len(records)
    if "bpd_se" in base:
        out["bpd_se"] = _se_bpd(torch.tensor(out["per_image_bits"], dtype=torch.float64), base["dims_per_image"])
    return out


def format_summary(rec: dict) -> str:
    se = f" +- {rec['bpd_se']:.4f}" if math.isfinite(rec.get("bpd_se", math.nan)) else ""
    how = f", {rec['estimator']}" if rec.get("step_samples") else ""
    return (f"-VLB {rec['bpd']:.4f}{se} bits/dim = L_T {rec['prior_bpd']:.4f} + diffusion {rec['diffusion_bpd']:.4f}"
            f" + L_0 {rec['decoder_bpd']:.4f}  [{rec['n_images']} images, D = {rec['dims_per_image']} per image"
            f" (C*H*W), {rec['steps']} latent levels{how}, {rec['pixel_scaling']}]")
