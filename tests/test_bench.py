"""`ddpm-codec bench` through the real CLI on a tiny model: every record's figures are
recomputed here from their parts (file bytes, seed, net bits, the per-image ideal
bits against the exact -VLB), and the single-image rows match files written alone."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from ddpm_codec.codec import lossless
from ddpm_codec.io.checkpoint import load_model
from ddpm_codec_cli.main import cli


def test_bench_records_add_up(tiny_path, fmnist_idx, fmnist_images, tmp_path):
    out, md = tmp_path / "b.json", tmp_path / "b.md"
    res = CliRunner().invoke(cli, ["bench", "--model", str(tiny_path), "--data", str(fmnist_idx), "--n", "6",
                                   "--steps", "2,3", "--single", "2", "--json", str(out), "--markdown", str(md),
                                   "--no-classical"], prog_name="ddpm-codec")
    assert res.exit_code == 0, (res.output, res.exception)
    rec = json.loads(out.read_text())
    assert [r["t_eval"] for r in rec["records"]] == [2, 3]
    model, meta = load_model(str(tiny_path))
    images = fmnist_images[:6]
    recs = [lossless.ImageRecord(pixels=a.transpose(1, 2, 0).copy(), name="", mode="L") for a in images]
    for r in rec["records"]:
        assert r["exact_roundtrip"] and r["dims"] == 6 * 784 and r["n_images"] == 6
        # the same stream again (encoding is deterministic): its size is the file figure
        data, rep = lossless.encode(recs, model, meta["fingerprint"], steps=r["t_eval"], classical_choice=False)
        assert r["file_bpd"] == pytest.approx(8 * len(data) / (6 * 784), rel=1e-12)
        assert r["seed_images"] == rep.seed_units and r["seed_bits"] == rep.seed_bits
        assert r["net_bpd"] == pytest.approx(rep.net_bits / rep.chain_dims, rel=1e-12)
        # per-image ideal bits add up to the coder's ideal total
        assert sum(rep.ideal_bits_by_image.values()) == pytest.approx(rep.ideal_net_bits, rel=1e-9)
        assert len(rep.ideal_bits_by_image) + len(rep.seed_images) == 6
        assert r["net_gap_se_pct"] > 0 and np.isfinite(r["net_gap_pct"])
        assert 0 <= r["coding_time_share"] <= 1
    for s in rec["single_image"]:
        assert s["n_images"] == 2 and len(s["per_image"]) == 2
        for n in range(2):
            data, _ = lossless.encode(recs[n:n + 1], model, meta["fingerprint"], steps=s["t_eval"])
            assert s["per_image"][n] == pytest.approx(8 * len(data) / 784, rel=1e-12)
            assert s["per_image"][n] <= s["random_chain_bpd"][n] + 1e-12      # the codec keeps the smaller
            rnd, _ = lossless.encode(recs[n:n + 1], model, meta["fingerprint"], steps=s["t_eval"],
                                     seed_mode="random")
            assert s["random_chain_bpd"][n] == pytest.approx(8 * len(rnd) / 784, rel=1e-12)
    assert "Each image alone" in md.read_text()
