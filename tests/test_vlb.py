"""The discretized decoder (DDPM eq. 13) and the exact chain VLB, against
scipy and against the closed-form denoiser's known answer (log2 K bits)."""
import math

import numpy as np
import pytest
import torch
from helpers import random_model
from scipy import stats
from scipy.special import logsumexp

from ddpm_codec.bound.vlb import chain_terms, concat_terms
from ddpm_codec.diffusion.likelihood import (
    decoder_bits,
    discretized_gaussian_log_prob,
    model_to_pixels,
    pixels_to_model,
)
from ddpm_codec.testing.closed_form import closed_form_model

F64 = torch.float64
LOG2 = math.log(2.0)
GRID = np.arange(256) / 127.5 - 1.0
VDM_WIDE = {"type": "linear_gamma", "gamma_min": -13.3, "gamma_max": 10.0}


def scipy_discretized_logp(x, mean, scale):
    """log P(bin of x) under N(mean, scale^2), bins [x -+ 1/255], end bins open; scipy.stats.norm.
    The CDF difference is taken on the side of the mean where it does not cancel."""
    x, mean, scale = np.broadcast_arrays(np.asarray(x, np.float64), mean, scale)
    lo = np.where(x < -1 + 1e-9, -np.inf, (x - 1 / 255 - mean) / scale)
    hi = np.where(x > 1 - 1e-9, np.inf, (x + 1 / 255 - mean) / scale)
    right = lo > 0
    with np.errstate(divide="ignore"):
        p_left = np.log(stats.norm.cdf(hi) - stats.norm.cdf(lo))
        p_right = np.log(stats.norm.sf(lo) - stats.norm.sf(hi))
    return np.where(right, p_right, p_left)


# ---------------------------------------------------------------- decoder

def test_pixel_scaling_round_trip():
    px = torch.arange(256, dtype=torch.uint8)
    x = pixels_to_model(px, F64)
    assert float(x[0]) == -1.0 and float(x[-1]) == 1.0
    np.testing.assert_allclose(x.numpy(), GRID, rtol=0, atol=1e-15)
    assert torch.equal(model_to_pixels(x), px)
    assert torch.equal(model_to_pixels(x + 0.99 / 255), px)      # nearest value within half a bin


MEANS = [-7.0, -1.3, -1.0, -0.999, -0.5, 0.0, 1 / 255, 0.123, 0.9, 1.0, 1.2, 6.0]
LOG_SCALES = [-12.0, -6.65, -4.6, -2.0, 0.0, 1.5, 4.0]


@pytest.mark.parametrize("log_scale", LOG_SCALES)
def test_decoder_sums_to_one(log_scale):
    x = torch.from_numpy(GRID)[:, None].expand(256, len(MEANS))
    mean = torch.tensor(MEANS, dtype=F64)[None].expand(256, len(MEANS))
    lp = discretized_gaussian_log_prob(x, mean, torch.full_like(mean, log_scale))
    assert torch.all(torch.isfinite(lp) | (lp == -math.inf))
    assert torch.all(lp <= 1e-15)
    total = logsumexp(lp.numpy(), axis=0)
    # 1e-11: bin edges are x +- 1/255 computed per bin, so neighbouring edges
    # differ by float64 rounding (~1e-17); at scale e^-12 with the mean on an
    # edge (mean 0) that moves ~2e-12 of mass.
    np.testing.assert_allclose(total, 0.0, rtol=0, atol=1e-11)


@pytest.mark.parametrize("log_scale", LOG_SCALES)
def test_decoder_matches_scipy(log_scale):
    x = GRID[:, None]
    mean = np.array(MEANS)[None]
    ours = discretized_gaussian_log_prob(torch.from_numpy(np.broadcast_to(x, (256, len(MEANS))).copy()),
                                         torch.from_numpy(np.broadcast_to(mean, (256, len(MEANS))).copy()),
                                         torch.full((256, len(MEANS)), log_scale, dtype=F64)).numpy()
    ref = scipy_discretized_logp(x, mean, math.exp(log_scale))
    ok = ref > -600                                   # where scipy's CDFs have not underflowed
    assert ok.sum() >= len(MEANS)                     # at least the bin(s) at each mean
    np.testing.assert_allclose(ours[ok], ref[ok], rtol=1e-9, atol=1e-12)
    # beyond scipy's range ours stays finite (or -inf), never NaN, and is tiny
    assert not np.isnan(ours).any()
    assert np.all(ours[~ok] < -500)


def test_decoder_tails_are_finite_and_monotone():
    """Far tails: log-mass keeps decreasing with distance instead of hitting log(0)."""
    x = torch.from_numpy(GRID)
    lp = discretized_gaussian_log_prob(x, torch.full_like(x, -1.0), torch.full_like(x, math.log(0.05)))
    assert torch.all(torch.isfinite(lp))
    assert torch.all(lp[1:] < lp[:-1])


def test_decoder_bits_is_minus_log2():
    x = torch.from_numpy(GRID)
    m, ls = torch.full_like(x, 0.1), torch.full_like(x, -3.0)
    assert torch.allclose(decoder_bits(x, m, ls), -discretized_gaussian_log_prob(x, m, ls) / LOG2)


# ---------------------------------------------------------------- chain terms, tiny network

@pytest.fixture(scope="module")
def tiny_model():
    return random_model("tiny", 0, scale=0.05)


def test_chain_terms_against_independent_formulas(tiny_model, fmnist_images):
    """Each term recomputed with different formulas: prior from alpha/sigma in
    numpy, diffusion KLs in the VDM eps form, the decoder with scipy."""
    model = tiny_model
    px = torch.from_numpy(fmnist_images[:3])
    times = model.schedule.chain(6)
    noise = torch.randn((times.numel() + 1, *px.shape), generator=torch.Generator().manual_seed(1), dtype=F64)
    terms = chain_terms(model, px, times, noise=noise)
    x = px.double() / 127.5 - 1
    xn = x.numpy()

    _, _, abar = _ddpm_abar()
    ab_T = abar[-1]
    prior = 0.5 * (ab_T * xn ** 2 + (1 - ab_T) - np.log(1 - ab_T) - 1).reshape(3, -1).sum(1) / LOG2
    np.testing.assert_allclose(terms.prior.numpy(), prior, rtol=1e-9)

    idx = np.round(times.numpy() * 1000).astype(int)
    for k in range(1, times.numel()):
        ab_s, ab_t = abar[idx[k - 1] - 1], abar[idx[k] - 1]
        z = math.sqrt(ab_t) * x + math.sqrt(1 - ab_t) * noise[k]
        with torch.no_grad():
            eps_hat = model.unet(z.float(), torch.full((3,), float(times[k]))).double()
        snr_ratio = (ab_s / (1 - ab_s)) / (ab_t / (1 - ab_t))          # exp(gamma_t - gamma_s)
        kl = 0.5 * (snr_ratio - 1) * ((noise[k] - eps_hat) ** 2).flatten(1).sum(1) / LOG2
        np.testing.assert_allclose(terms.diffusion[:, k - 1].numpy(), kl.numpy(), rtol=1e-6)

    ab_0 = abar[idx[0] - 1]                                 # decoder p(x | x_1)
    z0 = math.sqrt(ab_0) * x + math.sqrt(1 - ab_0) * noise[0]
    with torch.no_grad():
        eps_hat = model.unet(z0.float(), torch.full((3,), float(times[0]))).double()
    x0_hat = ((z0 - math.sqrt(1 - ab_0) * eps_hat) / math.sqrt(ab_0)).numpy()
    lp = scipy_discretized_logp(xn, x0_hat, math.sqrt((1 - ab_0) / ab_0))
    np.testing.assert_allclose(terms.decoder.numpy(), -lp.reshape(3, -1).sum(1) / LOG2, rtol=1e-7)

    s = terms.summary()
    assert s["dims_per_image"] == 784 and s["n_images"] == 3 and s["steps"] == 6
    assert s["bpd"] == pytest.approx(s["prior_bpd"] + s["diffusion_bpd"] + s["decoder_bpd"], rel=1e-12)
    assert s["bpd"] == pytest.approx(float(terms.total.mean()) / 784, rel=1e-12)
    both = concat_terms([terms, terms])
    assert both.summary()["bpd"] == pytest.approx(s["bpd"], rel=1e-12) and both.prior.numel() == 6


def _ddpm_abar():
    betas = np.linspace(1e-4, 0.02, 1000)
    return betas, 1 - betas, np.cumprod(1 - betas)


# ---------------------------------------------------------------- closed-form denoiser

def _closed_form_eps_np(z, data, gamma):
    """x0_hat and eps of the exact denoiser, written again in numpy."""
    a, s = math.sqrt(1 / (1 + math.exp(gamma))), math.sqrt(1 / (1 + math.exp(-gamma)))
    zf, xf = z.reshape(len(z), -1), data.reshape(len(data), -1)
    logits = -((zf[:, None, :] - a * xf[None]) ** 2).sum(-1) / (2 * s * s)
    w = np.exp(logits - logits.max(1, keepdims=True))
    w /= w.sum(1, keepdims=True)
    return (w @ xf).reshape(z.shape)


@pytest.fixture(scope="module")
def closed_form8(fmnist_images):
    px = torch.from_numpy(fmnist_images[:8])
    return px, closed_form_model(px, VDM_WIDE)


def test_closed_form_decoder_term_matches_scipy(closed_form8):
    px, model = closed_form8
    times = model.schedule.chain(20)
    noise = torch.randn((times.numel() + 1, *px.shape), generator=torch.Generator().manual_seed(7), dtype=F64)
    terms = chain_terms(model, px, times, noise=noise)
    g0 = float(model.schedule.gamma(torch.tensor(0.0, dtype=F64)))
    x = px.numpy().astype(np.float64) / 127.5 - 1
    a0, s0 = math.sqrt(1 / (1 + math.exp(g0))), math.sqrt(1 / (1 + math.exp(-g0)))
    z0 = a0 * x + s0 * noise[0].numpy()
    x0_hat = _closed_form_eps_np(z0, x, g0)
    lp = scipy_discretized_logp(x, x0_hat, math.exp(0.5 * g0))
    want = -lp.reshape(8, -1).sum(1) / LOG2
    np.testing.assert_allclose(terms.decoder.numpy(), want, rtol=1e-8)
    assert np.all(want > 0.5)                       # not trivially zero: sigma_0 / alpha_0 ~ bin / 3
    # prior term ~ 0 for gamma_max = 10
    assert float(terms.prior.max()) < 0.05


@pytest.mark.parametrize("steps,draws,tol", [(200, 16, 0.5), (1000, 8, 0.25)])
def test_closed_form_vlb_is_log2_K(closed_form8, steps, draws, tol):
    """K = 8 images, data uniform on them: -VLB minus the decoder term ~ log2 K = 3 bits/image.

    Honest tolerance, measured (40 noise draws per setting, 8 images): the
    finite chain adds a time-discretization gap that shrinks with steps,
    +0.34 bit at 100 steps, +0.24 at 200, +0.05 at 1000; the estimator uses
    one z per level, so one image's figure has sd ~1.0 bit at 200 steps and
    ~0.5 at 1000.  Averaging `draws` noise draws x 8 images gives sd ~0.09
    (200 steps) and ~0.06 (1000 steps): tolerance = gap + ~3 sd."""
    px, model = closed_form8
    times = model.schedule.chain(steps)
    vals = []
    for seed in range(draws):
        terms = chain_terms(model, px, times, generator=torch.Generator().manual_seed(seed))
        assert torch.all(terms.diffusion >= 0)
        vals.append((terms.total - terms.decoder).numpy())
    vals = np.array(vals)
    assert abs(vals.mean() - math.log2(8)) < tol, vals.mean()


def test_closed_form_vlb_grows_with_K(fmnist_images):
    """Two images cost ~1 bit, not 3: the figure follows K, it is not a constant."""
    px = torch.from_numpy(fmnist_images[8:10])
    model = closed_form_model(px, VDM_WIDE)
    times = model.schedule.chain(200)
    vals = [(lambda t: (t.total - t.decoder).mean().item())(
        chain_terms(model, px, times, generator=torch.Generator().manual_seed(s))) for s in range(16)]
    assert abs(np.mean(vals) - 1.0) < 0.5


# ---------------------------------------------------------------- sampled steps (nll --step-samples)

def test_sampled_terms_recompute_each_drawn_kl(tiny_model, fmnist_images):
    """Every nonzero column of the sampled estimate is stratum size x the
    closed-form KL at that transition, recomputed here from the same draws;
    exactly one column per stratum is drawn; L_T equals the exact term."""
    from ddpm_codec.bound.vlb import sampled_chain_terms
    model, px = tiny_model, torch.from_numpy(fmnist_images[:4])
    times = model.schedule.chain(10)
    gens = [torch.Generator().manual_seed(100 + i) for i in range(4)]
    terms = sampled_chain_terms(model, px, times, 3, gens)
    K = times.numel() - 1
    strata = [list(map(int, a)) for a in np.array_split(np.arange(K), 3)]
    x = px.double() / 127.5 - 1
    gam = model.gamma(times.double())
    for i in range(4):
        g = torch.Generator().manual_seed(100 + i)                 # replay image i's draws
        picks = [s[int(torch.randint(len(s), (1,), generator=g))] for s in strata]
        noise = torch.randn((4, 1, 28, 28), generator=g, dtype=F64)
        row = terms.diffusion[i]
        assert sorted(torch.nonzero(row).flatten().tolist()) == picks
        for j, k0 in enumerate(picks):
            k = k0 + 1
            a_t, s_t = torch.sigmoid(-gam[k]).sqrt(), torch.sigmoid(gam[k]).sqrt()
            z = a_t * x[i:i + 1] + s_t * noise[j + 1]
            with torch.no_grad():
                eps_hat = model.unet(z.float(), times[k].float().view(1)).double()
            kl = 0.5 * torch.expm1(gam[k] - gam[k - 1]) * ((noise[j + 1] - eps_hat) ** 2).sum() / LOG2
            assert float(row[k0]) == pytest.approx(len(strata[j]) * float(kl), rel=1e-6)
    exact = chain_terms(model, px, times, generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(terms.prior.numpy(), exact.prior.numpy(), rtol=1e-12)


def test_sampled_estimate_is_unbiased(fmnist_images):
    """Closed-form denoiser over 8 images, 20 steps: the mean of 200 stratified
    estimates (4 of 20 steps) agrees with the mean of 40 exact sums within 4 SE."""
    from ddpm_codec.bound.vlb import sampled_chain_terms
    ref = torch.from_numpy(fmnist_images[:8].copy())
    model = closed_form_model(ref)
    times = model.schedule.chain(20)
    px = ref[:2]
    exact = torch.stack([chain_terms(model, px, times, generator=torch.Generator().manual_seed(s)).total
                         for s in range(40)])
    est = torch.stack([sampled_chain_terms(model, px, times, 4,
                                           [torch.Generator().manual_seed(10_000 + 2 * s + i) for i in range(2)]).total
                       for s in range(200)])
    for i in range(2):
        se = (exact[:, i].var() / 40 + est[:, i].var() / 200).sqrt()
        assert abs(float(est[:, i].mean() - exact[:, i].mean())) < 4 * float(se) + 1e-9
        assert float(est[:, i].std()) > 0          # it really samples
