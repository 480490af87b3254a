"""Exact negative VLB over a chain, every term summed (DDPM eq. 5), in bits.

For a chain of latent times t_0 < t_1 < ... < t_K:
  L_T       = KL(q(z_{t_K} | x) || N(0, I))
  L_{k}     = KL(q(z_{t_{k-1}} | z_{t_k}, x) || p(z_{t_{k-1}} | z_{t_k})), k = 1..K
  L_0       = -log p(x | z_{t_0})       (discretized Gaussian decoder)
Each diffusion KL is evaluated at one z_{t_k} ~ q(z_{t_k} | x) per image (the
KL itself is closed-form), so the sum is an unbiased estimate of -VLB with
no sampling of t.  Computation is float64 after the network call.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ddpm_codec.diffusion import process
from ddpm_codec.diffusion.likelihood import discretized_gaussian_log_prob, pixels_to_model
from ddpm_codec.diffusion.model import DiffusionModel

LOG2 = math.log(2.0)
F64 = torch.float64


@dataclass
class VLBTerms:
    """Per-image bits for every term of one chain."""

    times: torch.Tensor          # (K+1,) latent times
    prior: torch.Tensor          # (N,)
    diffusion: torch.Tensor      # (N, K) one column per transition t_k -> t_{k-1}
    decoder: torch.Tensor        # (N,)
    dims: int                    # D per image (C*H*W)

    @property
    def total(self) -> torch.Tensor:
        return self.prior + self.diffusion.sum(1) + self.decoder

    def summary(self) -> dict:
        """Means over images, in bits/dim (D = C*H*W per image)."""
        n = self.prior.numel()
        d = self.dims
        return {
            "bpd": float(self.total.mean() / d),
            "prior_bpd": float(self.prior.mean() / d),
            "diffusion_bpd": float(self.diffusion.sum(1).mean() / d),
            "decoder_bpd": float(self.decoder.mean() / d),
            "n_images": n,
            "dims_per_image": d,
            "steps": int(self.times.numel()),
        }


def _per_image(x):
    return x.flatten(1).sum(1)


@torch.no_grad()
def chain_terms(model: DiffusionModel, pixels: torch.Tensor, times: torch.Tensor,
                generator: torch.Generator | None = None, noise: torch.Tensor | None = None) -> VLBTerms:
    """Every term of -VLB (bits, per image) for a batch of uint8 images.

    `noise` (K+1, N, C, H, W) fixes the Gaussian draws (one per latent level
    and the decoder), else they come from `generator`."""
    x = pixels_to_model(pixels, F64)
    n = x.shape[0]
    times = times.to(F64)
    gam = model.gamma(times)
    prior = _per_image(process.prior_kl(x, gam[-1])) / LOG2
    diff = torch.zeros(n, times.numel() - 1, dtype=F64)
    for k in range(1, times.numel()):
        g_s, g_t = gam[k - 1], gam[k]
        eps = noise[k] if noise is not None else torch.randn(x.shape, generator=generator, dtype=F64)
        z_t = process.q_sample(x, g_t, eps)
        eps_hat = model.eps(z_t, times[k]).to(F64)
        m_q, v_q = process.posterior(z_t, x, g_s, g_t)
        m_p, v_p = model.reverse(z_t, eps_hat, g_s, g_t)
        diff[:, k - 1] = _per_image(process.gaussian_kl(m_q, v_q, m_p, v_p)) / LOG2
    eps = noise[0] if noise is not None else torch.randn(x.shape, generator=generator, dtype=F64)
    z0 = process.q_sample(x, gam[0], eps)
    mean, log_scale = model.decoder_params(z0, times[0])
    dec = -_per_image(discretized_gaussian_log_prob(x, mean, log_scale)) / LOG2
    return VLBTerms(times, prior, diff, dec, int(x[0].numel()))


@torch.no_grad()
def sampled_chain_terms(model: DiffusionModel, pixels: torch.Tensor, times: torch.Tensor, samples: int,
                        generators: list[torch.Generator]) -> VLBTerms:
    """Like :func:`chain_terms`, but each image's sum of K diffusion KLs is
    estimated from `samples` of them: the K transitions are cut into
    `samples` contiguous strata, one transition is drawn uniformly per stratum
    and per image, and its KL counts stratum-size times (unbiased; stratified
    because the KLs vary smoothly along the chain). L_T and L_0 stay exact.

    Why: the exact sum costs K network calls per image; on a CPU the whole
    10,000-image test split at K = 100 takes ~1.5 h, at `samples` = 10 about
    ten minutes, with a standard error the caller reports.  The returned
    `diffusion` is (N, K) with the weighted KL at the drawn columns and zeros
    elsewhere, so every per-step mean stays unbiased too.
    `generators[i]` draws image i's picks and noise (shard-independent)."""
    x = pixels_to_model(pixels, F64)              # on the pixels' device, like the model
    n, K = x.shape[0], times.numel() - 1
    times = times.to(F64).cpu()
    gam = model.gamma(times.to(x.device)).cpu()
    strata = [s for s in torch.arange(K).tensor_split(min(samples, K)) if s.numel()]
    picks = torch.zeros(n, len(strata), dtype=torch.long)
    noise = torch.zeros(len(strata) + 1, *x.shape, dtype=F64)
    for i, g in enumerate(generators):
        for j, s in enumerate(strata):
            picks[i, j] = s[int(torch.randint(s.numel(), (1,), generator=g))]
        noise[:, i] = torch.randn((len(strata) + 1, *x.shape[1:]), generator=g, dtype=F64)
    noise = noise.to(x.device)
    prior = _per_image(process.prior_kl(x.cpu(), gam[-1])) / LOG2
    diff = torch.zeros(n, K, dtype=F64)
    view = (n,) + (1,) * (x.dim() - 1)
    rows = torch.arange(n)
    for j, s in enumerate(strata):
        k = picks[:, j] + 1                       # transition t_k -> t_{k-1}
        g_s, g_t = gam[k - 1].view(view).to(x.device), gam[k].view(view).to(x.device)
        z_t = process.q_sample(x, g_t, noise[j + 1])
        eps_hat = model.eps(z_t, times[k]).to(F64)
        m_q, v_q = process.posterior(z_t, x, g_s, g_t)
        m_p, v_p = model.reverse(z_t, eps_hat, g_s, g_t)
        diff[rows, k - 1] = s.numel() * _per_image(process.gaussian_kl(m_q, v_q, m_p, v_p)).cpu() / LOG2
    z0 = process.q_sample(x, gam[0].to(x.device), noise[0])
    mean, log_scale = model.decoder_params(z0, times[0])
    dec = -_per_image(discretized_gaussian_log_prob(x, mean, log_scale)).cpu() / LOG2
    return VLBTerms(times, prior, diff, dec, int(x[0].numel()))


def concat_terms(parts: list[VLBTerms]) -> VLBTerms:
    return VLBTerms(parts[0].times, torch.cat([p.prior for p in parts]),
                    torch.cat([p.diffusion for p in parts]), torch.cat([p.decoder for p in parts]),
                    parts[0].dims)
