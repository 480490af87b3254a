"""Gaussian diffusion maths in gamma form against DDPM's textbook formulas."""
import math

import numpy as np
import pytest
import torch

from ddpm_codec.diffusion import process
from ddpm_codec.diffusion.schedules import LinearGamma, build_schedule

F64 = torch.float64
T = 1000


@pytest.fixture(scope="module")
def linear():
    return build_schedule({"type": "linear", "T": T, "beta_start": 1e-4, "beta_end": 0.02})


def _ddpm_np():
    betas = np.linspace(1e-4, 0.02, T, dtype=np.float64)
    alphas = 1.0 - betas
    abar = np.cumprod(alphas)
    return betas, alphas, abar


def _col(v):
    return torch.as_tensor(v, dtype=F64).view(-1, 1, 1, 1)


def _pairs_discrete(rng, n):
    """Random (s, t) chain times on the grid, s < t, s >= 1/T; adjacent ones included."""
    i_t = rng.integers(2, T + 1, n)
    i_s = np.where(rng.random(n) < 0.3, i_t - 1, rng.integers(1, i_t))
    return i_s / T, i_t / T


# ---------------------------------------------------------------- KL forms

def _kl_both_ways(g_s, g_t, rng, shape=(3, 4, 4)):
    n = g_s.shape[0]
    x = torch.from_numpy(rng.uniform(-1, 1, (n, *shape)))
    eps = torch.from_numpy(rng.standard_normal((n, *shape)))
    eps_hat = eps + torch.from_numpy(rng.standard_normal((n, *shape))) * torch.from_numpy(
        10.0 ** rng.uniform(-4, 0.5, (n, 1, 1, 1)))
    z_t = process.q_sample(x, g_t, eps)
    m_q, v_q = process.posterior(z_t, x, g_s, g_t)
    m_p, v_p = process.reverse(z_t, eps_hat, g_s, g_t, "posterior")
    return process.gaussian_kl(m_q, v_q, m_p, v_p), process.kl_eps_form(eps, eps_hat, g_s, g_t)


def test_kl_forms_agree_discrete(linear):
    rng = np.random.default_rng(0)
    s, t = _pairs_discrete(rng, 400)
    g_s, g_t = _col(linear.gamma(torch.from_numpy(s))), _col(linear.gamma(torch.from_numpy(t)))
    ddpm, vdm = _kl_both_ways(g_s, g_t, rng)
    assert torch.all(vdm >= 0)
    # atol: the DDPM form sums O(1) terms (log-variances, -1) to get the KL, so
    # a KL below ~1e-12 nats is lost to cancellation there (measured <= 1e-14)
    np.testing.assert_allclose(ddpm.numpy(), vdm.numpy(), rtol=1e-9, atol=1e-12)


def test_kl_forms_agree_continuous():
    sch = LinearGamma(-13.3, 5.0)
    rng = np.random.default_rng(1)
    a, b = rng.random(400), rng.random(400)
    s, t = np.minimum(a, b), np.maximum(a, b)
    # include near-identical and extreme pairs
    s[:5], t[:5] = [0.0, 0.5, 0.999, 0.0, 0.3], [1e-6, 0.5 + 1e-7, 1.0, 1.0, 0.31]
    g_s, g_t = _col(sch.gamma(torch.from_numpy(s))), _col(sch.gamma(torch.from_numpy(t)))
    ddpm, vdm = _kl_both_ways(g_s, g_t, rng)
    np.testing.assert_allclose(ddpm.numpy(), vdm.numpy(), rtol=1e-9, atol=1e-12)


def test_gaussian_kl_matches_monte_carlo():
    g = torch.Generator().manual_seed(0)
    m_q, v_q, m_p, v_p = 0.3, 0.5, -0.2, 1.7
    z = m_q + math.sqrt(v_q) * torch.randn(400_000, generator=g, dtype=F64)
    logq = -0.5 * (z - m_q) ** 2 / v_q - 0.5 * math.log(2 * math.pi * v_q)
    logp = -0.5 * (z - m_p) ** 2 / v_p - 0.5 * math.log(2 * math.pi * v_p)
    mc = float((logq - logp).mean())
    exact = float(process.gaussian_kl(*(torch.tensor(v, dtype=F64) for v in (m_q, v_q, m_p, v_p))))
    assert abs(mc - exact) < 4 * float((logq - logp).std()) / math.sqrt(z.numel())


# ---------------------------------------------------------------- DDPM eq. 6-7

def test_posterior_matches_ddpm_eq_6_7(linear):
    betas, alphas, abar = _ddpm_np()
    i = np.arange(2, T + 1)                     # t = i, s = i - 1 (1-based DDPM indices)
    b_t, a_t, ab_t, ab_s = betas[i - 1], alphas[i - 1], abar[i - 1], abar[i - 2]
    c_x0 = np.sqrt(ab_s) * b_t / (1 - ab_t)
    c_xt = np.sqrt(a_t) * (1 - ab_s) / (1 - ab_t)
    beta_tilde = (1 - ab_s) / (1 - ab_t) * b_t

    g_t = _col(linear.gamma(torch.from_numpy(i / T)))
    g_s = _col(linear.gamma(torch.from_numpy((i - 1) / T)))
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, (len(i), 1, 2, 2))
    z = rng.standard_normal((len(i), 1, 2, 2))
    mean, var = process.posterior(torch.from_numpy(z), torch.from_numpy(x), g_s, g_t)
    want = c_x0[:, None, None, None] * x + c_xt[:, None, None, None] * z
    np.testing.assert_allclose(mean.numpy(), want, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(var.numpy()[:, 0, 0, 0], beta_tilde, rtol=1e-9)


def test_posterior_from_first_step_is_the_data(linear):
    """s = 0 (gamma = -inf): q(x_0 | x_1, x_0) is a point mass at x_0."""
    g_s = _col(linear.gamma(torch.tensor([0.0], dtype=F64)))
    g_t = _col(linear.gamma(torch.tensor([1.0 / T], dtype=F64)))
    x = torch.linspace(-1, 1, 8, dtype=F64).view(1, 1, 2, 4)
    mean, var = process.posterior(torch.randn(1, 1, 2, 4, dtype=F64), x, g_s, g_t)
    assert torch.allclose(mean, x, atol=1e-15) and float(var.max()) == 0.0


def test_transition_matches_ddpm(linear):
    betas, alphas, abar = _ddpm_np()
    i = np.arange(1, T + 1)
    g_s = linear.gamma(torch.from_numpy((i - 1) / T))
    g_t = linear.gamma(torch.from_numpy(i / T))
    a, var = process.transition(g_s, g_t)
    np.testing.assert_allclose(a.numpy(), np.sqrt(alphas), rtol=1e-12)   # adjacent: sqrt(1 - beta_t)
    np.testing.assert_allclose(var.numpy(), betas, rtol=1e-9)
    # respaced pair s < t: 1 - abar_t / abar_s
    s_idx, t_idx = np.array([1, 10, 500]), np.array([1000, 11, 900])
    a, var = process.transition(linear.gamma(torch.from_numpy(s_idx / T)), linear.gamma(torch.from_numpy(t_idx / T)))
    r = abar[t_idx - 1] / abar[s_idx - 1]
    np.testing.assert_allclose(a.numpy() ** 2, r, rtol=1e-12)
    np.testing.assert_allclose(var.numpy(), 1 - r, rtol=1e-9)


@pytest.mark.parametrize("g_s,g_t", [(-9.0, -8.5), (-2.0, 3.0), (1.0, 1.2)])
def test_transition_and_posterior_sampling_moments(g_s, g_t):
    """Sample x -> z_s ~ q(z_s|x) -> z_t ~ transition: z_t must have q(z_t|x)'s moments,
    and z_s - posterior_mean(z_t, x) must be centred, uncorrelated with z_t, and
    have the posterior variance."""
    n = 400_000
    gen = torch.Generator().manual_seed(3)
    x = 0.7
    gs, gt = torch.tensor(g_s, dtype=F64), torch.tensor(g_t, dtype=F64)
    z_s = process.q_sample(torch.full((n,), x, dtype=F64), gs, torch.randn(n, generator=gen, dtype=F64))
    a_ts, v_ts = process.transition(gs, gt)
    z_t = a_ts * z_s + v_ts.sqrt() * torch.randn(n, generator=gen, dtype=F64)
    a_t, s_t = process.alpha_sigma(gt)
    se = float(s_t) / math.sqrt(n)
    assert abs(float(z_t.mean()) - float(a_t) * x) < 5 * se
    assert abs(float(z_t.var()) / float(s_t) ** 2 - 1) < 5 * math.sqrt(2 / n)
    mean, var = process.posterior(z_t, torch.full((n,), x, dtype=F64), gs, gt)
    r = z_s - mean
    v = float(var)
    assert abs(float(r.mean())) < 5 * math.sqrt(v / n)
    assert abs(float(r.var()) / v - 1) < 5 * math.sqrt(2 / n)
    corr = float(((r - r.mean()) * (z_t - z_t.mean())).mean() / (r.std() * z_t.std()))
    assert abs(corr) < 5 / math.sqrt(n)


def test_q_sample_predict_x0_inverse():
    g = torch.Generator().manual_seed(4)
    x = torch.rand(4, 1, 3, 3, generator=g, dtype=F64) * 2 - 1
    eps = torch.randn(x.shape, generator=g, dtype=F64)
    gam = _col([-13.0, -2.0, 0.0, 5.0])
    z = process.q_sample(x, gam, eps)
    assert torch.allclose(process.predict_x0(z, eps, gam), x, atol=1e-10)
    a, s = process.alpha_sigma(gam)
    assert torch.allclose(a ** 2 + s ** 2, torch.ones_like(a), atol=1e-15)
    assert torch.allclose(s ** 2 / a ** 2, gam.exp(), rtol=1e-12)


def test_reverse_with_true_eps_is_posterior():
    g = torch.Generator().manual_seed(5)
    x = torch.rand(3, 1, 4, 4, generator=g, dtype=F64) * 2 - 1
    eps = torch.randn(x.shape, generator=g, dtype=F64)
    g_s, g_t = _col([-6.0, -1.0, 2.0]), _col([-5.0, 0.5, 4.0])
    z = process.q_sample(x, g_t, eps)
    m_q, v_q = process.posterior(z, x, g_s, g_t)
    m_p, v_p = process.reverse(z, eps, g_s, g_t, "posterior")
    assert torch.allclose(m_p, m_q, atol=1e-12) and torch.allclose(v_p, v_q)
    m_p2, v_p2 = process.reverse(z, eps, g_s, g_t, "transition")
    assert torch.allclose(m_p2, m_q, atol=1e-12)
    assert torch.allclose(v_p2, process.transition(g_s, g_t)[1].expand_as(v_p2))
    assert torch.all(v_p2 > v_q)                          # beta_t > beta-tilde_t
    with pytest.raises(ValueError):
        process.reverse(z, eps, g_s, g_t, "learned")


def test_prior_kl_is_gaussian_kl_to_standard_normal():
    x = torch.linspace(-1, 1, 11, dtype=F64)
    for gam in (-1.0, 5.0, 10.0):
        g = torch.tensor(gam, dtype=F64)
        a, s = process.alpha_sigma(g)
        want = process.gaussian_kl(a * x, s ** 2, torch.zeros_like(x), torch.ones_like(x))
        assert torch.allclose(process.prior_kl(x, g), want, rtol=1e-10, atol=1e-15)
    # DDPM's L_T for x = 1: tiny but positive
    lt = process.prior_kl(torch.ones(1, dtype=F64), torch.tensor(10.0, dtype=F64))
    assert 0 < float(lt) < 1e-4
