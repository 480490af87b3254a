"""Training objectives: Monte Carlo estimates of the VLB, or L_simple (DDPM eq. 14,
the loss of DDPM Algorithm 1, "Training").

- Discrete schedules: -VLB = L_T + T * E_i[L_{i-1}] with i uniform on 1..T
  (i = 1 is the decoder term L_0, eq. 13); with an importance sampler the
  term is weighted by 1 / (T p(i)) instead.  L_T is added in closed form.
- Continuous schedules (VDM eq. 17): L_inf = 0.5 E_t[gamma'(t) |eps - eps_hat|^2],
  plus L_T at gamma(1) and L_0 at gamma(0).  In training L_0 uses the
  network-free decoder mean z_0 / alpha_0 (it only carries the gradient for
  gamma_min; one network pass per batch is saved); evaluation uses x0_hat.
- L_simple (eq. 14): |eps - eps_hat|^2 with uniform t; the reported figure is
  still the VLB estimate so runs stay comparable.
All losses are returned in bits/dim, per image.
"""
from __future__ import annotations

import math

import torch

from ddpm_codec.diffusion import process
from ddpm_codec.diffusion.likelihood import discretized_gaussian_log_prob
from ddpm_codec.diffusion.model import DiffusionModel

LOG2 = math.log(2.0)


def _mean_dims(v):
    return v.flatten(1).mean(1)


def _decoder_nll(x, z0, eps_hat, g0):
    mean = process.predict_x0(z0, eps_hat, g0) if eps_hat is not None else z0 / torch.sigmoid(-g0).sqrt()
    log_scale = (0.5 * g0).expand_as(mean)
    return -_mean_dims(discretized_gaussian_log_prob(x, mean, log_scale))


def discrete_vlb(model: DiffusionModel, x, i, weight, eps, simple=False):
    """Per-image VLB estimate (bits/dim) and the surrogate to minimize."""
    sch = model.schedule
    T = sch.T
    t = i.to(torch.float64) / T
    g_t = sch.gamma(t).to(x.dtype).view(-1, 1, 1, 1)
    g_s = sch.gamma((i - 1).to(torch.float64) / T).to(x.dtype).view(-1, 1, 1, 1)
    z_t = process.q_sample(x, g_t, eps)
    eps_hat = model.eps(z_t, t)
    first = (i == 1)
    # KL with the model's variance choice; for the posterior variance this is
    # 0.5 * expm1(g_t - g_s) |eps - eps_hat|^2 (checked in tests).
    g_s_safe = torch.where(first.view(-1, 1, 1, 1), g_t - 1.0, g_s)
    m_q, v_q = process.posterior(z_t, x, g_s_safe, g_t)
    m_p, v_p = model.reverse(z_t, eps_hat, g_s_safe, g_t)
    kl = _mean_dims(process.gaussian_kl(m_q, v_q, m_p, v_p))
    dec = _decoder_nll(x, z_t, eps_hat, g_t)
    term = torch.where(first, dec, kl)
    prior = _mean_dims(process.prior_kl(x, sch.gamma(torch.tensor(1.0, dtype=torch.float64)).to(x.dtype)))
    vlb = (prior + T * weight * term) / LOG2
    if simple:
        surrogate = ((eps - eps_hat) ** 2).flatten(1).mean(1)
        return vlb.detach(), surrogate, i, term.detach() / LOG2
    return vlb.detach(), vlb, i, term.detach() / LOG2


def continuous_vlb(model: DiffusionModel, x, t, weight, eps, eps0, simple=False):
    """VDM's continuous-time VLB (bits/dim per image) and the surrogate."""
    sch = model.schedule
    t = t.to(torch.float32).requires_grad_(True)
    g_t = sch.gamma(t)
    (dg,) = torch.autograd.grad(g_t.sum(), t, create_graph=True)
    g_t = g_t.view(-1, 1, 1, 1)
    z_t = process.q_sample(x, g_t, eps)
    eps_hat = model.eps(z_t, t.detach())
    mse = ((eps - eps_hat) ** 2).flatten(1).mean(1)
    diffusion = 0.5 * dg * mse * weight
    g0 = sch.gamma(torch.zeros(1, device=x.device)).view(1, 1, 1, 1)
    g1 = sch.gamma(torch.ones(1, device=x.device)).view(1, 1, 1, 1)
    z0 = process.q_sample(x, g0, eps0)
    dec = _decoder_nll(x, z0, None, g0)
    prior = _mean_dims(process.prior_kl(x, g1))
    vlb = (prior + diffusion + dec) / LOG2
    if simple:
        return vlb.detach(), mse + (prior + dec) / LOG2, t.detach(), diffusion.detach() / LOG2
    return vlb.detach(), vlb, t.detach(), diffusion.detach() / LOG2


def training_loss(model: DiffusionModel, x, times, weights, eps, eps0, objective="vlb"):
    """(vlb_bpd per image, surrogate per image, times, per-sample term) for one batch.

    Times, weights and noise come from the caller so that data-parallel ranks
    can draw them for the global batch and take their slice (same numbers as
    one process with the global batch)."""
    simple = objective == "simple"
    if objective not in ("vlb", "simple"):
        raise ValueError("objective must be 'vlb' or 'simple'")
    if model.schedule.continuous:
        return continuous_vlb(model, x, times, weights, eps, eps0, simple)
    return discrete_vlb(model, x, times, weights, eps, simple)
