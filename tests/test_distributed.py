"""Data-parallel training (two gloo processes on the CPU) gives the update of
one process with the same global batch, resumes on another number of ranks,
and sharded `nll` runs merge into the unsharded figure."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from ddpm_codec_cli.main import cli

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")

# Weights of 2 ranks vs 1 differ only by float32 summation order (DDP averages
# the two half-batch gradients; one process averages the full batch): measured
# ~1e-8 after a few Adam steps on weights of size ~1.
ATOL = 1e-5


def _train_args(data, out, steps, config="tiny"):
    return ["train", "--config", config, "--data", str(data), "--out", str(out), "--steps", str(steps),
            "--batch-size", "8", "--lr", "2e-3", "--warmup", "2", "--flips", "--time-sampler", "importance",
            "--eval-every", "0", "--eval-n", "8", "--ckpt-every", "1000", "--device", "cpu", "--seed", "4"]


def _train_one_rank(data, out, steps, config="tiny"):
    res = CliRunner().invoke(cli, _train_args(data, out, steps, config), prog_name="ddpm-codec")
    assert res.exit_code == 0, (res.output, res.exception)
    return res


def _train_two_ranks(data, out, steps, config="tiny"):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                             "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "ddpm_codec_cli", *_train_args(data, out, steps, config)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-4000:]
    assert "global batch 8 = 2 rank(s) x 4" in r.stderr
    return r


def _weights(out):
    last = out / "last"
    return load_file(str(last / "raw.safetensors")), load_file(str(last / "model.safetensors")), \
        json.loads((last / "state.json").read_text())


def _assert_close(a, b):
    (raw_a, ema_a, st_a), (raw_b, ema_b, st_b) = a, b
    assert st_a["step"] == st_b["step"]
    assert raw_a.keys() == raw_b.keys()
    for k in raw_a:
        torch.testing.assert_close(raw_a[k], raw_b[k], rtol=0, atol=ATOL, msg=lambda m: f"{k}: {m}")
        torch.testing.assert_close(ema_a[k], ema_b[k], rtol=0, atol=ATOL, msg=lambda m: f"EMA {k}: {m}")
    if not st_a["sampler"]:                    # continuous time: no sampler history
        return
    # the time sampler's history is gathered over ranks: identical up to float rounding
    ha, hb = np.asarray(st_a["sampler"]["hist"]), np.asarray(st_b["sampler"]["hist"])
    assert st_a["sampler"]["count"] == st_b["sampler"]["count"]
    np.testing.assert_allclose(ha, hb, rtol=1e-4, atol=1e-6)


@pytest.fixture(scope="module")
def runs(fmnist_idx, tmp_path_factory):
    """One rank 3 and 6 steps; two ranks 3 steps; and the two resumes across rank counts."""
    root = tmp_path_factory.mktemp("ddp")
    one3, one6, two3 = root / "one3", root / "one6", root / "two3"
    _train_one_rank(fmnist_idx, one3, 3)
    _train_one_rank(fmnist_idx, one6, 6)
    _train_two_ranks(fmnist_idx, two3, 3)
    return {"one3": one3, "one6": one6, "two3": two3, "root": root, "data": fmnist_idx}


def test_two_ranks_equal_one_process(runs):
    one, two = _weights(runs["one3"]), _weights(runs["two3"])
    assert two[2]["world_size"] == 2 and one[2]["world_size"] == 1
    _assert_close(one, two)
    # the comparison has teeth: three more steps move the weights far beyond the tolerance
    six = _weights(runs["one6"])[0]
    assert max(float((one[0][k] - six[k]).abs().max()) for k in six) > 100 * ATOL


def test_two_ranks_equal_one_process_continuous(fmnist_idx, tmp_path):
    """VDM config: learned gamma endpoints, low-discrepancy times over the global batch,
    and the time derivative taken inside the DDP forward."""
    _train_one_rank(fmnist_idx, tmp_path / "one", 3, "tiny-vdm")
    _train_two_ranks(fmnist_idx, tmp_path / "two", 3, "tiny-vdm")
    one, two = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    _assert_close(one, two)
    assert float(one[0]["schedule.gamma_min"]) != pytest.approx(-13.3, abs=1e-6)     # it was trained


def test_resume_two_ranks_then_one(runs):
    """Two ranks for 3 steps, then one rank resumes to 6: same as one rank for 6."""
    import shutil
    out = runs["root"] / "two_then_one"
    shutil.copytree(runs["two3"], out)
    res = _train_one_rank(runs["data"], out, 6)
    assert "resumed" in res.stderr and "at step 3" in res.stderr
    _assert_close(_weights(runs["one6"]), _weights(out))


def test_resume_one_rank_then_two(runs):
    import shutil
    out = runs["root"] / "one_then_two"
    shutil.copytree(runs["one3"], out)
    r = _train_two_ranks(runs["data"], out, 6)
    assert "resumed" in r.stderr
    w = _weights(out)
    assert w[2]["world_size"] == 2
    _assert_close(_weights(runs["one6"]), w)


# ---------------------------------------------------------------- sharded nll



def _nll(tiny_path, data, json_path, *extra):
    res = CliRunner().invoke(cli, ["nll", "--model", str(tiny_path), "--data", str(data), "--n", "7",
                                   "--steps", "5", "--json", str(json_path), *extra], prog_name="ddpm-codec")
    assert res.exit_code == 0, (res.output, res.exception)
    return json.loads(json_path.read_text())


def test_sharded_nll_merges_to_the_unsharded_figure(tiny_path, fmnist_idx, tmp_path):
    full = _nll(tiny_path, fmnist_idx, tmp_path / "full.json")
    s0 = _nll(tiny_path, fmnist_idx, tmp_path / "s0.json", "--shard", "0/2")
    s1 = _nll(tiny_path, fmnist_idx, tmp_path / "s1.json", "--shard", "1/2")
    assert (s0["n_images"], s1["n_images"]) == (3, 4) and s1["first_index"] == 3
    # merge in the "wrong" order: the merge sorts by first image
    res = CliRunner().invoke(cli, ["merge", str(tmp_path / "s1.json"), str(tmp_path / "s0.json"),
                                   "--json", str(tmp_path / "merged.json")], prog_name="ddpm-codec")
    assert res.exit_code == 0, res.output
    merged = json.loads((tmp_path / "merged.json").read_text())
    assert merged["n_images"] == 7 and merged["shards"] == 2
    # same noise per image (seeded by its index); only the network's float32
    # batches differ (3 + 4 images vs 7), so agreement is to float rounding
    for key in ("bpd", "prior_bpd", "diffusion_bpd", "decoder_bpd", "total_bits"):
        assert merged[key] == pytest.approx(full[key], rel=1e-6), key
    np.testing.assert_allclose(merged["per_image_bits"], full["per_image_bits"], rtol=1e-6)
    np.testing.assert_allclose(merged["per_step_bpd"], full["per_step_bpd"], rtol=1e-6, atol=1e-12)
    assert f"-VLB {full['bpd']:.4f} +- {merged['bpd_se']:.4f} bits/dim" in res.stdout
    # a shard is not the whole: the shards' figures differ from each other
    assert s0["bpd"] != s1["bpd"]


def test_merge_refuses_mismatched_shards(tiny_path, fmnist_idx, tmp_path):
    _nll(tiny_path, fmnist_idx, tmp_path / "a.json", "--shard", "0/2")
    res = CliRunner().invoke(cli, ["nll", "--model", str(tiny_path), "--data", str(fmnist_idx), "--n", "7",
                                   "--steps", "4", "--shard", "1/2", "--json", str(tmp_path / "b.json")],
                             prog_name="ddpm-codec")
    assert res.exit_code == 0
    res = CliRunner().invoke(cli, ["merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"),
                                   "--json", str(tmp_path / "m.json")], prog_name="ddpm-codec")
    assert res.exit_code != 0 and "disagree on steps" in res.output
    assert not (tmp_path / "m.json").exists() and "Traceback" not in res.output
