"""The lossless codec end to end: exact round trips, sizes against -VLB,
model mismatch, and decoding in a fresh process (the determinism contract)."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from ddpm_codec.bound.vlb import chain_terms
from ddpm_codec.codec import lossless
from ddpm_codec.diffusion.configs import get_config
from ddpm_codec.diffusion.model import DiffusionModel
from ddpm_codec.format import container
from ddpm_codec.io.checkpoint import fingerprint, save_model
from ddpm_codec.testing.closed_form import closed_form_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    model = DiffusionModel.from_config(get_config("tiny")).eval()
    path = tmp_path_factory.mktemp("m") / "tiny"
    fp = save_model(model, path)
    return model, fp, path


def _rec(a, name="x.png", mode=None):
    a = a if a.ndim == 3 else a[:, :, None]
    return lossless.ImageRecord(pixels=a, name=name, mode=mode or {1: "L", 3: "RGB", 4: "RGBA"}[a.shape[2]])


def test_roundtrip_odd_sizes_and_modes(tiny):
    model, fp, _ = tiny
    rng = np.random.default_rng(0)
    images = [_rec(rng.integers(0, 256, (5, 7), dtype=np.uint8), "a.png"),
              _rec(rng.integers(0, 256, (3, 3, 3), dtype=np.uint8), "b.png"),
              _rec(rng.integers(0, 256, (6, 2, 4), dtype=np.uint8), "c.png"),
              _rec(np.full((1, 1), 7, np.uint8), "d.png")]
    data, rep = lossless.encode(images, model, fp, steps=3)
    out = lossless.decode(data, model, fp)
    assert [o.name for o in out] == ["a.png", "b.png", "c.png", "d.png"]
    assert [o.mode for o in out] == ["L", "RGB", "RGBA", "L"]
    for a, b in zip(images, out):
        assert b.pixels.shape == a.pixels.shape
        assert np.array_equal(a.pixels, b.pixels)
    assert rep.file_bytes == len(data)


def test_fashion_mnist_roundtrip_and_other_model_refused(tiny, fmnist_images):
    model, fp, _ = tiny
    images = [_rec(a.transpose(1, 2, 0).copy()) for a in fmnist_images[:6]]
    data, _ = lossless.encode(images, model, fp, steps=4)
    out = lossless.decode(data, model, fp)
    assert all(np.array_equal(a.pixels, b.pixels) for a, b in zip(images, out))
    other = DiffusionModel.from_config(get_config("tiny")).eval()   # different random weights
    with pytest.raises(container.ModelMismatch):
        lossless.decode(data, other, fingerprint(other))


def test_net_bits_track_closed_form_vlb(fmnist_images):
    """Against an honest target: the exact -VLB of the closed-form denoiser
    on the same images and chain.  The coder's path and the KL-form estimate
    are two MC estimates of one expectation; with 16 images the tolerance is
    set by their spread, and the (deterministic) coder overhead is far below."""
    x = fmnist_images[:16]
    model = closed_form_model(torch.from_numpy(x.copy()))
    fp = fingerprint(model)
    steps = 20
    images = [_rec(a.transpose(1, 2, 0).copy()) for a in x]
    data, rep = lossless.encode(images, model, fp, steps=steps, seed_mode="random")
    terms = chain_terms(model, torch.from_numpy(x.copy()), model.schedule.chain(steps),
                        torch.Generator().manual_seed(0))
    vlb_bits = float(terms.total.sum())
    # the coder's net bits equal its own ideal information content up to coder overhead
    assert abs(rep.net_bits - rep.ideal_net_bits) < 2e-3 * rep.ideal_net_bits
    # and the ideal content estimates the same -VLB
    assert abs(rep.ideal_net_bits - vlb_bits) < 5e-3 * vlb_bits
    # the file carries the net bits, the consumed seed and a small header
    assert rep.file_bytes * 8 >= rep.net_bits
    out = lossless.decode(data, model, fp)
    assert all(np.array_equal(a.pixels, b.pixels) for a, b in zip(images, out))


def test_groups_fund_later_images(tiny, fmnist_images):
    """Only the first group reads seed bits: more images do not need more seed."""
    model, fp, _ = tiny
    images = [_rec(a.transpose(1, 2, 0).copy()) for a in fmnist_images[:12]]
    _, rep1 = lossless.encode(images[:1], model, fp, steps=3, seed_mode="random")
    _, rep12 = lossless.encode(images, model, fp, steps=3, seed_mode="random")
    assert len(rep12.groups) >= 2
    assert rep12.seed_words_added == rep1.seed_words_added


def test_decode_in_fresh_process(tiny, fmnist_images, tmp_path):
    model, fp, path = tiny
    images = [_rec(a.transpose(1, 2, 0).copy()) for a in fmnist_images[:3]]
    data, _ = lossless.encode(images, model, fp, steps=4)
    (tmp_path / "s.ddpmc").write_bytes(data)
    np.save(tmp_path / "orig.npy", np.stack([im.pixels for im in images]))
    code = textwrap.dedent(f"""
        import numpy as np
        from ddpm_codec.api import Codec
        c = Codec({str(path)!r})
        out = c.decompress(open({str(tmp_path / 's.ddpmc')!r}, 'rb').read())
        ref = np.load({str(tmp_path / 'orig.npy')!r})
        assert all(np.array_equal(o.pixels, r) for o, r in zip(out, ref))
        print('OK')
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "OK"


def test_damaged_payload_with_valid_crc_is_caught(tiny, fmnist_images):
    model, fp, _ = tiny
    images = [_rec(a.transpose(1, 2, 0).copy()) for a in fmnist_images[:2]]
    data, _ = lossless.encode(images, model, fp, steps=3)
    c = container.parse(data)
    payload = bytearray(c.payload)
    payload[len(payload) // 2] ^= 0x10
    bad = container.pack(container.Container(c.mode, c.fingerprint, c.header, bytes(payload), c.encrypted))
    with pytest.raises(container.StreamError):
        lossless.decode(bad, model, fp)


def test_classical_seed_is_real_data(fmnist_images):
    """With the default seed, the first units are classical codes whose bits the
    first pops consume: no PRNG seed is stored, the file holds the classical
    bytes plus the chain's net bits, and everything decodes exactly."""
    x = fmnist_images[:12]
    model = closed_form_model(torch.from_numpy(x.copy()))
    fp = fingerprint(model)
    images = [_rec(a.transpose(1, 2, 0).copy()) for a in x]
    data, rep = lossless.encode(images, model, fp, steps=10)
    assert rep.seed_units >= 1 and rep.seed_bits_consumed == 0
    c = container.parse(data)
    assert "seed_mode" not in c.header          # the default, left out of the header
    assert len(c.header["seed_codecs"]) == rep.seed_units
    # payload = the seed's classical bytes + the chain's net bits (whole words)
    assert abs(8 * len(c.payload) - (rep.seed_bits + rep.net_bits)) <= 64
    out = lossless.decode(data, model, fp)
    assert all(np.array_equal(a.pixels, b.pixels) for a, b in zip(images, out))


@pytest.mark.parametrize("share", [0.0, 1e9])
def test_first_group_top_up_or_seed_unit(fmnist_images, monkeypatch, share):
    """A first group the stack cannot fund takes PRNG top-up words when they cost less
    than SEED_EXCESS_SHARE of one more classical unit: never at 0, always at 1e9 (then
    no classical seed at all); either way the file holds the seed and top-up bits plus
    the chain's net bits and decodes exactly."""
    monkeypatch.setattr(lossless, "SEED_EXCESS_SHARE", share)
    x = fmnist_images[:6]
    model = closed_form_model(torch.from_numpy(x.copy()))
    fp = fingerprint(model)
    images = [_rec(a.transpose(1, 2, 0).copy()) for a in x]
    data, rep = lossless.encode(images, model, fp, steps=10)
    c = container.parse(data)
    topped = [t for t in c.header.get("topups", []) if t[0] == 0]
    if share == 0.0:
        assert rep.seed_units >= 1 and not topped
    else:
        assert rep.seed_units == 0 and topped and rep.topup_bits >= 32 * topped[0][1]
    assert abs(8 * len(c.payload) - (rep.seed_bits + rep.topup_bits + rep.net_bits)) <= 64
    out = lossless.decode(data, model, fp)
    assert all(np.array_equal(a.pixels, b.pixels) for a, b in zip(images, out))


def test_single_image_takes_the_smaller_code(tiny, fmnist_images):
    model, fp, _ = tiny
    img = [_rec(fmnist_images[0].transpose(1, 2, 0).copy())]
    data, rep = lossless.encode(img, model, fp, steps=3)
    rnd, _ = lossless.encode(img, model, fp, steps=3, seed_mode="random")
    assert len(data) <= len(rnd)
    if rep.chain_dims == 0:                 # the classical seed won; the PRNG stream was weighed
        assert rep.rejected_bytes == len(rnd)
    assert np.array_equal(lossless.decode(data, model, fp)[0].pixels, img[0].pixels)


def test_classical_only_stream_has_no_chain_fields(tiny, fmnist_images):
    """When no chain group pays off (one image), the stream is the seed alone: its header
    drops every chain field, it costs the classical code plus a small fixed framing, and
    it decodes exactly; a chain field smuggled in is ignored, a PRNG mode is refused."""
    model, fp, _ = tiny
    img = [_rec(fmnist_images[1].transpose(1, 2, 0).copy(), name="a.png")]
    data, rep = lossless.encode(img, model, fp, steps=3)
    c = container.parse(data)
    if c.header.get("groups"):
        pytest.skip("the chain won for this image")
    assert not {"steps", "times_sha", "grid_fraction", "coarse", "torch", "threads", "groups"} & set(c.header)
    assert rep.seed_units == 1 and rep.chain_dims == 0
    assert len(data) - rep.seed_bits // 8 <= 72                 # framing + lean header (v2: ~80, v1: 150)
    assert np.array_equal(lossless.decode(data, model, fp)[0].pixels, img[0].pixels)
    bad = C_repack(c, {**c.header, "seed_mode": "random"})
    with pytest.raises(container.StreamError, match="without chain groups"):
        lossless.decode(bad, model, fp)


def C_repack(c, header):
    return container.pack(container.Container(c.mode, c.fingerprint, header, c.payload, c.encrypted))
