"""Gaussian diffusion maths for any pair of chain times s < t, in gamma form.

Everything is written with gamma = log(sigma^2 / alpha^2) so the stable
primitives of VDM appendix J apply: alpha^2 = sigmoid(-gamma),
sigma^2 = sigmoid(gamma), and the fraction of z_t's variance added between s
and t is sigma_{t|s}^2 / sigma_t^2 = -expm1(gamma_s - gamma_t).  Gammas are
tensors broadcastable against the data (e.g. shaped (N, 1, 1, 1)).
"""
from __future__ import annotations

import math

import torch

LOG2 = math.log(2.0)


def alpha_sigma(gamma):
    """(alpha_t, sigma_t) of q(z_t | x) = N(alpha_t x, sigma_t^2) (DDPM eq. 4; VDM appendix A, eq. 1-3)."""
    return torch.sigmoid(-gamma).sqrt(), torch.sigmoid(gamma).sqrt()


def q_sample(x, gamma, eps):
    """z_t = alpha_t x + sigma_t eps (DDPM eq. 4 reparameterized, as in eq. 9)."""
    a, s = alpha_sigma(gamma)
    return a * x + s * eps


def transition(gamma_s, gamma_t):
    """q(z_t | z_s) = N(alpha_{t|s} z_s, sigma_{t|s}^2) for s < t (DDPM eq. 2 over any gap;
    VDM appendix A.1).

    sigma_{t|s}^2 = sigma_t^2 * (-expm1(gamma_s - gamma_t)); alpha_{t|s} =
    alpha_t / alpha_s.  gamma_s = -inf (s = data) gives q(z_t | x).
    """
    a_t2 = torch.sigmoid(-gamma_t)
    a_s2 = torch.sigmoid(-gamma_s)
    var = torch.sigmoid(gamma_t) * (-torch.expm1(gamma_s - gamma_t))
    return (a_t2 / a_s2).sqrt(), var


def posterior(z_t, x, gamma_s, gamma_t):
    """q(z_s | z_t, x) = N(mean, var) (DDPM eq. 6-7, VDM appendix A.2, eq. 27-28)."""
    a_s, s_s = alpha_sigma(gamma_s)
    a_t, s_t = alpha_sigma(gamma_t)
    frac = -torch.expm1(gamma_s - gamma_t)          # sigma_{t|s}^2 / sigma_t^2
    a_ts = a_t / a_s
    mean = (a_ts * s_s**2 / s_t**2) * z_t + a_s * frac * x
    var = s_s**2 * frac
    return mean, var


def predict_x0(z_t, eps_hat, gamma_t):
    """x0_hat = (z_t - sigma_t eps_hat) / alpha_t (DDPM eq. 15)."""
    a, s = alpha_sigma(gamma_t)
    return (z_t - s * eps_hat) / a


def decoder_params(z0, eps_hat, gamma_0):
    """Discretized decoder p(x | z_t0): mean x0_hat(z_t0) and log-scale gamma_0 / 2,
    i.e. scale sigma_t0 / alpha_t0, the noise level of z_t0 in data units (DDPM's
    sigma_1 = sqrt(beta_1) up to a factor sqrt(1 - beta_1))."""
    mean = predict_x0(z0, eps_hat, gamma_0)
    return mean, (0.5 * gamma_0).expand_as(mean)


def reverse(z_t, eps_hat, gamma_s, gamma_t, variance="posterior"):
    """p(z_s | z_t): the posterior with x replaced by x0_hat(z_t), i.e. the eps
    parameterization of the reverse mean (DDPM eq. 11; VDM appendix A.3).

    variance="posterior": sigma^2 = beta-tilde (DDPM) = VDM's sigma_Q^2;
    variance="transition": sigma^2 = sigma_{t|s}^2, DDPM's beta_t on a
    respaced chain (1 - abar_t / abar_s for variance-preserving schedules).
    """
    x0 = predict_x0(z_t, eps_hat, gamma_t)
    mean, var = posterior(z_t, x0, gamma_s, gamma_t)
    if variance == "posterior":
        return mean, var
    if variance == "transition":
        return mean, transition(gamma_s, gamma_t)[1].expand_as(var)
    raise ValueError(f"unknown variance choice {variance!r}")


def gaussian_kl(mean_q, var_q, mean_p, var_p):
    """KL(N(mean_q, var_q) || N(mean_p, var_p)) elementwise, in nats."""
    return 0.5 * (torch.log(var_p) - torch.log(var_q) + (var_q + (mean_q - mean_p) ** 2) / var_p - 1.0)


def kl_eps_form(eps, eps_hat, gamma_s, gamma_t):
    """KL(q(z_s|z_t,x) || p(z_s|z_t)) with the posterior variance (DDPM eq. 8, eq. 10 and eq. 12
    in the eps form; VDM appendix A.4):
    0.5 * expm1(gamma_t - gamma_s) * (eps - eps_hat)^2, elementwise nats."""
    return 0.5 * torch.expm1(gamma_t - gamma_s) * (eps - eps_hat) ** 2


def prior_kl(x, gamma_T):
    """L_T = KL(q(z_T | x) || N(0, 1)) elementwise, nats."""
    a, s = alpha_sigma(gamma_T)
    var = s**2
    return 0.5 * ((a * x) ** 2 + var - torch.log(var) - 1.0)
