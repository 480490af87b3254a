"""Training: the VLB goes down, and resume is exact (weights, EMA, optimizer,
step, RNG, time-sampler history)."""
import json

import numpy as np
import pytest
import torch
from helpers import random_model
from safetensors.torch import load_file

from ddpm_codec.bound.losses import training_loss
from ddpm_codec.diffusion.configs import get_config
from ddpm_codec.diffusion.model import DiffusionModel
from ddpm_codec.eval.evaluate import evaluate_nll
from ddpm_codec.io.checkpoint import CheckpointError, load_model
from ddpm_codec.training.time_samplers import ImportanceSteps, LowDiscrepancyTimes, UniformSteps, make_sampler
from ddpm_codec.training.trainer import TrainConfig, Trainer


def _short_T_config(T=10, dropout=0.0):
    """'tiny' on a 10-step schedule: the importance sampler fills its history
    (10 steps x 10 entries) within a few batches, so resume must restore it."""
    cfg = get_config("tiny")
    cfg["schedule"] = {"type": "linear", "T": T, "beta_start": 1e-3, "beta_end": 0.3}
    cfg["unet"]["dropout"] = dropout
    return cfg


def _trainer(tmp_path, data, model="tiny", model_config=None, **kw):
    base = dict(model=model, out=str(tmp_path), steps=1000, batch_size=8, lr=2e-3, warmup=3, eval_n=16,
                ema_decay=0.99, seed=3, flips=True, lr_decay_to=0.1, time_sampler="importance")
    base.update(kw)
    return Trainer(TrainConfig(**base), data, data[:16], model_config=model_config)


def _state(tr):
    return ({k: v.clone() for k, v in tr.model.state_dict().items()},
            {k: v.clone() for k, v in tr.ema.model.state_dict().items()},
            tr.opt.state_dict(), tr.sampler.state_dict(), tr.gen.get_state().clone(), tr.step)


def _assert_same(a, b):
    raw_a, ema_a, opt_a, smp_a, rng_a, step_a = a
    raw_b, ema_b, opt_b, smp_b, rng_b, step_b = b
    assert step_a == step_b
    for k in raw_a:
        assert torch.equal(raw_a[k], raw_b[k]), f"weights differ at {k}"
        assert torch.equal(ema_a[k], ema_b[k]), f"EMA differs at {k}"
    for i, st in opt_a["state"].items():
        for k, v in st.items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(opt_b["state"][i][k])), f"Adam {i}.{k}"
    assert [g["lr"] for g in opt_a["param_groups"]] == [g["lr"] for g in opt_b["param_groups"]]
    assert smp_a == smp_b
    assert torch.equal(rng_a, rng_b)


# ---------------------------------------------------------------- learning

def test_training_lowers_the_vlb(fmnist_images, tmp_path):
    data = fmnist_images[:48]
    tr = _trainer(tmp_path, data, time_sampler="uniform", eval_n=48, flips=False, lr_decay_to=1.0,
                  ema_decay=0.9)
    exact_before = evaluate_nll(tr.ema.model, data[:8], steps=20, progress=False)["bpd"]
    before = tr.evaluate()
    assert tr.evaluate() == before                          # fixed evaluation noise
    for _ in range(150):
        vlb, gnorm = tr.train_step()
        assert np.isfinite(vlb) and np.isfinite(gnorm)
    after = tr.evaluate()
    exact_after = evaluate_nll(tr.ema.model, data[:8], steps=20, progress=False)["bpd"]
    # measured: ~59.7 -> ~49 bits/dim (MC) in 150 steps; demand a clear drop on both measures
    assert after < before - 3.0, (before, after)
    assert exact_after < exact_before - 1.0, (exact_before, exact_after)


def test_training_lowers_the_vlb_continuous(fmnist_images, tmp_path):
    data = fmnist_images[:48]
    tr = _trainer(tmp_path, data, model="tiny-vdm", eval_n=48, flips=False, lr_decay_to=1.0, ema_decay=0.9)
    g_before = (float(tr.model.schedule.gamma_min.detach()), float(tr.model.schedule.gamma_max.detach()))
    before = tr.evaluate()
    for _ in range(60):
        tr.train_step()
    after = tr.evaluate()
    assert after < before - 2.0, (before, after)            # measured ~13.2 -> ~7.5
    g_after = (float(tr.model.schedule.gamma_min.detach()), float(tr.model.schedule.gamma_max.detach()))
    assert g_after != g_before                              # learned schedule endpoints are trained


# ---------------------------------------------------------------- resume

@pytest.mark.parametrize("model,model_config", [
    ("tiny", "short_T"),          # discrete, importance sampler active, flips
    ("tiny-vdm", None),           # continuous, learned gamma endpoints
])
def test_resume_is_exact(fmnist_images, tmp_path, model, model_config):
    cfgd = _short_T_config() if model_config == "short_T" else None
    data = fmnist_images[:64]                               # 4 batches per epoch: crosses epochs
    N, M = 15, 8
    one = _trainer(tmp_path / "one", data, model, cfgd, batch_size=16)
    for _ in range(N + M):
        one.train_step()

    a = _trainer(tmp_path / "two", data, model, cfgd, batch_size=16)
    for _ in range(N):
        a.train_step()
    if model_config == "short_T":                           # the saved history decides the next draws
        assert isinstance(a.sampler, ImportanceSteps)
        assert (a.sampler.count == a.sampler.hist.shape[1]).all(), "importance sampler never engaged"
    a.save()
    del a
    b = _trainer(tmp_path / "two", data, model, cfgd, batch_size=16)
    assert b.resume() is True and b.step == N
    for _ in range(M):
        b.train_step()
    _assert_same(_state(one), _state(b))


def test_resume_restores_global_rng_for_dropout(fmnist_images, tmp_path):
    """Dropout draws from torch's global generator: resume must restore it too."""
    data = fmnist_images[:40]
    cfgd = _short_T_config(dropout=0.3)
    one = _trainer(tmp_path / "one", data, model_config=cfgd)
    for _ in range(6):
        one.train_step()
    a = _trainer(tmp_path / "two", data, model_config=cfgd)
    for _ in range(3):
        a.train_step()
    a.save()
    torch.manual_seed(999)                                  # whatever happens in between
    torch.rand(10)
    b = _trainer(tmp_path / "two", data, model_config=cfgd)
    torch.rand(10)
    assert b.resume()
    for _ in range(3):
        b.train_step()
    _assert_same(_state(one), _state(b))


def test_resume_checkpoint_without_global_rng(fmnist_images, tmp_path):
    """Checkpoints written before the global RNG was saved still resume."""
    from safetensors.torch import save_file
    tr = _trainer(tmp_path, fmnist_images[:16])
    tr.train_step()
    tr.save()
    path = tmp_path / "last" / "optim.safetensors"
    tensors = load_file(str(path))
    del tensors["rng.global"]
    save_file(tensors, str(path))
    tr2 = _trainer(tmp_path, fmnist_images[:16])
    assert tr2.resume() and tr2.step == 1
    for k, v in tr.opt.state_dict()["state"][0].items():
        assert torch.equal(torch.as_tensor(v), torch.as_tensor(tr2.opt.state_dict()["state"][0][k]))


def test_fit_checkpoints_and_resumes(fmnist_images, tmp_path):
    data = fmnist_images[:32]
    tr = _trainer(tmp_path, data, steps=4, ckpt_every=2, eval_every=2)
    assert tr.fit(progress=False) == 4
    last = tmp_path / "last"
    assert sorted(p.name for p in last.iterdir()) == ["model.json", "model.safetensors", "optim.safetensors",
                                                      "raw.safetensors", "state.json"]
    assert not list(tmp_path.glob(".tmp-*")) and not (tmp_path / "last.old").exists()
    state = json.loads((last / "state.json").read_text())
    assert state["step"] == 4 and state["world_size"] == 1
    # the exported model is the EMA, loadable on its own, with its fingerprint
    model, meta = load_model(str(last / "model"))
    assert meta["ema"] is True and meta["step"] == 4
    for k, v in tr.ema.model.state_dict().items():
        assert torch.equal(model.state_dict()[k], v)
    raw = load_file(str(last / "raw.safetensors"))
    assert any(not torch.equal(raw[k], v) for k, v in model.state_dict().items())   # raw != EMA
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "test_vlb_bpd_mc" in r] == [2, 4]
    # a new trainer picks up at step 4 and continues to 6
    tr2 = _trainer(tmp_path, data, steps=6, ckpt_every=2, eval_every=0)
    assert tr2.resume() and tr2.step == 4
    assert tr2.fit(progress=False) == 6


def test_resume_without_checkpoint(tmp_path, fmnist_images):
    tr = _trainer(tmp_path, fmnist_images[:16])
    assert tr.resume() is False
    with pytest.raises(CheckpointError, match="no training checkpoint"):
        tr.resume(tmp_path / "nowhere")


def test_resume_damaged_checkpoint(tmp_path, fmnist_images):
    tr = _trainer(tmp_path, fmnist_images[:16])
    tr.train_step()
    tr.save()
    (tmp_path / "last" / "raw.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(CheckpointError, match="damaged"):
        _trainer(tmp_path, fmnist_images[:16]).resume()


def test_global_batch_must_split_over_ranks(fmnist_images, tmp_path, monkeypatch):
    from ddpm_codec.training import distributed
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    with pytest.raises(ValueError, match="not divisible"):
        _trainer(tmp_path, fmnist_images[:16], batch_size=8)


def test_fewer_images_than_the_batch_is_a_data_error(fmnist_images, tmp_path):
    from ddpm_codec.data.datasets import DataError
    with pytest.raises(DataError, match="fewer than the global batch 8"):
        _trainer(tmp_path, fmnist_images[:5], batch_size=8)


# ---------------------------------------------------------------- samplers and loss

def test_importance_sampler_is_unbiased():
    """E_p[w * f(i)] = mean_i f(i) for a skewed proposal."""
    T = 10
    s = ImportanceSteps(T, torch.Generator().manual_seed(0), history=2)
    f = np.arange(1, T + 1, dtype=np.float64) ** 2
    s.update(torch.arange(1, T + 1).repeat(2), torch.from_numpy(np.tile(f, 2)))
    p = s.probs()
    assert p[-1] > 10 * p[0]                               # proportional to sqrt(E[L^2]) = f
    i, w = s.sample(200_000)
    est = float((w.double() * torch.from_numpy(f)[i - 1]).mean())
    assert est == pytest.approx(f.mean(), rel=0.01)
    st = s.state_dict()
    s2 = ImportanceSteps(T, torch.Generator(), history=2)
    s2.load_state_dict(st)
    assert np.array_equal(s2.probs(), p)


def test_make_sampler_kinds():
    g = torch.Generator().manual_seed(0)
    disc = DiffusionModel.from_config(get_config("tiny")).schedule
    cont = DiffusionModel.from_config(get_config("tiny-vdm")).schedule
    assert type(make_sampler(disc, "uniform", g)) is UniformSteps
    assert type(make_sampler(disc, "importance", g)) is ImportanceSteps
    assert type(make_sampler(cont, "importance", g)) is LowDiscrepancyTimes
    t, w = make_sampler(cont, "uniform", g).sample(8)
    gaps = np.diff(np.sort(t.numpy()))
    np.testing.assert_allclose(gaps, 1 / 8, rtol=1e-9)     # VDM low-discrepancy times
    with pytest.raises(ValueError):
        make_sampler(disc, "nope", g)


def test_discrete_mc_vlb_is_unbiased_for_the_exact_chain(fmnist_images):
    """The training estimator L_T + T * E_i[L_{i-1}] (uniform i) averages to the
    exact full-chain VLB: compare on a T = 20 schedule, all 20 terms enumerated."""
    from ddpm_codec.bound.vlb import chain_terms
    model = random_model(_short_T_config(T=20), 0, scale=0.05)
    px = torch.from_numpy(fmnist_images[:2])
    x = px.float() / 127.5 - 1
    g = torch.Generator().manual_seed(5)
    vals = []
    for _ in range(30):
        # every step i = 1..20 once per image: the mean over i is one sample of the exact chain
        xi = x[:, None].expand(2, 20, *x.shape[1:]).reshape(40, *x.shape[1:])
        ii = torch.arange(1, 21).repeat(2)
        e = torch.randn((40, *x.shape[1:]), generator=g)
        with torch.no_grad():
            vlb, _, _, term = training_loss(model, xi, ii, torch.ones(40), e, e)
        vals.append(vlb.view(2, 20).mean(1).double() * 784)            # bits per image
    exact = [chain_terms(model, px, model.schedule.chain(20), generator=torch.Generator().manual_seed(s)).total
             for s in range(30)]
    mc, exact = torch.stack(vals), torch.stack(exact)
    se = (mc.var(0) / len(mc) + exact.var(0) / len(exact)).sqrt()
    assert torch.all((mc.mean(0) - exact.mean(0)).abs() < 4 * se), (mc.mean(0), exact.mean(0), se)
    assert torch.all(se < 0.02 * exact.mean(0))             # the comparison has teeth
