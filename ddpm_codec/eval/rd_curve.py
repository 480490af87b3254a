"""Rate-distortion of the progressive lossy code (DDPM section 4.3, Table 4, Fig. 5).

The code sends z_{t_K} ~ q(z_{t_K} | x) (L_T bits), then each
z_{t_{k-1}} ~ q(z_{t_{k-1}} | z_{t_k}, x) using p(z_{t_{k-1}} | z_{t_k})
(KL bits, DDPM Algorithms 3-4).  After each latent the receiver can show
x0_hat = (z_t - sigma_t eps(z_t, t)) / alpha_t (eq. 15).  One curve point per
latent level of the chain, top (k = K) first:

- rate: L_T + the KLs sent so far, the terms of `vlb.chain_terms`, averaged
  over images, bits/dim with D = C*H*W;
- distortion: RMSE on [0, 255] of x0_hat clipped to [-1, 1] and rounded to
  uint8 pixels (the image the receiver shows, comparable to JPEG/WebP/JPEG XL
  output); unrounded figures are kept too.

The last point is DDPM Table 4's last row: rate without L_0, distortion of
x0_hat at t_0.  Sending L_0 more bits decodes x exactly; that point is kept
apart ("lossless": full -VLB at RMSE 0).

Latents: 'topdown' (default) is what the receiver really holds, ancestral
samples down the posterior from z_{t_K} ~ q(z_{t_K} | x); 'marginal' noises
x directly at every level (same marginals q(z_t | x)) with the draws of
`evaluate_nll`, so its rates equal `nll`'s terms exactly.  Both use, for
image i, a generator seeded with (seed, i): shards draw what whole runs draw.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from ddpm_codec.diffusion import process
from ddpm_codec.diffusion.likelihood import discretized_gaussian_log_prob, model_to_pixels, pixels_to_model
from ddpm_codec.diffusion.model import DiffusionModel

LOG2 = math.log(2.0)
F64 = torch.float64
LATENTS = ("topdown", "marginal")
# classical settings for the overlay: pillow quality for JPEG/WebP, butteraugli distance for JPEG XL
CLASSICAL_SETTINGS = {"jpeg": (5, 10, 20, 30, 50, 75, 90, 95), "webp": (5, 10, 25, 50, 75, 90, 100),
                      "jpegxl": (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)}

CONVENTIONS = {
    "pixel_scaling": "x = pixel / 127.5 - 1",
    "bits_per_dim": "bits / (N * C * H * W); bpp = bits per pixel = bpd * C",
    "rate": "cumulative bits received at this point: L_T + KL(q(z_s|z_t,x) || p(z_s|z_t)) of every "
            "latent sent so far, top-down (DDPM Algorithms 3-4); mean over images",
    "distortion": "RMSE on [0, 255] of x0_hat = (z_t - sigma_t eps(z_t, t)) / alpha_t (DDPM eq. 15), "
                  "clipped to [-1, 1] and rounded to uint8 pixels; rmse_unrounded skips the rounding",
    "rmse_pooling": "rmse: over the set, sqrt(mean over all values of all images); rmse_per_image: "
                    "sqrt(mean over values) per image, then averaged; psnr from the set RMSE (null where 0); "
                    "plots use the set RMSE (as classical.lossy_bits_per_dim does)",
    "last_point": "DDPM Table 4: rate without L_0, distortion of x0_hat at t_0; the lossless point "
                  "(full -VLB with L_0, RMSE 0) is reported apart under 'lossless'",
    "order": "curve lists run top-down: index 0 is t_K (only L_T sent), the last is t_0",
    "timing": "encoding_time = decoding_time = evaluator's cumulative wall seconds per image up to "
              "each point (network + Gaussian maths); no reverse channel coder runs here",
}


def image_noise(seed: int, first: int, count: int, levels: int, shape) -> torch.Tensor:
    """(levels, count, C, H, W) draws, image i from generator (seed, i): `evaluate_nll`'s convention."""
    out = []
    for i in range(count):
        g = torch.Generator().manual_seed(int(seed) * 1_000_003 + first + i)
        out.append(torch.randn((levels, *shape), generator=g, dtype=F64))
    return torch.stack(out, 1)


def _psnr(rmse: float):
    """dB from an RMSE on [0, 255]; None (JSON null) for an exact reconstruction."""
    return 20 * math.log10(255.0 / rmse) if rmse > 0 else None


def _per_image(x):
    return x.flatten(1).sum(1)


@dataclass
class RDTerms:
    """Per-image bits and squared errors of one chain; levels in chain order (k = 0..K)."""

    times: torch.Tensor          # (K+1,)
    prior: torch.Tensor          # (N,) L_T bits
    kl: torch.Tensor             # (N, K) bits of transition t_k -> t_{k-1}, column k-1
    decoder: torch.Tensor        # (N,) L_0 bits at the receiver's z_{t_0}
    sq: torch.Tensor             # (N, K+1) sum of squared pixel errors of x0_hat(z_{t_k}), rounded
    sq_unrounded: torch.Tensor   # (N, K+1) the same before rounding to uint8
    seconds: np.ndarray          # (K+2,) wall time per level, top-down, then the decoder

    def cumulative_bits(self) -> torch.Tensor:
        """(N, K+1) bits received at each point, top-down (column 0 = t_K)."""
        return torch.cat([self.prior[:, None], self.kl.flip(1)], 1).cumsum(1)


@torch.no_grad()
def _batch(model: DiffusionModel, pixels: torch.Tensor, times: torch.Tensor, noise: torch.Tensor,
           latents: str) -> RDTerms:
    x = pixels_to_model(pixels, F64)
    ref = pixels.to(F64)
    gam = model.gamma(times)
    K = times.numel() - 1
    n = x.shape[0]
    kl = torch.zeros(n, K, dtype=F64)
    sq, sq_float = torch.zeros(n, K + 1, dtype=F64), torch.zeros(n, K + 1, dtype=F64)
    secs = np.zeros(K + 2)
    t0 = time.perf_counter()
    prior = _per_image(process.prior_kl(x, gam[K])) / LOG2
    z = process.q_sample(x, gam[K], noise[K])
    for k in range(K, -1, -1):
        eps_hat = model.eps(z, times[k]).to(F64)
        x0 = process.predict_x0(z, eps_hat, gam[k]).clamp(-1.0, 1.0)
        sq[:, k] = _per_image((model_to_pixels(x0).to(F64) - ref) ** 2)
        sq_float[:, k] = _per_image(((x0 + 1.0) * 127.5 - ref) ** 2)
        if k > 0:
            g_s, g_t = gam[k - 1], gam[k]
            m_q, v_q = process.posterior(z, x, g_s, g_t)
            m_p, v_p = model.reverse(z, eps_hat, g_s, g_t)
            kl[:, k - 1] = _per_image(process.gaussian_kl(m_q, v_q, m_p, v_p)) / LOG2
            z = m_q + v_q.sqrt() * noise[k - 1] if latents == "topdown" else process.q_sample(x, g_s, noise[k - 1])
        t1 = time.perf_counter()
        secs[K - k] = t1 - t0
        t0 = t1
    mean, log_scale = model.decoder_params(z, times[0])
    dec = -_per_image(discretized_gaussian_log_prob(x, mean, log_scale)) / LOG2
    secs[K + 1] = time.perf_counter() - t0
    return RDTerms(times, prior, kl, dec, sq, sq_float, secs)


def rd_terms(model: DiffusionModel, images: np.ndarray, steps: int, batch: int = 100, seed: int = 0,
             latents: str = "topdown", first_index: int = 0, progress: bool = False) -> RDTerms:
    """Per-image terms of the progressive code on uint8 (N, C, H, W) images over `chain(steps)`."""
    if latents not in LATENTS:
        raise ValueError(f"latents must be one of {LATENTS}, got {latents!r}")
    images = np.asarray(images)
    times = model.schedule.chain(steps)
    levels = times.numel()
    parts = []
    with tqdm(total=len(images), desc=f"rd-curve ({levels} levels)", disable=not progress, unit="img") as bar:
        for a in range(0, len(images), batch):
            chunk = torch.from_numpy(np.ascontiguousarray(images[a:a + batch]))
            noise = image_noise(seed, first_index + a, len(chunk), levels, chunk.shape[1:])
            parts.append(_batch(model, chunk, times, noise, latents))
            bar.update(len(chunk))
    cat = {f: torch.cat([getattr(p, f) for p in parts]) for f in ("prior", "kl", "decoder", "sq", "sq_unrounded")}
    return RDTerms(times, **cat, seconds=sum(p.seconds for p in parts))


def _time_labels(model: DiffusionModel, times: torch.Tensor) -> dict:
    """Chain index, time and, for discrete schedules, DDPM's t and reverse time T - t + 1."""
    out = {"t_index": list(range(times.numel())), "times": times.tolist()}
    T = model.schedule.T
    if T is not None:
        t = torch.round(times * T).long()
        out["ddpm_t"] = t.tolist()
        out["reverse_time"] = (T - t + 1).tolist()
    else:
        out["reverse_time"] = (1.0 - times).tolist()
    return out


def evaluate_rd(model: DiffusionModel, images: np.ndarray, steps: int, batch: int = 100, seed: int = 0,
                latents: str = "topdown", first_index: int = 0, progress: bool = True) -> dict:
    """The whole rate-distortion curve, one point per latent level, as a CompressAI-style
    record with our own keys (see CONVENTIONS)."""
    images = np.asarray(images)
    tr = rd_terms(model, images, steps, batch, seed, latents, first_index, progress)
    times = tr.times
    K = times.numel() - 1
    n, c, d = len(images), int(images.shape[1]), int(images[0].size)
    bits = tr.cumulative_bits()
    sq, sq_float = tr.sq.flip(1), tr.sq_unrounded.flip(1)          # curve order: top-down
    bpd = (bits.mean(0) / d).tolist()
    rmse = (sq.sum(0) / (n * d)).sqrt()
    psnr = [_psnr(r) for r in rmse.tolist()]
    cum = (np.cumsum(tr.seconds[:K + 1]) / n).tolist()
    labels = {k: v[::-1] for k, v in _time_labels(model, times).items()}
    prior, kl, dec = tr.prior, tr.kl, tr.decoder
    sent = torch.cat([prior[:, None], kl.flip(1)], 1)
    vlb_bits = bits[:, -1] + dec
    return {
        "name": "ddpm-codec progressive",
        "description": f"progressive lossy code (DDPM Alg. 3-4), {K + 1} latent levels, {latents} latents, "
                       f"x0_hat of eq. 15; rate = ideal KL codelength, no reverse channel coder overhead",
        "results": {"bpp": [b * c for b in bpd], "bpd": bpd, "psnr": psnr, "rmse": rmse.tolist(),
                    "encoding_time": cum, "decoding_time": cum},
        **labels,
        "rmse_per_image": (sq / d).sqrt().mean(0).tolist(),
        "rmse_unrounded": (sq_float.sum(0) / (n * d)).sqrt().tolist(),
        "rmse_unrounded_per_image": (sq_float / d).sqrt().mean(0).tolist(),
        "step_bpd": (sent.mean(0) / d).tolist(),
        "per_step_bpd": (kl.mean(0) / d).tolist(),
        "prior_bpd": float(prior.mean() / d),
        "diffusion_bpd": float(kl.sum(1).mean() / d),
        "decoder_bpd": float(dec.mean() / d),
        "lossless": {"bpd": float(vlb_bits.mean() / d), "rmse": 0.0,
                     "note": "full -VLB with L_0: the discretized decoder codes x exactly"},
        "per_image_rate_bits": bits[:, -1].tolist(),          # final point, without L_0
        "conventions": dict(CONVENTIONS),
        "latents": latents, "steps": int(steps), "levels": K + 1, "n_images": n, "dims_per_image": d,
        "channels": c, "seed": int(seed), "first_index": int(first_index),
        "schedule": model.schedule.config(), "variance": model.variance,
    }


def table_points(levels: int, points: int = 10) -> list[int]:
    """Curve positions of DDPM Table 4's rows: `points` evenly spaced reverse times ending at t_0
    (for 1000 levels: reverse times 100, 200, ..., 1000)."""
    idx = {math.floor(levels * j / points + 0.5) - 1 for j in range(1, points + 1)}
    return sorted(i for i in idx if 0 <= i < levels)


def format_table(rec: dict, points: int = 10) -> str:
    """DDPM Table 4: reverse time, rate (bits/dim), distortion (RMSE [0, 255]) at evenly spaced points."""
    discrete = "ddpm_t" in rec
    head = ("| reverse time (T - t + 1) | DDPM t | chain index | rate (bits/dim) | RMSE [0,255] set |"
            " RMSE per image |" if discrete else
            "| reverse time (1 - t) | t | chain index | rate (bits/dim) | RMSE [0,255] set | RMSE per image |")
    lines = [head, "|---|---|---|---|---|---|"]
    r = rec["results"]
    for i in table_points(len(r["bpd"]), points)[::-1]:
        rt = f"{rec['reverse_time'][i]}" if discrete else f"{rec['reverse_time'][i]:.4f}"
        t = f"{rec['ddpm_t'][i]}" if discrete else f"{rec['times'][i]:.4f}"
        lines.append(f"| {rt} | {t} | {rec['t_index'][i]} | {r['bpd'][i]:.5f} | {r['rmse'][i]:.5f} |"
                     f" {rec['rmse_per_image'][i]:.5f} |")
    lines.append(f"lossless (L_0 added): {rec['lossless']['bpd']:.5f} bits/dim at RMSE 0  "
                 f"[{rec['n_images']} images, D = {rec['dims_per_image']} (C*H*W), {rec['levels']} latent "
                 f"levels, {rec['latents']} latents; distortion of x0_hat clipped and rounded to pixels]")
    return "\n".join(lines)


def classical_points(images: np.ndarray, settings: dict | None = None,
                     layouts=("per_image", "mosaic")) -> tuple[list[dict], list[str]]:
    """Classical lossy anchors on the same images: (rows, skipped codecs with the reason)."""
    from ddpm_codec.io import classical
    rows, skipped = [], []
    for codec, values in (settings or CLASSICAL_SETTINGS).items():
        ok, why = classical.codec_status(codec)
        if not ok:
            skipped.append(f"{codec}: {why}")
            continue
        for layout in layouts:
            for q in values:
                res = classical.lossy_bits_per_dim(codec, images, q, layout)
                rows.append({"codec": codec, "layout": layout, "setting": res.setting,
                             "bpd": res.bits_per_dim, "bpp": res.bits_per_dim * images.shape[1],
                             "rmse": res.rmse, "psnr": _psnr(res.rmse), "num_bytes": res.num_bytes,
                             "n_images": res.num_images})
    return rows, skipped


def classical_compressai(rows: list[dict]) -> list[dict]:
    """Classical rows regrouped as one CompressAI-style record per (codec, layout)."""
    out = {}
    for r in rows:
        key = (r["codec"], r["layout"])
        rec = out.setdefault(key, {"name": f"{r['codec']} ({r['layout']})", "description":
                                   "setting = pillow quality (jpeg, webp) or butteraugli distance (jpegxl); "
                                   "rmse over the set, clipped uint8 output",
                                   "results": {"bpp": [], "bpd": [], "psnr": [], "rmse": [], "setting": []}})
        for k in ("bpp", "bpd", "psnr", "rmse", "setting"):
            rec["results"][k].append(r[k])
    return list(out.values())
