"""Noise schedules: DDPM's numbers in float64, chains, VDM's monotone gamma."""
import math

import numpy as np
import pytest
import torch

from ddpm_codec.diffusion.schedules import (
    DiscreteSchedule,
    LinearGamma,
    MonotoneGamma,
    build_schedule,
    cosine_betas,
    linear_betas,
)

F64 = torch.float64
T = 1000


def _ddpm_np(T=1000, b0=1e-4, b1=0.02):
    """betas, alpha_bar and 1 - alpha_bar computed independently in numpy float64."""
    betas = np.linspace(b0, b1, T, dtype=np.float64)
    log_abar = np.cumsum(np.log1p(-betas))
    return betas, np.exp(log_abar), -np.expm1(log_abar)


@pytest.fixture(scope="module")
def linear():
    return build_schedule({"type": "linear", "T": T, "beta_start": 1e-4, "beta_end": 0.02})


def _grid(T):
    return torch.arange(0, T + 1, dtype=F64) / T


# ---------------------------------------------------------------- DDPM linear

def test_linear_betas_are_ddpm(linear):
    b = linear.betas.numpy()
    assert linear.T == T and b.dtype == np.float64 and b.shape == (T,)
    assert b[0] == 1e-4 and abs(b[-1] - 0.02) < 1e-17
    np.testing.assert_allclose(np.diff(b), (0.02 - 1e-4) / (T - 1), rtol=1e-9)


def test_alpha_bar_first_step_float64(linear):
    """The float32 trap: alpha_bar(1/T) = 1 - 1e-4 exactly (beta_1); in float32,
    1 - alpha_bar would keep only ~3 significant digits of 1e-4."""
    t = torch.tensor(1.0 / T, dtype=F64)
    abar, s2 = linear.alpha_bar(t), linear.sigma2(t)
    assert abar.dtype == F64 and s2.dtype == F64
    assert abs(float(abar) - (1 - 1e-4)) < 1e-15
    assert abs(float(s2) / 1e-4 - 1) < 1e-12          # float32 would give ~1e-4 relative error
    assert abs(float(linear.gamma(t)) - math.log(1e-4 / (1 - 1e-4))) < 1e-12
    # what the schedule avoids: the same quantity formed in float32
    s2_f32 = 1 - torch.tensor(1 - 1e-4, dtype=torch.float32)
    assert abs(float(s2_f32) / 1e-4 - 1) > 1e-5


def test_linear_alpha_bar_matches_numpy_everywhere(linear):
    _, abar, one_minus = _ddpm_np()
    t = _grid(T)[1:]
    np.testing.assert_allclose(linear.alpha_bar(t).numpy(), abar, rtol=1e-12)
    np.testing.assert_allclose(linear.sigma2(t).numpy(), one_minus, rtol=1e-11)
    np.testing.assert_allclose(linear.snr(t).numpy(), abar / one_minus, rtol=1e-11)
    assert float(linear.alpha_bar(torch.tensor(1.0, dtype=F64))) < 5e-5      # x_T ~ N(0, I)


def test_discrete_time_zero_is_data(linear):
    t0 = torch.tensor(0.0, dtype=F64)
    assert float(linear.gamma(t0)) == -math.inf
    assert float(linear.alpha_bar(t0)) == 1.0 and float(linear.sigma2(t0)) == 0.0


def test_discrete_gamma_dtype_follows_input(linear):
    assert linear.gamma(torch.tensor([0.5], dtype=torch.float32)).dtype == torch.float32
    assert linear.gamma(torch.tensor([0.5], dtype=F64)).dtype == F64


def test_cosine_schedule():
    sch = build_schedule({"type": "cosine", "T": T})
    abar = sch.alpha_bar(_grid(T)).numpy()
    assert abar[0] == 1.0
    assert np.all(np.diff(abar) < 0), "alpha_bar must decrease strictly"
    assert abar[-1] < 1e-6
    assert np.all(sch.betas.numpy() <= 0.999) and np.all(sch.betas.numpy() > 0)
    # Nichol & Dhariwal: abar_i = f(i/T) / f(0), f(t) = cos^2((t + s)/(1 + s) pi/2), where unclipped
    s = 0.008
    f = np.cos((np.arange(T + 1) / T + s) / (1 + s) * np.pi / 2) ** 2
    np.testing.assert_allclose(abar[1:T - 20], (f / f[0])[1:T - 20], rtol=1e-10)


def test_cosine_betas_clipped():
    b = cosine_betas(T, max_beta=0.5).numpy()
    assert b.max() == 0.5


# ---------------------------------------------------------------- chains

@pytest.mark.parametrize("steps", [1, 2, 3, 10, 17, 100, 999, 1000])
def test_discrete_chain(linear, steps):
    c = linear.chain(steps)
    assert c.dtype == F64 and c.numel() == steps
    assert float(c[-1]) == 1.0
    if steps > 1:
        assert float(c[0]) == 1.0 / T                   # first latent is DDPM's x_1
        assert torch.all(c[1:] > c[:-1])
    idx = c * T
    assert torch.equal(idx, idx.round())                 # on the schedule's grid


def test_discrete_full_chain_is_every_step(linear):
    assert torch.equal(linear.chain(T), torch.arange(1, T + 1, dtype=F64) / T)


@pytest.mark.parametrize("steps", [1, 2, 7, 100, 5000])
def test_continuous_chain(steps):
    sch = LinearGamma(-13.3, 5.0)
    c = sch.chain(steps)
    assert c.dtype == F64 and c.numel() == steps + 1
    assert float(c[0]) == 0.0 and float(c[-1]) == 1.0
    np.testing.assert_allclose(np.diff(c.numpy()), 1.0 / steps, rtol=1e-9)


@pytest.mark.parametrize("steps", [0, -1])
def test_chain_rejects_too_few_steps(linear, steps):
    with pytest.raises(ValueError, match="steps"):
        linear.chain(steps)
    with pytest.raises(ValueError, match="steps"):
        LinearGamma().chain(steps)


def test_chain_rejects_more_than_T(linear):
    with pytest.raises(ValueError, match="T=1000"):
        linear.chain(T + 1)


# ---------------------------------------------------------------- continuous

def test_linear_gamma_endpoints_and_linearity():
    sch = LinearGamma(-13.3, 5.0)
    t = torch.linspace(0, 1, 11, dtype=F64)
    g = sch.gamma(t).numpy()
    assert abs(g[0] - (-13.3)) < 1e-6 and abs(g[-1] - 5.0) < 1e-6
    np.testing.assert_allclose(np.diff(g), (g[-1] - g[0]) / 10, rtol=1e-12)
    np.testing.assert_allclose(sch.alpha_bar(t).numpy() + sch.sigma2(t).numpy(), 1.0, rtol=1e-15)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_monotone_gamma_is_monotone_and_hits_ends(seed):
    torch.manual_seed(seed)
    sch = MonotoneGamma(-13.3, 5.0, hidden=64)
    with torch.no_grad():                              # random shape, far from the init
        for p in (sch.l1.raw, sch.l2.raw, sch.l3.raw, sch.l2.bias, sch.l1.bias):
            p.add_(torch.randn_like(p) * 2)
    t = torch.linspace(0, 1, 2001, dtype=F64)
    with torch.no_grad():
        g = sch.gamma(t)
    assert torch.all(g[1:] > g[:-1]), "gamma(t) must increase"
    # exactly the (float32) endpoint parameters, to float64 rounding
    assert float(g[0]) == pytest.approx(float(sch.gamma_min.detach()), abs=1e-12)
    assert float(g[-1]) == pytest.approx(float(sch.gamma_max.detach()), abs=1e-12)
    # endpoints are trained: they move with the parameters
    with torch.no_grad():
        sch.gamma_min.fill_(-10.0)
        sch.gamma_max.fill_(7.0)
        g = sch.gamma(torch.tensor([0.0, 1.0], dtype=F64))
    assert g.tolist() == pytest.approx([-10.0, 7.0], abs=1e-12)


def test_monotone_gamma_has_gradients_for_all_parameters():
    sch = MonotoneGamma(hidden=8)
    sch.gamma(torch.rand(16, dtype=torch.float32)).sum().backward()
    for name, p in sch.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("cfg", [
    {"type": "linear", "T": 100, "beta_start": 1e-4, "beta_end": 0.02},
    {"type": "cosine", "T": 50},
    {"type": "linear_gamma", "gamma_min": -13.3, "gamma_max": 5.0, "learned": True},
    {"type": "monotone_gamma", "gamma_min": -12.0, "gamma_max": 6.0, "hidden": 16},
])
def test_config_round_trip(cfg):
    sch = build_schedule(cfg)
    again = build_schedule(sch.config())
    t = torch.linspace(0, 1, 101, dtype=F64)
    if isinstance(sch, MonotoneGamma):
        again.load_state_dict(sch.state_dict())
    with torch.no_grad():
        assert torch.equal(sch.gamma(t), again.gamma(t))
    assert sch.config() == again.config()


def test_unknown_schedule():
    with pytest.raises(ValueError, match="unknown schedule"):
        build_schedule({"type": "quadratic"})


def test_discrete_schedule_from_custom_betas():
    betas = linear_betas(10, 0.1, 0.2)
    sch = DiscreteSchedule(betas, "linear", {"T": 10, "beta_start": 0.1, "beta_end": 0.2})
    expected = np.cumprod(1 - np.linspace(0.1, 0.2, 10))
    np.testing.assert_allclose(sch.alpha_bar(_grid(10)[1:]).numpy(), expected, rtol=1e-13)
