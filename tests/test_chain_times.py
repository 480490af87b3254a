"""Fitted chain times: the warp, the shortest path, the fit, and the CLI."""
import itertools
import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers import random_model

from ddpm_codec.bound import chain_times
from ddpm_codec.diffusion import process
from ddpm_codec.diffusion.model import DiffusionModel
from ddpm_codec.diffusion.schedules import LinearGamma, build_schedule
from ddpm_codec.io.checkpoint import fingerprint, load_model

F64 = torch.float64


def test_warp_places_latents_on_the_knots_and_between_them():
    s = LinearGamma()
    knots = [0.0, 0.1, 0.15, 0.6, 1.0]
    s.set_time_warp(knots)
    assert s.chain(4).tolist() == knots                              # steps == K: the knots
    mid = s.chain(8).numpy()
    assert np.allclose(mid[0::2], knots) and np.allclose(mid[1::2], [0.05, 0.125, 0.375, 0.8])
    t = s.chain(7)
    assert t[0] == 0.0 and t[-1] == 1.0 and bool(torch.all(t[1:] > t[:-1]))
    s.set_time_warp(None)
    assert torch.equal(s.chain(5), torch.linspace(0, 1, 6, dtype=F64))


@pytest.mark.parametrize("bad", [[0.0, 0.5, 0.4, 1.0], [0.1, 1.0], [0.0, 0.9], [0.0]])
def test_warp_knots_must_rise_from_0_to_1(bad):
    with pytest.raises(ValueError, match="rise strictly"):
        LinearGamma().set_time_warp(bad)


def test_warp_refused_on_a_discrete_schedule():
    s = build_schedule({"type": "linear", "T": 100, "beta_start": 1e-4, "beta_end": 0.02})
    with pytest.raises(ValueError, match="continuous"):
        s.set_time_warp([0.0, 1.0])


def test_warp_is_part_of_the_config_and_the_fingerprint():
    m = random_model("tiny-vdm", 0)
    fp = fingerprint(m)
    m.schedule.set_time_warp([0.0, 0.3, 1.0])
    assert fingerprint(m) != fp
    m2 = DiffusionModel.from_config(json.loads(json.dumps(m.config())))
    assert torch.equal(m2.schedule.chain(6), m.schedule.chain(6))


def test_best_path_matches_brute_force():
    rng = np.random.default_rng(0)
    G, steps = 9, 3
    costs = rng.uniform(0.1, 2.0, (G + 1, G + 1))
    costs[np.tril_indices(G + 1)] = np.inf
    brute = min((chain_times.path_cost(costs, [0, *mid, G]), [0, *mid, G])
                for mid in itertools.combinations(range(1, G), steps - 1))
    best, path = chain_times.best_path(costs, steps)
    assert path == brute[1] and math.isclose(best, brute[0])
    assert math.isclose(chain_times.path_cost(costs, path), best)
    with pytest.raises(ValueError):
        chain_times.best_path(costs, G + 1)


def test_pair_cost_is_the_posterior_kl_in_eps_form():
    """0.5 expm1(g_t - g_s) |eps - eps_hat|^2 equals KL(q(z_s|z_t,x) || p(z_s|z_t))
    computed from the two Gaussians (posterior variance)."""
    torch.manual_seed(0)
    g_s, g_t = torch.tensor(-2.0, dtype=F64), torch.tensor(0.5, dtype=F64)
    x = torch.rand(3, 1, 4, 4, dtype=F64) * 2 - 1
    eps = torch.randn_like(x)
    eps_hat = eps + 0.3 * torch.randn_like(x)
    z_t = process.q_sample(x, g_t, eps)
    m_q, v_q = process.posterior(z_t, x, g_s, g_t)
    m_p, v_p = process.reverse(z_t, eps_hat, g_s, g_t, "posterior")
    kl = process.gaussian_kl(m_q, v_q, m_p, v_p).flatten(1).sum(1)
    gam = np.array([float(g_s), float(g_t)])
    for i in range(3):
        m = np.array([0.0, float(((eps[i] - eps_hat[i]) ** 2).sum())])
        assert math.isclose(chain_times.pair_costs(gam, m)[0, 1], float(kl[i]), rel_tol=1e-9)


def test_fit_is_no_worse_than_even_times_and_reports_its_own_cost():
    m = random_model("tiny-vdm", 1, scale=0.05)
    px = torch.randint(0, 256, (4, 1, 16, 16), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    fit = chain_times.fit_chain(m, px, steps=5, grid=40, variance=False)
    assert len(fit["knots"]) == 6 and fit["knots"][0] == 0.0 and fit["knots"][-1] == 1.0
    assert fit["fitted_bpd"] == fit["times_only_bpd"] <= fit["even_bpd"] and fit["eps_error"] is None
    # the table's cost of the chosen path, recomputed independently from eps errors
    x = px.to(torch.float32) / 127.5 - 1
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    total = 0.0
    with torch.no_grad():
        for s, t in zip(fit["knots"][:-1], fit["knots"][1:]):
            g_s, g_t = m.gamma(torch.tensor(s, dtype=F64)), m.gamma(torch.tensor(t, dtype=F64))
            e = m.eps(process.q_sample(x, g_t.float(), eps), torch.tensor(t))
            total += 0.5 * float(torch.expm1(g_t - g_s)) * float(((eps - e) ** 2).sum()) / 4
    assert math.isclose(total / (256 * math.log(2)), fit["fitted_bpd"], rel_tol=1e-4)


def test_fit_chain_cli_writes_a_refitted_model(tmp_path, tiny_path, fmnist_idx):
    from ddpm_codec.io.checkpoint import save_model
    from ddpm_codec_cli.main import cli
    src = tmp_path / "vdm"
    save_model(random_model("tiny-vdm", 2, scale=0.05), src, {"ema": True, "recommended_steps": 4})
    dest = tmp_path / "fitted"
    args = ["--to", str(dest), "--steps", "4", "--data", str(fmnist_idx), "--n", "4", "--grid", "16"]
    res = CliRunner().invoke(cli, ["fit-chain", "--model", str(src), *args])
    assert res.exit_code == 0, res.output
    fitted, meta = load_model(str(dest))
    base, _ = load_model(str(src))
    assert meta["recommended_steps"] == 4
    assert meta["chain_fit"]["fitted_bpd"] <= meta["chain_fit"]["even_bpd"]
    assert fitted.schedule.chain(4).tolist() == fitted.config()["time_warp"]
    assert fitted.eps_error is not None and base.eps_error is None
    assert fingerprint(fitted) != fingerprint(base)
    for a, b in zip(fitted.state_dict().values(), base.state_dict().values()):
        assert torch.equal(a, b)


def test_fit_chain_cli_refuses_a_discrete_schedule(tmp_path, tiny_path, fmnist_idx):
    from ddpm_codec_cli.main import cli
    res = CliRunner().invoke(cli, ["fit-chain", "--model", str(tiny_path), "--to", str(tmp_path / "x"),
                                   "--data", str(fmnist_idx), "--n", "2", "--grid", "8", "--steps", "2"])
    assert res.exit_code != 0 and "discrete schedule" in res.output
    assert not (tmp_path / "x.json").exists()


def _tiny_batch():
    m = random_model("tiny-vdm", 1, scale=0.05)
    px = torch.randint(0, 256, (4, 1, 16, 16), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    return m, px


@torch.no_grad()
def _fitted_batch_kl_bpd(m, px, knots, scale):
    """Diffusion term (bits/dim) of the chain `knots` on the batch and noise the fit
    measured, from the Gaussian KLs of model.reverse with its variance times `scale`."""
    x = px.to(torch.float64) / 127.5 - 1
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float32).to(F64)
    total = 0.0
    for s, t in zip(knots[:-1], knots[1:]):
        g_s, g_t = m.gamma(torch.tensor(s, dtype=F64)), m.gamma(torch.tensor(t, dtype=F64))
        z_t = process.q_sample(x, g_t, eps)
        e = m.eps(z_t.float(), torch.tensor(t)).to(F64)
        m_q, v_q = process.posterior(z_t, x, g_s, g_t)
        m_p, v_p = m.reverse(z_t, e, g_s, g_t)
        total += float(process.gaussian_kl(m_q, v_q, m_p, v_p * scale).sum()) / x.shape[0]
    return total / (x[0].numel() * math.log(2))


def test_eps_error_variance_is_the_kl_optimal_one_on_the_fitted_batch():
    """On the images and noise the table was measured with, the KL of each chain step
    computed from the two Gaussians (model.reverse) averages to the fit's log-form pair
    cost, and no other scale of the variance does better."""
    m, px = _tiny_batch()
    fit = chain_times.fit_chain(m, px, steps=4, grid=20, bins=1)
    assert fit["fitted_bpd"] <= min(fit["times_only_bpd"], fit["variance_only_bpd"]) <= fit["even_bpd"]
    m.schedule.set_time_warp(fit["knots"])
    m.set_eps_error(fit["eps_error"])
    kls = {scale: _fitted_batch_kl_bpd(m, px, fit["knots"], scale) for scale in (0.9, 1.0, 1.1)}
    assert math.isclose(kls[1.0], fit["fitted_bpd"], rel_tol=2e-3)
    assert kls[1.0] < min(kls[0.9], kls[1.1])


def test_eps_error_variance_formula_and_config_round_trip():
    m = random_model("tiny-vdm", 0)
    fp = fingerprint(m)
    g_s, g_t = torch.tensor(-3.0, dtype=F64), torch.tensor(-1.0, dtype=F64)
    base = m.reverse_var(g_s, g_t)
    assert math.isclose(float(base), float(torch.sigmoid(g_s) * -torch.expm1(g_s - g_t)))
    table = [0.5, 0.2, 0.1]                                  # at t = 0, 0.5, 1
    m.set_eps_error(table)
    g0, g1 = (float(m.gamma(torch.tensor(v, dtype=F64)).detach()) for v in (0.0, 1.0))
    t_of = (float(g_t) - g0) / (g1 - g0)
    e = float(np.interp(t_of, [0, 0.5, 1], table))           # linear gamma: interpolation in t = in gamma
    assert math.isclose(float(m.reverse_var(g_s, g_t)), float(base) * (1 + math.expm1(2.0) * e), rel_tol=1e-12)
    assert fingerprint(m) != fp
    m2 = DiffusionModel.from_config(json.loads(json.dumps(m.config())))
    assert float(m2.reverse_var(g_s, g_t)) == float(m.reverse_var(g_s, g_t))
    with pytest.raises(ValueError):
        m.set_eps_error([1.0, float("nan")])
    m.set_eps_error(None)
    assert float(m.reverse_var(g_s, g_t)) == float(base)


def test_binned_eps_error_variance_is_kl_optimal_and_beats_one_bin():
    """Per bin of the predicted x0: on the fitted batch the Gaussian KLs from
    model.reverse average to the fit's own cost, rescaling every variance is worse,
    and the binned table is no worse than one variance per step."""
    m, px = _tiny_batch()
    one = chain_times.fit_chain(m, px, steps=4, grid=20, bins=1)
    fit = chain_times.fit_chain(m, px, steps=4, grid=20, bins=4)
    assert np.asarray(fit["eps_error"]).shape == (21, 4) and np.asarray(one["eps_error"]).shape == (21,)
    assert fit["fitted_bpd"] <= one["fitted_bpd"] + 1e-12
    m.schedule.set_time_warp(fit["knots"])
    m.set_eps_error(fit["eps_error"])
    kls = {scale: _fitted_batch_kl_bpd(m, px, fit["knots"], scale) for scale in (0.9, 1.0, 1.1)}
    assert math.isclose(kls[1.0], fit["fitted_bpd"], rel_tol=2e-3)
    assert kls[1.0] < min(kls[0.9], kls[1.1])


def test_binned_eps_error_variance_per_dim_formula_and_round_trip():
    m = random_model("tiny-vdm", 0)
    table = np.array([[0.4, 0.1], [0.3, 0.2], [0.2, 0.05]])          # t = 0, 0.5, 1; bins x0 < 0, x0 >= 0
    m.set_eps_error(table.tolist())
    g_s, g_t = torch.tensor(-3.0, dtype=F64), torch.tensor(-1.0, dtype=F64)
    z = torch.randn(2, 1, 4, 4, dtype=F64)
    eps_hat = torch.randn_like(z)
    mean, var = m.reverse(z, eps_hat, g_s, g_t)
    g0, g1 = (float(m.gamma(torch.tensor(v, dtype=F64)).detach()) for v in (0.0, 1.0))
    t_of = (float(g_t) - g0) / (g1 - g0)
    e_bin = [float(np.interp(t_of, [0, 0.5, 1], table[:, b])) for b in range(2)]
    a2, s2 = torch.sigmoid(-g_t), torch.sigmoid(g_t)
    x0 = (z - s2.sqrt() * eps_hat) / a2.sqrt()
    post = float(torch.sigmoid(g_s) * -torch.expm1(g_s - g_t))
    want = torch.where(x0 < 0, torch.tensor(e_bin[0], dtype=F64), torch.tensor(e_bin[1], dtype=F64)) * math.expm1(2.0) * post + post
    assert torch.allclose(var, want, rtol=1e-12, atol=0)
    assert math.isclose(float(m.reverse_var(g_s, g_t)), post * (1 + math.expm1(2.0) * min(e_bin)), rel_tol=1e-12)
    m2 = DiffusionModel.from_config(json.loads(json.dumps(m.config())))
    assert torch.equal(m2.reverse(z, eps_hat, g_s, g_t)[1], var) and m2.config() == m.config()
    with pytest.raises(ValueError):
        m.set_eps_error([[0.1, -1.0], [0.1, 0.1]])


def test_lossless_round_trip_with_a_binned_variance_model():
    from ddpm_codec.codec import lossless
    from ddpm_codec.codec.units import ImageRecord
    m = random_model("tiny-vdm", 1, scale=0.05)
    rng = np.random.default_rng(0)
    m.set_eps_error(rng.uniform(0.0, 2.0, (11, 8)).tolist())
    imgs = [ImageRecord(pixels=rng.integers(0, 256, (16, 16, 1), dtype=np.uint8), name=f"i{k}.png", mode="L") for k in range(3)]
    fp = fingerprint(m)
    data, rep = lossless.encode(imgs, m, fp, steps=3)
    out = lossless.decode(data, m, fp)
    assert all(np.array_equal(a.pixels, b.pixels) for a, b in zip(imgs, out))
