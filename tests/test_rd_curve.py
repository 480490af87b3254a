"""Rate-distortion evaluator (issue #5): its rates are the -VLB terms, its
distortion falls as bits arrive, and `rd-curve` writes CompressAI JSON and a PNG."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers import random_model

from ddpm_codec.eval.evaluate import evaluate_nll
from ddpm_codec.eval.rd_curve import evaluate_rd, format_table, rd_terms, table_points
from ddpm_codec.io.checkpoint import save_model
from ddpm_codec.testing.closed_form import closed_form_model
from ddpm_codec_cli.main import cli

COMPRESSAI = ("bpp", "bpd", "psnr", "rmse", "encoding_time", "decoding_time")


def run(*args, env=None):
    return CliRunner().invoke(cli, [str(a) for a in args], prog_name="ddpm-codec", env=env)


def _rows(text):
    """Header and data rows of a printed markdown table."""
    return sum(line.startswith("| ") for line in text.splitlines())


def _tiny(name, seed=0):
    return random_model(name, seed, scale=0.02)


@pytest.fixture(scope="module")
def closed(fmnist_images):
    """Exact denoiser of 16 test images (DDPM linear schedule, T = 1000) and those images."""
    im = fmnist_images[:16]
    return closed_form_model(im), im


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny"
    save_model(_tiny("tiny"), path, {"ema": True})
    return path


@pytest.mark.parametrize("which", ["closed_form", "tiny-vdm"])
def test_marginal_latents_reproduce_nll_terms_exactly(which, closed, fmnist_images):
    """Same draws as `evaluate_nll` (seed, image index): the final rate is -VLB - L_0 to rounding,
    L_0 added gives -VLB, per-step KLs agree; discrete and continuous schedules."""
    model, im = closed if which == "closed_form" else (_tiny("tiny-vdm"), fmnist_images[:5])
    steps = 12 if which == "closed_form" else 4
    rec = evaluate_rd(model, im, steps, batch=3, seed=7, latents="marginal", progress=False)
    nll = evaluate_nll(model, im, steps, batch=3, seed=7, progress=False)
    assert rec["results"]["bpd"][-1] == pytest.approx(nll["bpd"] - nll["decoder_bpd"], rel=1e-12)
    assert rec["lossless"]["bpd"] == pytest.approx(nll["bpd"], rel=1e-12)
    assert rec["per_step_bpd"] == pytest.approx(nll["per_step_bpd"], rel=1e-12, abs=1e-15)
    assert rec["prior_bpd"] == pytest.approx(nll["prior_bpd"], rel=1e-12)
    assert rec["results"]["bpd"][0] == pytest.approx(nll["prior_bpd"], rel=1e-12)   # only L_T at the top
    assert len(rec["results"]["bpd"]) == len(nll["times"]) == rec["levels"]


def test_topdown_rate_equals_vlb_within_monte_carlo_noise(closed):
    """Top-down latents have the marginals q(z_t|x) of direct noising, and each KL depends on z_t
    only, so both sums estimate the same -VLB - L_0.  Tolerance: 4 standard errors of the
    difference of two means taken as independent (the draws share seeds, so correlate
    positively: the true error is smaller)."""
    model, im = closed
    im = np.concatenate([im] * 4)            # 64 evaluations: every image with 4 different draws
    td = rd_terms(model, im, 10, batch=32, seed=1, latents="topdown")
    mg = rd_terms(model, im, 10, batch=32, seed=1, latents="marginal")
    a, b = td.cumulative_bits()[:, -1], mg.cumulative_bits()[:, -1]
    se = float(torch.sqrt(a.var() / len(a) + b.var() / len(b)))
    assert abs(float(a.mean() - b.mean())) <= 4 * se
    assert se < 0.2 * float(b.mean())        # the test has power: the noise is small against the rate
    # the top transition sees the same z_{t_K} in both modes: identical bits
    assert torch.equal(td.kl[:, -1], mg.kl[:, -1]) and torch.equal(td.prior, mg.prior)


def test_distortion_falls_as_rate_grows(closed):
    """The closed-form x0_hat is the exact posterior mean, whose MSE cannot rise as latents
    arrive: each step's mean change of per-image MSE is <= 3 standard errors; the rate never
    falls (KLs >= 0); at t_0 the image is recovered exactly, at the top far from it."""
    model, im = closed
    im = np.concatenate([im] * 4)
    tr = rd_terms(model, im, 20, batch=64, seed=2)
    mse = tr.sq.flip(1) / im[0].size                       # (N, levels), top-down
    step = mse[:, 1:] - mse[:, :-1]
    se = step.std(0) / len(im) ** 0.5
    assert bool((step.mean(0) <= 3 * se + 1e-9).all()), (step.mean(0), se)
    bits = tr.cumulative_bits()
    assert bool((bits[:, 1:] - bits[:, :-1] >= -1e-9).all())
    assert float(mse[:, -1].max()) == 0.0
    assert float(mse[:, 0].mean().sqrt()) > 30
    rec = evaluate_rd(model, im, 20, batch=64, seed=2, progress=False)
    r = rec["results"]
    assert r["rmse"][-1] == 0.0 and r["psnr"][-1] is None and r["rmse"][0] > 30
    assert bool((np.diff(r["bpd"]) >= -1e-12).all())
    # about log2(16) = 4 bits per image for the closed form (a few more for the chain's slack)
    assert 3.0 < r["bpd"][-1] * 784 < 8.0


def test_table_points_follow_ddpm_table_4():
    # 1000 levels (DDPM): reverse times 100, 200, ..., 1000, i.e. chain indices 900, ..., 0
    pts = table_points(1000)
    assert [999 - i for i in pts] == list(range(900, -1, -100))
    assert table_points(51) == [4, 9, 14, 19, 25, 30, 35, 40, 45, 50]
    assert table_points(5) == [0, 1, 2, 3, 4] and table_points(1) == [0]


def test_rd_curve_cli_writes_compressai_json_and_png(tiny_path, fmnist_idx, tmp_path):
    out, png = tmp_path / "rd.json", tmp_path / "rd.png"
    res = run("rd-curve", "--model", tiny_path, "--data", fmnist_idx, "--n", 3, "--steps", 6,
              "--json", out, "--plot", png, "--classical")
    assert res.exit_code == 0, (res.output, res.exception)
    rec = json.loads(out.read_text())
    assert {"name", "description", "results"} <= set(rec)
    levels = rec["levels"]
    assert levels == 6 and all(len(rec["results"][k]) == levels for k in COMPRESSAI)
    assert rec["results"]["bpp"] == pytest.approx([b * 1 for b in rec["results"]["bpd"]])
    assert rec["ddpm_t"][0] == 1000 and rec["ddpm_t"][-1] == 1 and rec["reverse_time"][-1] == 1000
    assert rec["t_index"] == list(range(5, -1, -1))
    assert len(rec["rmse_per_image"]) == levels and "rmse_pooling" in rec["conventions"]
    assert rec["n_images"] == 3 and rec["dims_per_image"] == 784 and len(rec["model_fingerprint"]) == 64
    codecs = {(r["codec"], r["layout"]) for r in rec["classical"]}
    assert {("jpeg", "per_image"), ("jpeg", "mosaic"), ("webp", "per_image"), ("webp", "mosaic")} <= codecs
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the printed table: 6 rows (every level, fewer than ten), the lossless line
    assert _rows(res.stdout) == 1 + 6 and "lossless (L_0 added)" in res.stdout


def test_rd_curve_cli_final_rate_is_nll_without_l0(tiny_path, fmnist_idx, tmp_path):
    run("nll", "--model", tiny_path, "--data", fmnist_idx, "--n", 3, "--steps", 5, "--json", tmp_path / "n.json")
    res = run("rd-curve", "--model", tiny_path, "--data", fmnist_idx, "--n", 3, "--steps", 5, "--no-classical",
              "--latents", "marginal", "--json", tmp_path / "r.json")
    assert res.exit_code == 0, res.output
    nll, rd = (json.loads((tmp_path / f).read_text()) for f in ("n.json", "r.json"))
    assert rd["results"]["bpd"][-1] == pytest.approx(nll["bpd"] - nll["decoder_bpd"], rel=1e-12)
    assert rd["model_fingerprint"] == nll["model_fingerprint"]


def test_rd_curve_missing_dataset_is_one_line_exit_2(tmp_path):
    res = run("rd-curve", "--n", 2, "--steps", 3, "--no-classical", env={"DDPM_CODEC_FASHION_MNIST": str(tmp_path)})
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ddpm-codec: error:") and "Fashion-MNIST" in lines[0]


def test_format_table_states_conventions(closed):
    model, im = closed
    rec = evaluate_rd(model, im[:4], 30, progress=False)
    text = format_table(rec)
    assert _rows(text) == 1 + 10 and "D = 784" in text and "rounded to pixels" in text
