"""The model-side commands (train, nll, sample) run through the real click CLI."""
import json
import re

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers import random_model
from PIL import Image

from ddpm_codec.eval.evaluate import evaluate_nll
from ddpm_codec.eval.sampling import sample as draw
from ddpm_codec.io.checkpoint import load_model, save_model
from ddpm_codec_cli.main import cli

SUMMARY = re.compile(r"-VLB (\S+)(?: \+- \S+)? bits/dim = L_T (\S+) \+ diffusion (\S+) \+ L_0 (\S+)\s+\[(\d+) images, D = (\d+)")


def run(*args):
    res = CliRunner().invoke(cli, [str(a) for a in args], prog_name="ddpm-codec")
    assert res.exit_code == 0, (res.output, res.exception)
    return res




@pytest.mark.parametrize("steps", [1, 7])
def test_nll_prints_the_json_terms_summed(tiny_path, fmnist_idx, fmnist_images, tmp_path, steps):
    out = tmp_path / "nll.json"
    res = run("nll", "--model", tiny_path, "--data", fmnist_idx, "--n", 5, "--steps", steps, "--batch", 2,
              "--json", out)
    m = SUMMARY.search(res.stdout)
    assert m, res.stdout
    total, prior, diff, dec = (float(v) for v in m.groups()[:4])
    assert (int(m.group(5)), int(m.group(6))) == (5, 784)
    rec = json.loads(out.read_text())
    summed = rec["prior_bpd"] + rec["diffusion_bpd"] + rec["decoder_bpd"]
    assert total == pytest.approx(summed, abs=5e-5)                      # printed with 4 decimals
    assert rec["bpd"] == pytest.approx(summed, rel=1e-12)
    assert (prior, diff, dec) == pytest.approx((rec["prior_bpd"], rec["diffusion_bpd"], rec["decoder_bpd"]),
                                               abs=5e-5)
    # the record is self-consistent and carries its conventions
    assert len(rec["per_image_bits"]) == 5 and rec["n_images"] == 5 and rec["dims_per_image"] == 784
    assert np.mean(rec["per_image_bits"]) / 784 == pytest.approx(rec["bpd"], rel=1e-12)
    assert sum(rec["per_step_bpd"]) == pytest.approx(rec["diffusion_bpd"], rel=1e-12, abs=1e-15)
    assert len(rec["times"]) == steps and len(rec["per_step_bpd"]) == steps - 1
    assert rec["total_bits"] == pytest.approx(sum(rec["per_image_bits"]), rel=1e-12)
    assert rec["pixel_scaling"] == "x = pixel / 127.5 - 1" and rec["weights"] == "EMA"
    model, meta = load_model(str(tiny_path))
    assert rec["model_fingerprint"] == meta["fingerprint"]
    # and it is what the library computes (batch size 2 again: same network batches)
    lib = evaluate_nll(model, fmnist_images[:5], steps, batch=2, progress=False)
    assert rec["bpd"] == lib["bpd"] and rec["per_image_bits"] == lib["per_image_bits"]


def test_nll_step_samples_shards_merge_and_standard_error(tiny_path, fmnist_idx, fmnist_images, tmp_path):
    """`nll --step-samples`: the estimate, its standard error over images and the
    estimator are in the record; two shards merge into exactly the unsharded run."""
    args = ("nll", "--model", tiny_path, "--data", fmnist_idx, "--n", 6, "--steps", 9, "--batch", 3,
            "--step-samples", 2)
    full = tmp_path / "full.json"
    res = run(*args, "--json", full)
    assert "+-" in res.stdout and "stratified sample of 2 of 9" in res.stdout
    rec = json.loads(full.read_text())
    bits = np.array(rec["per_image_bits"])
    assert rec["bpd_se"] == pytest.approx(bits.std(ddof=1) / 784 / np.sqrt(6), rel=1e-9)
    assert rec["step_samples"] == 2 and rec["bpd"] == pytest.approx(bits.mean() / 784, rel=1e-12)
    parts = []
    for i in (0, 1):
        parts.append(tmp_path / f"s{i}.json")
        run(*args, "--shard", f"{i}/2", "--json", parts[-1])
    run("merge", *parts, "--json", tmp_path / "m.json")
    merged = json.loads((tmp_path / "m.json").read_text())
    assert merged["per_image_bits"] == rec["per_image_bits"]
    assert merged["bpd_se"] == pytest.approx(rec["bpd_se"], rel=1e-9)


def test_nll_bad_shard_is_a_usage_error(tiny_path, fmnist_idx):
    res = CliRunner().invoke(cli, ["nll", "--model", str(tiny_path), "--data", str(fmnist_idx),
                                   "--shard", "2/2"], prog_name="ddpm-codec")
    assert res.exit_code == 2 and "shard" in res.output and "Traceback" not in res.output


@pytest.mark.parametrize("config,steps,snapshots", [("tiny", 6, 4), ("tiny-vdm", 5, 3)])
def test_sample_writes_png_of_the_right_geometry(tmp_path, config, steps, snapshots):
    m = random_model(config, 1, scale=0.02)
    save_model(m, tmp_path / "m")
    out = tmp_path / "s.png"
    n = 3
    res = run("sample", "--model", tmp_path / "m", "--n", n, "--steps", steps, "--snapshots", snapshots,
              "--seed", 5, "-o", out)
    assert "wrote" in res.stdout
    img = Image.open(out)
    assert img.mode == "L"
    pad, side = 2, 28
    assert img.size == (pad + snapshots * (side + pad), pad + n * (side + pad))   # (width, height)
    # the last column is the sample the library draws with the same seed
    final, frames = draw(m, n, steps, seed=5, snapshots=snapshots, progress=False)
    assert frames.shape == (n, snapshots, 1, side, side)
    arr = np.asarray(img)
    for i in range(n):
        y, x = pad + i * (side + pad), pad + (snapshots - 1) * (side + pad)
        np.testing.assert_array_equal(arr[y:y + side, x:x + side], final[i, 0])
    assert (arr[:pad] == 255).all() and (arr[:, :pad] == 255).all()       # white padding
    # refuses to overwrite without --force
    res = CliRunner().invoke(cli, ["sample", "--model", str(tmp_path / "m"), "--n", "1", "--steps", "2",
                                   "-o", str(out)], prog_name="ddpm-codec")
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()                # refused before sampling: one line
    assert len(lines) == 1 and lines[0].startswith("ddpm-codec: error:") and "exists" in lines[0]
    run("sample", "--model", tmp_path / "m", "--n", 1, "--steps", 2, "--snapshots", 2, "-o", out, "--force")
    assert Image.open(out).size == (pad + 2 * (side + pad), pad + side + pad)


def test_train_resume_export_then_nll(tmp_path, fmnist_idx):
    out, exp = tmp_path / "run", tmp_path / "exported"
    common = ["train", "--config", "tiny", "--data", fmnist_idx, "--out", out, "--batch-size", 8,
              "--eval-every", 0, "--eval-n", 8, "--device", "cpu", "--seed", 1]
    res = run(*common, "--steps", 3)
    assert "done at step 3" in res.stdout and "global batch 8 = 1 rank(s) x 8" in res.stderr
    assert json.loads((out / "last" / "state.json").read_text())["step"] == 3
    res = run(*common, "--steps", 5, "--export", exp)
    assert "resumed" in res.stderr and "at step 3" in res.stderr
    assert "done at step 5" in res.stdout and "exported" in res.stdout
    model, meta = load_model(str(exp))
    assert meta["step"] == 5 and meta["ema"] is True
    last, _ = load_model(str(out / "last" / "model"))
    for k, v in last.state_dict().items():
        assert torch.equal(model.state_dict()[k], v)
    res = run("nll", "--model", exp, "--data", fmnist_idx, "--n", 2, "--steps", 3)
    assert SUMMARY.search(res.stdout)


def test_train_on_too_few_images_is_a_one_line_error(tmp_path, fmnist_images):
    import gzip
    import struct
    arr = fmnist_images[:3, 0]
    data = tmp_path / "three-idx3-ubyte.gz"
    data.write_bytes(gzip.compress(bytes([0, 0, 8, 3]) + struct.pack(">3I", *arr.shape) + arr.tobytes()))
    res = CliRunner().invoke(cli, ["train", "--config", "tiny", "--data", str(data), "--out", str(tmp_path / "r"),
                                   "--batch-size", "8", "--steps", "1", "--device", "cpu"], prog_name="ddpm-codec")
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert lines[-1].startswith("ddpm-codec: error: ") and "fewer than the global batch" in lines[-1]
    assert "Traceback" not in res.output


# ---- issue 21, item 6: defaults a new user can run on a CPU ---------------------------
def _fails(res, fragment):
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("ddpm-codec: error: ") and fragment in lines[0], res.stderr
    return lines[0]


@pytest.fixture(scope="module")
def recommends_3(tmp_path_factory):
    """The tiny model again, its JSON recommending a 3-step chain."""
    path = tmp_path_factory.mktemp("rec") / "tiny3"
    save_model(random_model("tiny", 0, scale=0.02), path, {"ema": True, "recommended_steps": 3})
    return path


def test_nll_rd_curve_and_sample_default_to_the_recommended_chain(recommends_3, fmnist_idx, tmp_path):
    run("nll", "--model", recommends_3, "--data", fmnist_idx, "--n", 2, "--json", tmp_path / "nll.json")
    assert len(json.loads((tmp_path / "nll.json").read_text())["times"]) == 3
    run("rd-curve", "--model", recommends_3, "--data", fmnist_idx, "--n", 2, "--no-classical",
        "--json", tmp_path / "rd.json")
    assert json.loads((tmp_path / "rd.json").read_text())["steps"] == 3
    res = run("sample", "--model", recommends_3, "--n", 1, "--snapshots", 2, "-o", tmp_path / "s.png")
    assert res.stdout.strip().endswith(", 3 steps")
    res = run("sample", "--model", recommends_3, "--n", 1, "--snapshots", 2, "--steps", 2, "-o", tmp_path / "t.png")
    assert res.stdout.strip().endswith(", 2 steps")                 # --steps still wins


def test_a_bad_recommended_chain_is_a_one_line_error(tmp_path, fmnist_idx):
    save_model(random_model("tiny", 0, scale=0.02), tmp_path / "m", {"recommended_steps": 0})
    _fails(CliRunner().invoke(cli, ["nll", "--model", str(tmp_path / "m"), "--data", str(fmnist_idx), "--n", "1"]),
           "recommended_steps 0")


def test_split_is_checked_even_where_the_data_has_none(tiny_path, fmnist_idx):
    """One IDX file is every split, so only the option itself can refuse a typo."""
    res = CliRunner().invoke(cli, ["nll", "--model", str(tiny_path), "--data", str(fmnist_idx), "--n", "1",
                                   "--steps", "1", "--split", "tset"], prog_name="ddpm-codec")
    _fails(res, "'tset' is not one of 'train', 'test'")
    run("nll", "--model", tiny_path, "--data", fmnist_idx, "--n", 1, "--steps", 1, "--split", "train")


def test_fit_chain_time_grid_and_its_old_spelling(tmp_path, fmnist_idx):
    src = tmp_path / "vdm"
    save_model(random_model("tiny-vdm", 2, scale=0.05), src, {"ema": True, "recommended_steps": 4})
    common = ["fit-chain", "--model", src, "--steps", 4, "--data", fmnist_idx, "--n", 2]
    res = run(*common, "--to", tmp_path / "new", "--time-grid", 12)
    assert "deprecated" not in res.stderr
    assert load_model(str(tmp_path / "new"))[1]["chain_fit"]["grid"] == 12
    res = run(*common, "--to", tmp_path / "old", "--grid", 12)            # hidden, still works
    assert "--grid is deprecated; use --time-grid" in res.stderr
    assert load_model(str(tmp_path / "old"))[1]["chain_fit"] == load_model(str(tmp_path / "new"))[1]["chain_fit"]
    res = CliRunner().invoke(cli, [str(a) for a in common] + ["--to", str(tmp_path / "both"), "--grid", "12",
                                                              "--time-grid", "12"], prog_name="ddpm-codec")
    _fails(res, "give only --time-grid")
    assert not (tmp_path / "both.json").exists()
