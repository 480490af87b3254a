"""Per unit, the cheaper code: a unit whose best classical code is smaller than
its estimated chain code is stored classically (format version 4)."""
import json

import numpy as np
import pytest
import torch
from helpers import random_model

from ddpm_codec.bound.vlb import chain_terms
from ddpm_codec.codec import classical_seed, estimate, lossless
from ddpm_codec.codec.units import ImageRecord, to_units
from ddpm_codec.format import container
from ddpm_codec.io.checkpoint import fingerprint
from ddpm_codec.testing.closed_form import closed_form_model


def _rec(a, name):
    return ImageRecord(pixels=np.ascontiguousarray(a.transpose(1, 2, 0)), name=name, mode="L")


@pytest.fixture(scope="module")
def closed_form(fmnist_images):
    """The exact denoiser of 8 garments: they cost ~3 bits each by the chain; noise costs a fortune."""
    x = fmnist_images[:8]
    model = closed_form_model(torch.from_numpy(x.copy()))
    return model, fingerprint(model), x


def test_estimate_tracks_the_exact_vlb(closed_form):
    model, _, x = closed_form
    times = model.schedule.chain(20)
    units = to_units([_rec(a, "a") for a in x], model.channels, model.unet.multiple)
    est = estimate.chain_bits(units, model, times, seed=1)
    exact = chain_terms(model, torch.from_numpy(x.copy()), times, torch.Generator().manual_seed(0)).total.numpy()
    assert abs(est.sum() - exact.sum()) < 0.15 * exact.sum()


def test_a_unit_the_model_does_not_know_is_stored_classically(closed_form):
    model, fp, x = closed_form
    noise = np.random.default_rng(0).integers(0, 256, (1, 28, 28), dtype=np.uint8)
    images = [_rec(a, f"g{k}.png") for k, a in enumerate(x)] + [_rec(noise, "noise.png")]
    data, rep = lossless.encode(images, model, fp, steps=20)
    header = container.parse(data).header
    assert header["classical"] == [8]
    assert data[5] == container.VERSION
    out = lossless.decode(data, model, fp)
    assert all(np.array_equal(a.pixels, b.pixels) for a, b in zip(images, out))
    forced, _ = lossless.encode(images, model, fp, steps=20, classical_choice=False)
    assert "classical" not in container.parse(forced).header
    assert len(data) < len(forced)


def test_a_stream_the_model_cannot_help_is_the_classical_codes_and_a_header():
    """Never worse than the best classical code per image by more than its framing."""
    model = random_model("tiny", 0)
    fp = fingerprint(model)
    rng = np.random.default_rng(1)
    images = [_rec(rng.integers(0, 256, (1, 12, 12), dtype=np.uint8), f"n{k}.png") for k in range(5)]
    data, rep = lossless.encode(images, model, fp, steps=3)
    c = container.parse(data)
    # all classical: the seed alone, which needs no list of choices in the header
    assert "classical" not in c.header and not c.header.get("groups") and len(c.header["seed_codecs"]) == 5
    best = [classical_seed.classical_best(im.pixels.transpose(2, 0, 1))[1] for im in images]
    assert len(c.payload) <= sum(len(b) + 2 for b in best) + 3            # varint lengths and word padding
    out = lossless.decode(data, model, fp)
    assert all(np.array_equal(a.pixels, b.pixels) for a, b in zip(images, out))


@pytest.mark.parametrize("bad", [[1, 0], [0, 0], [99], ["a"], [-1]])
def test_a_bad_classical_unit_list_is_a_stream_error(closed_form, bad):
    model, fp, x = closed_form
    noise = np.random.default_rng(0).integers(0, 256, (1, 28, 28), dtype=np.uint8)
    images = [_rec(a, f"g{k}.png") for k, a in enumerate(x[:3])] + [_rec(noise, "noise.png")]
    data, _ = lossless.encode(images, model, fp, steps=5)
    c = container.parse(data)
    h = json.loads(json.dumps(c.header))
    h["classical"] = bad
    damaged = container.pack(container.Container("lossless", c.fingerprint, h, c.payload, c.encrypted))
    with pytest.raises(container.StreamError):
        lossless.decode(damaged, model, fp)


def test_layout_is_chosen_from_predictions_and_encoded_once():
    """Noise under a random model: every layout is classical, and one classical
    code of the whole plane beats four tiles' codes; only that layout is encoded."""
    from ddpm_codec.codec.lossless import choose_layout, tile_options
    model = random_model("tiny", 0)
    fp = fingerprint(model)
    img = np.random.default_rng(4).integers(0, 256, (60, 60, 1), dtype=np.uint8)
    rec = [ImageRecord(pixels=img, name="noise.png", mode="L")]
    layouts = tile_options(rec, model, "auto")
    assert len(layouts) > 1
    chosen, costs = choose_layout(rec, model, 3, 0, layouts)
    assert chosen == [0]
    assert costs[0].predicted_bits() < min(costs[t].predicted_bits() for t in layouts if t)
    totals = []
    data, rep = lossless.encode(rec, model, fp, steps=3, announce_total=totals.append)
    assert totals == [2 * img.size]           # one layout: its classical code and its PRNG-seeded chain
    assert container.parse(data).header.get("tile", 0) == 0
    assert np.array_equal(lossless.decode(data, model, fp)[0].pixels, img)
    whole_classical = classical_seed.classical_best(img.transpose(2, 0, 1))[1]
    assert len(container.parse(data).payload) <= len(whole_classical) + 2 + 3


def test_a_colour_picture_is_stored_whole_not_plane_by_plane():
    """A one-channel model codes RGB as three planes; a grey picture in RGB
    (R = G = B) costs one plane's worth as one classical picture."""
    model = random_model("tiny", 0)
    fp = fingerprint(model)
    rng = np.random.default_rng(5)
    grey = rng.integers(0, 256, (20, 24), dtype=np.uint8)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    other = rng.integers(0, 256, (8, 8, 1), dtype=np.uint8)
    images = [ImageRecord(pixels=rgb, name="rgb.png", mode="RGB"), ImageRecord(pixels=other, name="o.png", mode="L")]
    data, rep = lossless.encode(images, model, fp, steps=3)
    c = container.parse(data)
    assert c.header["whole"] == [0]
    out = lossless.decode(data, model, fp)
    assert all(np.array_equal(a.pixels, b.pixels) for a, b in zip(images, out)) and out[0].mode == "RGB"
    planes = sum(len(classical_seed.classical_best(rgb[:, :, j][None])[1]) for j in range(3))
    assert len(c.payload) < 0.6 * planes
    h = json.loads(json.dumps(c.header))
    h["whole"] = [1, 0]
    with pytest.raises(container.StreamError):
        lossless.decode(container.pack(container.Container("lossless", c.fingerprint, h, c.payload, c.encrypted)),
                        model, fp)


def test_marginal_units_are_measured_again_before_the_choice(monkeypatch):
    """Only units between the refine shares get the second, longer estimate, pooled by samples."""
    calls = []

    def fake_chain_bits(units, model, times, seed, samples=estimate.ESTIMATE_SAMPLES):
        calls.append((list(units), samples))
        return np.full(len(units), 2000.0)

    costs = object.__new__(estimate.UnitCosts)
    costs.classical_bits = np.array([100.0, 850.0, 990.0, 2000.0])
    costs.chain_bits = np.array([1000.0, 1000.0, 1000.0, 1000.0])    # shares 0.1, 0.85, 0.99, 2.0
    monkeypatch.setattr(estimate, "chain_bits", fake_chain_bits)
    costs._refine(["u0", "u1", "u2", "u3"], None, None, 0)
    assert calls == [(["u1"], estimate.REFINE_SAMPLES)]
    w = estimate.ESTIMATE_SAMPLES / (estimate.ESTIMATE_SAMPLES + estimate.REFINE_SAMPLES)
    assert costs.chain_bits[1] == pytest.approx(w * 1000 + (1 - w) * 2000)
    assert list(costs.chain_bits[[0, 2, 3]]) == [1000.0] * 3
    costs.codes = [("png", b"x")] * 4
    assert sorted(costs.cheaper_classically()) == [0, 1]    # unit 1 now well below its pooled chain cost
