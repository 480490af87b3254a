"""The progressive lossy codec (DDPM Algorithms 3-4 by reverse channel coding).

Exact agreement of encoder and decoder latents, every prefix decodable,
--stop-at / --bpd, the lossless tail, unequal q/p variances, clean failures
(other model, other seed, damage), stochastic reconstruction, and a
statistical check that the latents sent follow q(z_s | z_t, x) up to the
documented lean of the capped search (bitsback.rcc.step).

Models: the closed-form denoiser on small random images (fast, exact), and the
untrained 'tiny' network for the API / CLI path.
"""
from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch

from ddpm_codec.codec import lossy, lossy_frames
from ddpm_codec.codec.lossless import ImageRecord
from ddpm_codec.format import container, varint
from ddpm_codec.testing.closed_form import closed_form_model

VDM = {"type": "linear_gamma", "gamma_min": -13.3, "gamma_max": 5.0}
FP = "ab" * 32


def _images(n=16, size=8, seed=0):
    """n blocky random (1, size, size) uint8 images: a finite data set for the closed form."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(n, 1, size // 2, size // 2)).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(np.repeat(base, 2, 2), 2, 3))


@pytest.fixture(scope="module")
def data_set():
    return _images()


@pytest.fixture(scope="module", params=["posterior", "transition"])
def model(request, data_set):
    """Closed-form models; 'transition' makes q and p differ in variance (DDPM's beta_t vs beta-tilde)."""
    return closed_form_model(data_set, VDM, variance=request.param)


def _rec(a, name="x.png"):
    return ImageRecord(pixels=np.ascontiguousarray(a.transpose(1, 2, 0)), name=name, mode="L")


def _header_len(data: bytes) -> int:
    """Bytes before the payload: everything a prefix needs before any frame."""
    end = container.header_end(data)
    return end + len(varint.encode(len(container.parse(data).payload)))


def _repack(data: bytes, **fields) -> bytes:
    c = container.parse(data)
    return container.pack(container.Container(c.mode, c.fingerprint, {**c.header, **fields}, c.payload))


def _encode(model, img, **kw):
    kw = {"steps": 20, "min_step_bits": 0.0, "frame_bits": 2, "keep_latents": True, **kw}
    return lossy.encode([_rec(img)], model, FP, **kw)


# ---- exact agreement -----------------------------------------------------------

def test_decoder_latents_equal_encoder_latents_at_every_frame(model, data_set):
    data, rep = _encode(model, data_set[3], frame_bits=1)
    enc = rep[0]["latents"]
    frames = rep[0]["frames"]
    assert len(frames) >= 2 and len(enc) == 21 and [lv for lv, _ in enc] == sorted({lv for lv, _ in enc}, reverse=True)
    lat = []
    out = lossy.decode(data, model, FP, latents=lat)
    assert [lv for lv, _ in lat[0]] == [lv for lv, _ in enc]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(lat[0], enc))      # bit for bit
    assert out[0].pixels.shape == (8, 8, 1)
    start = _header_len(data) + rep[0]["offset"]
    for f in frames:                                 # each frame prefix: the encoder's latents so far
        lat = []
        lossy.decode(data, model, FP, max_bytes=start + f["end_byte"], latents=lat)
        n = len(lat[0])
        assert lat[0][-1][0] == f["level"]
        assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(lat[0], enc[:n]))


def test_report_accounts_for_every_payload_byte(model, data_set):
    data, rep = _encode(model, data_set[5])
    c = container.parse(data)
    frames = rep[0]["frames"]
    assert frames[-1]["end_byte"] + rep[0]["offset"] == len(c.payload)
    assert sum(f["bits"] for f in frames) == 8 * frames[-1]["end_byte"]
    assert all(f["bits"] >= 8 for f in frames)


# ---- prefixes -------------------------------------------------------------------

def test_every_prefix_decodes_and_distortion_falls(data_set):
    model = closed_form_model(data_set, VDM)
    img = data_set[7]
    data, rep = _encode(model, img, steps=12, keep_latents=False)
    head = _header_len(data)
    for n in range(0, head, 7):                      # inside the header: a clean stream error
        with pytest.raises(container.StreamError):
            lossy.decode(data, model, FP, max_bytes=n)
    errs = []
    for n in range(head, len(data) + 1):
        out = lossy.decode(data, model, FP, max_bytes=n)[0].pixels
        assert out.shape == (8, 8, 1) and out.dtype == np.uint8
        errs.append(float(np.sqrt(np.mean((out[:, :, 0].astype(float) - img[0]) ** 2))))
    assert errs[-1] < errs[0]
    half = len(errs) // 2
    assert np.mean(errs[half:]) <= np.mean(errs[:half])
    # the full stream shows what the encoder reported last
    assert errs[-1] == pytest.approx(rep[0]["frames"][-1]["rmse"])


def test_progressive_pass_matches_truncated_decodes(data_set):
    model = closed_form_model(data_set, VDM)
    data, rep = _encode(model, data_set[1], keep_latents=False)
    pts = lossy.progressive(data, model, FP)[0]
    assert [p["level"] for p in pts] == [f["level"] for f in rep[0]["frames"]]
    for p in pts:
        out = lossy.decode(data, model, FP, max_bytes=p["end"])[0].pixels
        assert np.array_equal(out[:, :, 0], p["pixels"][0])


# ---- where the encoder stops ----------------------------------------------------

def test_stop_at_ends_the_chain_there(model, data_set):
    data, rep = _encode(model, data_set[2], stop_at=6, min_step_bits=4.0)
    assert rep[0]["final_level"] == 6
    lat = []
    lossy.decode(data, model, FP, latents=lat)                  # complete: the check passes
    assert lat[0][-1][0] == 6
    full, _ = _encode(model, data_set[2], min_step_bits=4.0)
    lat = []
    lossy.decode(full, model, FP, stop_at=6, latents=lat)        # decoder side: down to level 6 at most
    assert lat[0][-1][0] <= 6 and lat[0][-2][0] > 6


def test_bpd_budget_is_respected(model, data_set):
    full, rep_full = _encode(model, data_set[4])
    total = rep_full[0]["frames"][-1]["cum_bits"]
    for budget_bits in (total // 3, total // 2):
        data, rep = _encode(model, data_set[4], bpd=budget_bits / 64)
        sent = rep[0]["frames"][-1]["cum_bits"] if rep[0]["frames"] else 0
        assert 8 * (len(container.parse(data).payload) - rep[0]["offset"]) == sent <= budget_bits
        assert sent >= budget_bits - 64                  # stopped near the budget, not far before
        lossy.decode(data, model, FP)                    # a deliberately short stream passes its check


def test_tiny_budget_gives_an_empty_but_valid_stream(data_set):
    model = closed_form_model(data_set, VDM)
    data, rep = _encode(model, data_set[0], bpd=0.01)
    assert rep[0]["frames"] == []
    out = lossy.decode(data, model, FP)[0].pixels
    assert np.all(out == 128)


# ---- lossless tail, stochastic ----------------------------------------------------

def test_lossless_tail_round_trip_is_exact(model, data_set):
    for k in (0, 9):
        data, rep = _encode(model, data_set[k], lossless_tail=True, min_step_bits=8.0, frame_bits=32)
        assert rep[0]["frames"][-1]["level"] == -1
        out = lossy.decode(data, model, FP)[0].pixels
        assert np.array_equal(out[:, :, 0], data_set[k][0])
    with pytest.raises(ValueError):
        _encode(model, data_set[0], lossless_tail=True, stop_at=3)


def test_stochastic_reconstruction_runs(data_set):
    model = closed_form_model(data_set, VDM)
    data, _ = _encode(model, data_set[6])
    a = lossy.decode(data, model, FP, stochastic=True, stop_at=10)[0].pixels
    b = lossy.decode(data, model, FP, stochastic=True, stop_at=10)[0].pixels
    assert a.shape == (8, 8, 1) and a.dtype == np.uint8 and np.array_equal(a, b)   # seeded from the header
    head = _header_len(data)
    c = lossy.decode(data, model, FP, stochastic=True, max_bytes=head)[0].pixels    # nothing received
    assert c.shape == (8, 8, 1)


# ---- clean failures ------------------------------------------------------------------

def test_other_model_or_seed_fails_cleanly(data_set):
    model = closed_form_model(data_set, VDM)
    data, _ = _encode(model, data_set[8])
    with pytest.raises(container.ModelMismatch):
        lossy.decode(data, model, "cd" * 32)
    other = closed_form_model(_images(seed=1), VDM)          # same claimed fingerprint, other numerics
    with pytest.raises(container.StreamError, match="check"):
        lossy.decode(data, other, FP)
    seed = container.parse(data).header["seed"]
    with pytest.raises(container.StreamError, match="check"):
        lossy.decode(_repack(data, seed=seed ^ 1), model, FP)
    with pytest.raises(container.StreamError):
        lossy.decode(_repack(data, rcc=[12.0, 2.0]), model, FP)
    with pytest.raises(container.StreamError):
        lossy.decode(_repack(data, rcc=[12.0, 2.0, 20, 2]), model, FP)     # other parameters
    with pytest.raises(container.StreamError):
        lossy.decode(_repack(data, format=99), model, FP)


def test_damaged_payload_never_passes_silently(data_set):
    """Flip each payload byte (CRCs recomputed): a clean StreamError or, at worst,
    a decode the final check rejects -- never an exception of another kind."""
    model = closed_form_model(data_set, VDM)
    data, _ = _encode(model, data_set[10])
    c = container.parse(data)
    for i in range(len(c.payload)):
        body = bytearray(c.payload)
        body[i] ^= 0x5A
        bad = container.pack(container.Container("lossy", c.fingerprint, c.header, bytes(body)))
        try:
            lossy.decode(bad, model, FP)
        except container.StreamError:
            continue
        raise AssertionError(f"byte {i} damaged without an error")


# ---- the latents follow q ---------------------------------------------------------

def _residuals(model, img, seeds, level_from, level_to, params=None, steps=10):
    """Standardized residuals (z_s - mu_q) / s_q of the step level_from -> level_to, the
    unit direction of mu_q - mu_p in those units and the step's KL (bits), over many
    shared-randomness seeds."""
    chain = lossy._Chain(model, model.schedule.chain(steps))
    x = torch.from_numpy(img.astype(np.float64) / 127.5 - 1.0)
    out = []
    for seed in seeds:
        _, rep = lossy.encode_unit(chain, img, seed, params, min_step_bits=0.0, frame_bits=1 << 20,
                                   stop_level=level_to, keep_latents=True)
        lat = dict(rep["latents"])
        zt, zs = lat[level_from], lat[level_to]
        mq, sq = chain.q(zt, x, level_from, level_to)
        mp, _ = chain.p(zt, chain.eps(zt, level_from), level_from, level_to)
        r = ((zs - mq) / sq).ravel()
        d = ((mq - mp) / sq).ravel()
        out.append((r, d / np.linalg.norm(d), float(np.sum(d * d)) / (2 * np.log(2))))
    return out


def test_latents_follow_q_up_to_the_documented_lean():
    """On the closed form (64 images, a 10-step chain) the step 9 -> 8 carries ~3 bits.

    Capped PFR picks its candidate by the weight q/p only, which for equal
    variances depends on the candidate only through its projection on
    mu_q - mu_p: every other direction is an exact N(0, 1) draw. Along that
    direction the winner leans towards p (bitsback.rcc.step: a fraction of a
    standard deviation for chunks of a few bits with 2 bits of margin), and a
    wider margin shrinks the lean."""
    data_set = _images(64, 8, seed=3)
    model = closed_form_model(data_set, VDM)
    res = _residuals(model, data_set[0], range(60), 9, 8, {"margin_bits": 2.0})
    kl = np.mean([k for _, _, k in res])
    assert 1.5 < kl < 8.0                             # one chunk that carries something
    along = np.array([r @ d for r, d, _ in res])
    ortho = np.concatenate([r - (r @ d) * d for r, d, _ in res])
    n, dof = ortho.size, len(res) * (data_set[0].size - 1)
    assert abs(ortho.mean()) < 4 / np.sqrt(n)
    assert abs(np.sum(ortho ** 2) / dof - 1.0) < 4 * np.sqrt(2 / dof)   # 63 of 64 directions: N(0, 1)
    assert -0.8 < along.mean() < -0.1                  # measured -0.4 +- 0.06 (200 seeds): leans to p
    wide = _residuals(model, data_set[0], range(60), 9, 8, {"margin_bits": 8.0})
    along_wide = np.array([r @ d for r, d, _ in wide])
    assert abs(along_wide.mean()) < 0.3                # measured -0.04 +- 0.07: a wide margin is ~exact
    assert along_wide.mean() > along.mean()


# ---- the API and the command line ----------------------------------------------------

@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    from ddpm_codec.diffusion.configs import get_config
    from ddpm_codec.diffusion.model import DiffusionModel
    from ddpm_codec.io.checkpoint import save_model
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("m") / "tiny"
    save_model(DiffusionModel.from_config(get_config("tiny")).eval(), path)
    return path


def test_api_round_trip_on_the_tiny_network(tiny_path):
    from ddpm_codec.api import Codec
    codec = Codec(str(tiny_path))
    img = np.tile(np.arange(0, 256, 32, dtype=np.uint8), (8, 1))
    data, rep = codec.compress_lossy([img], steps=3)
    h = container.parse(data).header
    assert "rcc" not in h and "codec" not in h            # the defaults, left out
    assert lossy.HEADER_DEFAULTS["rcc"] == [*lossy.RCC_PARAMS.values(), lossy.FRAME_BITS]
    other, _ = lossy.encode([lossy.ImageRecord(pixels=img[:, :, None], name="x.png", mode="L")], codec.model, codec.fingerprint,
                            steps=3, params={"margin_bits": 3.0})
    assert container.parse(other).header["rcc"] == [10.0, 3.0, 20, lossy.FRAME_BITS]
    assert lossy.decode(other, codec.model, codec.fingerprint)[0].pixels.shape == (8, 8, 1)
    with pytest.raises(container.StreamError, match="does not fit this model"):    # found by the fuzzer
        lossy.decode(_repack(data, steps=65535), codec.model, codec.fingerprint)
    full = codec.decompress_lossy(data)[0].pixels
    assert full.shape == (8, 8, 1)
    cut = codec.decompress_lossy(data, max_bytes=_header_len(data) + rep[0]["frames"][0]["end_byte"] + 1)
    assert cut[0].pixels.shape == (8, 8, 1)


def test_cli_compress_lossy_and_decompress_prefixes(tiny_path, tmp_path):
    from click.testing import CliRunner

    from cli.main import cli
    from ddpm_codec.io.images import write_png
    img = (np.add.outer(np.arange(12), np.arange(12)) * 10).astype(np.uint8)
    write_png(tmp_path / "a.png", img, "L")
    run = lambda *a: CliRunner().invoke(cli, [str(v) for v in a], prog_name="ddpm-codec")   # noqa: E731
    res = run("compress", "--lossy", tmp_path / "a.png", "--model", tiny_path, "--steps", 4, "--stop-at", 1,
              "-o", tmp_path / "a.ddpmc")
    assert res.exit_code == 0, res.output
    data = (tmp_path / "a.ddpmc").read_bytes()
    assert container.parse(data).header["steps"] == 4
    for extra in ([], ["--max-bytes", _header_len(data) + 3], ["--stop-at", 2], ["--stochastic"]):
        out = tmp_path / f"out{len(extra)}{extra[:1]}"
        res = run("decompress", tmp_path / "a.ddpmc", "--model", tiny_path, "-o", out, *extra)
        assert res.exit_code == 0, res.output
        assert (out / "a.png").exists()


def test_header_records_what_the_decoder_needs(data_set):
    model = closed_form_model(data_set, VDM)
    data, rep = _encode(model, data_set[0], frame_bits=16, params={"margin_bits": 3.0})
    h = container.parse(data).header
    assert h["rcc"] == [lossy.RCC_PARAMS["bits_per_chunk"], 3.0, lossy.RCC_PARAMS["max_candidates_log2"], 16]
    assert h["steps"] == 20 and 0 <= h["seed"] < 1 << 32 and "lossless_tail" not in h
    assert h["final_crc"] == [rep[0]["final_crc"]]
    assert zlib.crc32(lossy.decode(data, model, FP)[0].pixels[:, :, 0].tobytes()) == rep[0]["final_crc"]


def test_chunk_count_code_round_trips_with_escapes():
    from bitsback.rcc.coder import Reader, Writer
    cases = [(1, 1.0, 784), (3, 2.5, 784), (40, 1.0, 784), (784, 3.0, 784), (5000, 2.0, 1 << 30)]
    w = Writer()
    for c0, pred, dims in cases:
        assert lossy_frames._code_count(w, c0, pred, dims) == c0
    r = Reader(w.payload())
    assert [lossy_frames._code_count(r, 0, pred, dims) for _, pred, dims in cases] == [c for c, _, _ in cases]
    r.finish()


def test_decodes_the_same_in_a_fresh_process(tiny_path, tmp_path):
    """The determinism contract: another interpreter (other hash salt) rebuilds the
    same latents, so the stream passes its final check and gives the same image."""
    import subprocess
    import sys
    from pathlib import Path

    from ddpm_codec.api import Codec
    codec = Codec(str(tiny_path))
    img = (np.add.outer(np.arange(8), np.arange(8)) * 15).astype(np.uint8)
    data, _ = codec.compress_lossy([img], steps=4)
    here = codec.decompress_lossy(data)[0].pixels
    (tmp_path / "s.ddpmc").write_bytes(data)
    code = ("import sys, numpy as np; from ddpm_codec.api import Codec;"
            "d = open(sys.argv[2], 'rb').read();"
            "np.save(sys.argv[3], Codec(sys.argv[1]).decompress_lossy(d)[0].pixels)")
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code, str(tiny_path), str(tmp_path / "s.ddpmc"), str(tmp_path / "x.npy")],
                   check=True, cwd=root, env={"PYTHONHASHSEED": "4321", "OMP_NUM_THREADS": "1",
                                               "PYTHONPATH": ":".join(sys.path)})
    assert np.array_equal(np.load(tmp_path / "x.npy"), here)
