"""Portable streams (issue 18): exact conditionals give the same bits whatever
kernels torch picks, so a stream encoded under one machine's decodes under
another's; a float stream does not, which shows the check can fail."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bitsback import exact
from bitsback.ans.message import Message
from bitsback.symbols import gaussian, pixels
from ddpm_codec.diffusion.exact_unet import ExactUNet, quantize
from ddpm_codec.testing import portability

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden"
EXAMPLES = [str(ROOT / "examples" / f"fashion_test_{k}.png") for k in range(2)]


def _tiny_vdm():
    from ddpm_codec.io.checkpoint import load_model
    return load_model(str(GOLDEN / "tiny_vdm"))[0]


# ---- the pieces ------------------------------------------------------------
def test_decimal_scalars_match_libm_to_an_ulp():
    import math
    for x in (-13.3, -2.5, -1e-7, 0.0, 1e-9, 0.7, 5.0):
        assert abs(exact.sigmoid(x) - 1 / (1 + math.exp(-x))) <= 2e-16 * max(1.0, abs(exact.sigmoid(x)))
        assert abs(exact.expm1(x) - math.expm1(x)) <= 4.5e-16 * max(abs(math.expm1(x)), 1e-300)
    for x in (0.1, 3.0, 1000.0, -57.25):
        assert abs(exact.sin(x) - math.sin(x)) < 1e-15 and abs(exact.cos(x) - math.cos(x)) < 1e-15


def test_normal_cdf_table_is_accurate_and_monotone():
    from scipy.special import ndtr
    t = exact.normal_cdf_table()
    grid = t.x0 + np.arange(t.values.size) / t.per_unit
    assert np.max(np.abs(t.values - ndtr(grid))) < 1e-15
    assert np.all(np.diff(t.values) >= 0)
    x = np.random.default_rng(0).normal(size=20000) * 3
    assert np.max(np.abs(exact.normal_cdf(x) - ndtr(x))) < 5e-7
    assert exact.normal_cdf(np.array([-np.inf]))[0] < 1e-23 and exact.normal_cdf(np.array([np.inf]))[0] == 1.0


def test_quantize_is_per_image_and_idempotent():
    x = torch.randn(3, 4, 5, 5, dtype=torch.float64) * torch.tensor([1e-3, 1.0, 1e3]).view(3, 1, 1, 1)
    q = quantize(x, 24)
    assert torch.equal(quantize(q, 24), q)
    for i in range(3):          # each image keeps 24 bits of its own scale
        assert torch.equal(q[i:i + 1], quantize(x[i:i + 1], 24))
        assert (q[i] - x[i]).abs().max() <= x[i].abs().max() * 2.0 ** -24


def test_exact_network_is_close_to_float_and_independent_of_the_batch():
    model = _tiny_vdm()
    net = ExactUNet(model.unet)
    z = torch.randn(5, 1, 28, 28, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.1, 0.1, 0.5, 0.9, 0.9], dtype=torch.float64)
    e = net(z, t)
    f = model.eps(z, t).double()
    assert (e - f).abs().max() < 1e-4 * f.abs().max()
    assert torch.equal(net(z[2:4], t[2:4]), e[2:4])       # what one image gets, whatever its batch


def test_exact_network_sums_are_exact_in_any_order():
    """The property the design rests on: integer-valued float64 convolution equals
    the same sums in int64 (a different order, no rounding)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randint(-2 ** 24, 2 ** 24, (2, 64, 7, 7), generator=g).double()
    w = torch.randint(-2 ** 15, 2 ** 15, (16, 64, 3, 3), generator=g).double()
    y = torch.nn.functional.conv2d(x, w, padding=1)
    cols = torch.nn.functional.unfold(x, 3, padding=1).long()          # (2, 576, 49)
    ref = torch.einsum("ok,nkl->nol", w.reshape(16, -1).long(), cols).reshape(y.shape)
    assert torch.equal(y.long(), ref)


@pytest.mark.parametrize("escape", [False, True])
def test_exact_gaussian_window_round_trip(escape):
    rng = np.random.default_rng(2)
    mean, scale, delta = rng.normal(size=300) * 3, rng.uniform(0.2, 4, 300), 0.5
    idx = np.rint(mean / delta + rng.normal(size=300) * scale / delta * (1.5 if escape else 0.5)).astype(np.int64)
    msg = Message.from_words(rng.integers(0, 2 ** 32, 200, dtype=np.uint32))
    before = msg.copy()
    bits = gaussian.push(msg, idx, mean, scale, delta, escape=escape, exact=True)
    got, _ = gaussian.pop(msg, mean, scale, delta, escape=escape, exact=True)
    assert np.array_equal(got, idx) and msg == before
    assert bits.sum() > 0


def test_exact_pixel_round_trip():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, 500).astype(np.uint8)
    mean = x / 127.5 - 1 + rng.normal(size=500) * 0.02
    msg = Message.from_words(rng.integers(0, 2 ** 32, 10, dtype=np.uint32))
    before = msg.copy()
    pixels.push(msg, x, mean, 0.01, exact=True)
    got, _ = pixels.pop(msg, mean, 0.01, (500,), exact=True)
    assert np.array_equal(got, x) and msg == before


def test_exact_half_width_never_narrower():
    r = np.geomspace(0.01, 500, 200)
    assert np.all(gaussian.half_width(r, 1.0, False, exact=True) >= gaussian.half_width(r, 1.0, False))


# ---- streams ---------------------------------------------------------------
def test_portable_stream_header_and_refusals():
    from ddpm_codec.api import Codec
    from ddpm_codec.format.container import parse
    codec = Codec(str(GOLDEN / "tiny_vdm"))
    rng = np.random.default_rng(4)
    imgs = [rng.integers(0, 256, (9, 7), dtype=np.uint8) for _ in range(2)]
    data, _ = codec.compress(imgs, steps=2, classical="never")
    h = parse(data).header
    assert h["portable"] is True and "torch" not in h and "threads" not in h
    torch.set_num_threads(1)
    try:
        out = codec.decompress(data)
    finally:
        torch.set_num_threads(2)
    assert all(np.array_equal(o.pixels[:, :, 0], i) for o, i in zip(out, imgs))
    tiny = Codec(str(GOLDEN / "tiny"))        # discrete schedule: no exact evaluation
    assert tiny.portable("auto") is False
    with pytest.raises(Exception, match="exact evaluation"):
        tiny.compress(imgs, steps=2, portable=True)


def _spec():
    return portability.standard_spec(ROOT)


def test_portable_streams_decode_under_other_kernels(tmp_path):
    """Encode under AVX-512 kernels, decode under AVX2 and under no vector unit."""
    res = portability.run_matrix(_spec(), tmp_path, envs=("avx512", "avx2", "default"))
    enc = {k: v for k, v in res.items() if k[0] == "avx512"}
    bad = {k: v for k, v in enc.items() if v != "ok"}
    assert not bad, bad


def test_float_streams_are_caught_not_silently_wrong(tmp_path):
    """The same check on float streams fails loudly (which shows it can fail)."""
    spec = [{"name": "float", "model": "default", "images": EXAMPLES,
             "kw": {"steps": 6, "classical": "never", "portable": False}}]
    res = portability.run_matrix(spec, tmp_path, envs=("avx512", "default"))
    assert res[("avx512", "avx512", "float")] == "ok"
    cross = res[("avx512", "default", "float")]
    assert cross != "ok" and "different pixels" not in cross


@pytest.mark.slow
def test_every_stream_kind_decodes_under_every_environment(tmp_path):
    """The issue's matrix: each environment encodes, every other decodes (7 x 7 x 4)."""
    res = portability.run_matrix(_spec(), tmp_path)
    bad = {k: v for k, v in res.items() if v != "ok"}
    (tmp_path / "matrix.json").write_text(json.dumps({"|".join(k): v for k, v in res.items()}))
    assert len(res) == len(portability.ENVIRONMENTS) ** 2 * 4
    assert not bad, bad


def test_portability_worker_reports_a_damaged_stream(tmp_path):
    spec = [{"name": "lossless", "model": str(GOLDEN / "tiny_vdm"), "images": [str(GOLDEN / "in_grey.png"),
             str(GOLDEN / "in_rgb.png")], "kw": {"steps": 2, "classical": "never"}}]
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    cmd = [sys.executable, "-m", "ddpm_codec.testing.portability"]
    subprocess.run(cmd + ["encode", str(tmp_path / "spec.json"), str(tmp_path / "a")], check=True, capture_output=True)
    p = tmp_path / "a" / "lossless.ddpmc"
    b = bytearray(p.read_bytes())
    b[-3] ^= 0x40
    p.write_bytes(bytes(b))
    r = subprocess.run(cmd + ["decode", str(tmp_path / "spec.json"), str(tmp_path / "a")], check=True,
                       capture_output=True, text=True)
    (v,) = json.loads(r.stdout.strip().splitlines()[-1]).values()
    assert v != "ok"

