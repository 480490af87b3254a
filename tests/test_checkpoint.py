"""Model files (safetensors + JSON): round trip, fingerprint, and clear errors
for every kind of bad file, in the library and on the command line."""
import json
import os
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner
from helpers import random_model
from safetensors.torch import load_file, save_file

from ddpm_codec.io.checkpoint import CheckpointError, fingerprint, load_model, read_meta, resolve, save_model
from ddpm_codec_cli.main import cli


def _model(name="tiny", seed=0):
    return random_model(name, seed, scale=0.01)


@pytest.fixture
def saved(tmp_path):
    m = _model()
    fp = save_model(m, tmp_path / "m", {"ema": True, "step": 7})
    return m, tmp_path / "m", fp


# ---------------------------------------------------------------- round trip

@pytest.mark.parametrize("name", ["tiny", "tiny-vdm"])
def test_round_trip_keeps_fingerprint_and_outputs(tmp_path, name):
    m = _model(name)
    fp = save_model(m, tmp_path / "model.safetensors", {"step": 3})       # suffix is ignored
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "model.json").exists()
    assert not [p for p in os.listdir(tmp_path) if "tmp" in p]
    loaded, meta = load_model(str(tmp_path / "model"))
    assert fp == fingerprint(m) == fingerprint(loaded) == meta["fingerprint"]
    assert meta["step"] == 3 and meta["config"] == m.config()
    assert not loaded.training
    for k, v in m.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    z = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(m.eps(z, torch.tensor(0.3)), loaded.eps(z, torch.tensor(0.3)))
    # a directory resolves to DIR/model; .json path too
    assert load_model(str(tmp_path))[1]["fingerprint"] == fp
    assert load_model(str(tmp_path / "model.json"))[1]["fingerprint"] == fp


def test_fingerprint_sees_every_bit_and_the_config():
    m = _model()
    fp = fingerprint(m)
    assert fingerprint(_model()) == fp                                   # deterministic
    w = m.unet.conv_in.weight
    with torch.no_grad():
        w.view(-1)[5] = torch.nextafter(w.view(-1)[5], torch.tensor(10.0))
    assert fingerprint(m) != fp
    m2 = _model()
    m2.variance = "transition"
    assert fingerprint(m2) != fp


def test_save_overwrites_atomically(saved):
    m, base, fp = saved
    m2 = _model(seed=1)
    fp2 = save_model(m2, base)
    assert fp2 != fp and load_model(str(base))[1]["fingerprint"] == fp2
    assert sorted(os.listdir(base.parent)) == ["m.json", "m.safetensors"]


# ---------------------------------------------------------------- damaged files

def _expect(base, match):
    with pytest.raises(CheckpointError, match=match) as e:
        load_model(str(base))
    assert "\n" not in str(e.value)
    return str(e.value)


def test_truncated_weights(saved):
    _, base, _ = saved
    w = base.with_suffix(".safetensors")
    w.write_bytes(w.read_bytes()[:100])
    assert str(w) in _expect(base, "damaged")


def test_garbage_weights(saved):
    _, base, _ = saved
    base.with_suffix(".safetensors").write_bytes(os.urandom(4096))
    _expect(base, "damaged")


def test_flipped_bit_in_tensor_data(saved):
    """The header still parses; only the fingerprint can tell."""
    _, base, _ = saved
    w = base.with_suffix(".safetensors")
    data = bytearray(w.read_bytes())
    data[-3] ^= 0x10
    w.write_bytes(bytes(data))
    _expect(base, "fingerprint")


@pytest.mark.parametrize("text,match", [
    ("{not json", "not valid JSON"),
    ("\xff\xfe garbage", "not valid JSON|not a ddpm-codec"),
    ("[1, 2, 3]", "not a ddpm-codec model config"),
    ('{"format": "something-else", "version": 1, "config": {}}', "not a ddpm-codec model config"),
])
def test_bad_config_json(saved, text, match):
    _, base, _ = saved
    base.with_suffix(".json").write_text(text)
    _expect(base, match)


def _edit_meta(base, edit):
    meta = json.loads(base.with_suffix(".json").read_text())
    edit(meta)
    base.with_suffix(".json").write_text(json.dumps(meta))


def test_wrong_format_version(saved):
    _, base, _ = saved
    _edit_meta(base, lambda m: m.update(version=99))
    _expect(base, "version 99")


def test_config_missing(saved):
    _, base, _ = saved
    _edit_meta(base, lambda m: m.pop("config"))
    _expect(base, "no model config")


@pytest.mark.parametrize("edit", [
    lambda c: c["unet"].update(colour="blue"),
    lambda c: c["schedule"].update(type="quadratic"),
    lambda c: c.update(variance="learned"),
    lambda c: c.pop("unet"),
])
def test_invalid_config_content(saved, edit):
    _, base, _ = saved
    _edit_meta(base, lambda m: edit(m["config"]))
    _expect(base, "invalid model config")


def test_mismatched_shapes(saved):
    _, base, _ = saved
    _edit_meta(base, lambda m: m["config"]["unet"].update(base_channels=16, groups=8))
    msg = _expect(base, "has shape")
    assert "config expects" in msg


def test_missing_and_unexpected_tensors(saved):
    _, base, _ = saved
    _edit_meta(base, lambda m: m["config"]["unet"].update(num_res_blocks=2))
    _expect(base, "do not match the config")


def test_wrong_dtype(saved):
    _, base, _ = saved
    w = base.with_suffix(".safetensors")
    t = load_file(str(w))
    t = {k: v.double() for k, v in t.items()}
    save_file(t, str(w))
    _expect(base, "float64")


def test_missing_files(saved, tmp_path):
    _, base, _ = saved
    _expect(tmp_path / "nothing", "model config not found")
    base.with_suffix(".safetensors").unlink()
    _expect(base, "model weights not found")


def test_resolve_and_read_meta(saved):
    _, base, fp = saved
    assert resolve(str(base) + ".json") == base
    assert resolve(str(base.parent)) == base.parent / "model"
    assert read_meta(base)["fingerprint"] == fp


# ---------------------------------------------------------------- command line

def _damage_variants(base):
    yield "model config not found", base.parent / "absent"
    base.with_suffix(".json").write_text("{oops")
    yield "not valid JSON", base


def test_cli_reports_checkpoint_errors_in_one_line(saved, tmp_path):
    _, base, _ = saved
    runner = CliRunner()
    for cmd in (["nll", "--data", str(tmp_path / "nodata"), "--n", "1", "--steps", "2"],
                ["sample", "--n", "1", "--steps", "2", "-o", str(tmp_path / "s.png")]):
        for what, path in _damage_variants(base):
            res = runner.invoke(cli, [*cmd, "--model", str(path)], prog_name="ddpm-codec")
            assert res.exit_code == 2, (what, cmd[0], res.output)
            lines = res.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("ddpm-codec: error: "), res.stderr
            assert what in lines[0]
            assert "Traceback" not in res.output and res.stdout == ""
            assert not (tmp_path / "s.png").exists()
        save_model(_model(), base)                         # repair for the next command


def test_cli_error_exit_code_in_a_real_process(saved):
    """The installed entry point, not click's test runner: exit status 2, one line, no traceback."""
    _, base, _ = saved
    base.with_suffix(".safetensors").write_bytes(b"\0" * 64)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "ddpm_codec_cli", "sample", "--model", str(base), "--n", "1",
                        "--steps", "2", "-o", str(base.parent / "x.png")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ddpm-codec: error: ") and "damaged" in lines[0]
    assert "Traceback" not in r.stderr
