"""The pixel-group companion trained by the trainer (objective "pixel_groups"):
`ddpm-codec train-groups` trains a companion of a tiny base, resumes it exactly
from the trainer's own checkpoint and exports what `load_companion` accepts."""
import json

import pytest
import torch
from click.testing import CliRunner
from helpers import random_model
from safetensors.torch import load_file

from ddpm_codec.diffusion import pixel_groups
from ddpm_codec.io.checkpoint import CheckpointError, fingerprint, load_companion, load_model, save_model
from ddpm_codec.training import groups
from ddpm_codec.training.trainer import PIXEL_GROUPS_RECIPE, TrainConfig, Trainer
from ddpm_codec_cli.main import cli
from ddpm_codec_cli.model_cmds import train, train_groups


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A continuous-time 'tiny' base saved as BASE.{safetensors,json}; (path, model)."""
    m = random_model("tiny-vdm", 0, scale=0.02)
    path = tmp_path_factory.mktemp("base") / "tiny"
    save_model(m, path, {"ema": True})
    return path, m


def _trainer(out, base_path, data, **kw):
    cfg = dict(PIXEL_GROUPS_RECIPE, base=base_path and str(base_path), out=str(out), steps=100, batch_size=16, lr=2e-3,
               warmup=2, eval_n=16, ema_decay=0.99, seed=3, flips=True)
    cfg.update(kw)
    return Trainer(TrainConfig(**cfg), data, data[:16])


def _snapshot(tr):
    opt = tr.opt.state_dict()
    return (tr.step, {k: v.clone() for k, v in tr.model.state_dict().items()},
            {k: v.clone() for k, v in tr.ema.model.state_dict().items()},
            {(i, k): torch.as_tensor(v).clone() for i, st in opt["state"].items() for k, v in st.items()},
            [g["lr"] for g in opt["param_groups"]], tr.gen.get_state().clone())


def _assert_same(a, b):
    assert a[0] == b[0]
    for x, y in zip(a[1:4], b[1:4]):
        assert x.keys() == y.keys()
        for k in x:
            assert torch.equal(x[k], y[k]), k
    assert a[4] == b[4] and torch.equal(a[5], b[5])


def test_trainer_learns_the_companion_and_resumes_exactly(base, fmnist_images, tmp_path):
    path, base_model = base
    data = fmnist_images[:48]                              # 3 batches per epoch: crosses epochs
    one = _trainer(tmp_path / "one", path, data)
    assert one.model.config()["unet"]["cond_channels"] == pixel_groups.COND_CHANNELS
    before = one.evaluate()
    assert one.evaluate() == before                        # fixed times and noise
    N, M = 7, 5
    for _ in range(N + M):
        bpd, gnorm = one.train_step()
        assert bpd == bpd and gnorm == gnorm               # finite
    assert one.evaluate() < before                         # the group objective goes down
    assert float(one.model.unet.cond_in.weight.detach().abs().sum()) > 0   # the conditioning conv learns
    # the schedule is frozen, exactly the base's in the weights and in their EMA
    for m in (one.model, one.ema.model):
        for k, v in base_model.schedule.state_dict().items():
            assert torch.equal(m.schedule.state_dict()[k], v), k

    a = _trainer(tmp_path / "two", path, data)
    for _ in range(N):
        a.train_step()
    a.save()
    del a
    b = _trainer(tmp_path / "two", path, data)
    assert b.resume() is True and b.step == N
    for _ in range(M):
        b.train_step()
    _assert_same(_snapshot(one), _snapshot(b))
    meta = json.loads((tmp_path / "two" / "last" / "model.json").read_text())
    assert meta["base_fingerprint"] == fingerprint(base_model)
    assert meta["train"]["objective"] == "pixel_groups"


def test_refit_export_keeps_the_weights_and_refits_the_table(base, fmnist_images, tmp_path):
    path, base_model = base
    tr = _trainer(tmp_path / "run", path, fmnist_images[:16])
    tr.train_step()
    fp = groups.export(tr.ema.model, tmp_path / "tiny_groups", fingerprint(base_model), tr.step,
                       refit_pixels=torch.from_numpy(fmnist_images[:4]), grid=2)
    model, meta = load_model(str(tmp_path / "tiny_groups"))
    assert meta["fingerprint"] == fp and meta["eps_error_fit"] == {"n_images": 4, "grid": 2}
    assert model.eps_error is not None and tr.ema.model.eps_error is None    # the run's net is untouched
    for k, v in tr.ema.model.state_dict().items():
        assert torch.equal(model.state_dict()[k], v)


def test_companion_needs_a_continuous_base_and_a_matching_checkpoint(base, fmnist_images, tmp_path):
    path, _ = base
    with pytest.raises(ValueError, match="set base"):
        _trainer(tmp_path, None, fmnist_images[:16])
    save_model(random_model("tiny", 0), tmp_path / "discrete")
    with pytest.raises(ValueError, match="continuous-time"):
        _trainer(tmp_path, tmp_path / "discrete", fmnist_images[:16])
    tr = _trainer(tmp_path / "run", path, fmnist_images[:16])
    tr.train_step()
    tr.save()
    other = random_model("tiny-vdm", 1, scale=0.02)
    save_model(other, tmp_path / "other")
    with pytest.raises(CheckpointError, match="started from base model"):
        _trainer(tmp_path / "run", tmp_path / "other", fmnist_images[:16]).resume()
    with pytest.raises(CheckpointError, match="started from base model"):       # nor a plain VLB run
        Trainer(TrainConfig(model="tiny-vdm", out=str(tmp_path / "run"), batch_size=16),
                fmnist_images[:16], None).resume()


def test_command_defaults_are_train_config():
    """`train` and `train-groups` repeat no default: each is TrainConfig's (with the recipe)."""
    for cmd, cfg in ((train, TrainConfig()), (train_groups, TrainConfig(**PIXEL_GROUPS_RECIPE))):
        checked = 0
        for p in cmd.params:
            if p.name in TrainConfig.__dataclass_fields__:
                assert p.default == getattr(cfg, p.name), (cmd.name, p.name)
                checked += 1
        assert checked >= 16, cmd.name
    assert TrainConfig(**PIXEL_GROUPS_RECIPE).steps == 5000 and TrainConfig().lr == 2e-4


def _run(*args):
    res = CliRunner().invoke(cli, [str(a) for a in args], prog_name="ddpm-codec")
    assert res.exit_code == 0, res.output + repr(res.exception)
    return res


def test_train_groups_command_resumes_exactly_and_exports_a_companion(base, fmnist_idx, tmp_path, monkeypatch):
    _, base_model = base
    path = tmp_path / "tiny"
    save_model(base_model, path, {"ema": True})
    common = ["train-groups", "--base", path, "--data", fmnist_idx, "--batch-size", 16, "--lr", 2e-3, "--warmup", 2,
              "--steps", 5, "--eval-every", 2, "--eval-n", 8, "--ckpt-every", 2, "--device", "cpu", "--seed", 1]
    res = _run(*common, "--out", tmp_path / "straight")
    assert "done at step 5" in res.stdout and "test group diffusion" in res.stdout
    assert "objective pixel_groups" in res.stderr
    # the same run interrupted at step 3, its last checkpoint at step 2
    real = Trainer.train_step

    def interrupted(self):
        if self.step == 3:
            raise KeyboardInterrupt
        return real(self)
    with monkeypatch.context() as m:
        m.setattr(Trainer, "train_step", interrupted)
        res = CliRunner().invoke(cli, [str(a) for a in (*common, "--out", tmp_path / "split")])
    assert res.exit_code == 130 and "interrupted" in res.stderr
    assert json.loads((tmp_path / "split" / "last" / "state.json").read_text())["step"] == 2
    exported = path.with_name("tiny_groups")               # beside its base: what load_companion looks for
    res = _run(*common, "--out", tmp_path / "split", "--export", exported)
    assert "resumed" in res.stderr and "at step 2" in res.stderr and "exported" in res.stdout
    # and resumed, it ends bit for bit where the straight run does
    a, b = tmp_path / "straight" / "last", tmp_path / "split" / "last"
    for name in ("raw.safetensors", "model.safetensors", "optim.safetensors"):
        ta, tb = load_file(str(a / name)), load_file(str(b / name))
        assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta), name
    assert json.loads((b / "state.json").read_text())["step"] == 5
    log = [json.loads(line) for line in (tmp_path / "split" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "test_group_bpd" in r] == [2, 4]
    # the export is the run's EMA net, recorded as the companion of its base
    got = load_companion(str(path), fingerprint(base_model))
    assert got is not None
    companion, fp = got
    run_model, _ = load_model(str(b / "model"))
    for k, v in run_model.state_dict().items():
        assert torch.equal(companion.state_dict()[k], v), k
    meta = json.loads(exported.with_suffix(".json").read_text())
    assert meta["fingerprint"] == fp and meta["base_fingerprint"] == fingerprint(base_model)
    assert meta["step"] == 5 and meta["eval"]["step"] == 5 and "test_group_bpd" in meta["eval"]
    with pytest.raises(CheckpointError, match="another model"):
        load_companion(str(path), "00" * 32)
    # `ddpm-codec export` of the run keeps the record of its base too
    _run("export", tmp_path / "split", "--to", tmp_path / "again")
    assert load_model(str(tmp_path / "again"))[1]["base_fingerprint"] == fingerprint(base_model)
