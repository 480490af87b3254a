"""Tiles: images larger than the model's training size cut into units, so
that one large image funds its own bits-back chain."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ddpm_codec.codec import lossless
from ddpm_codec.codec.units import ImageRecord, count_units, place_unit, tile_spans, to_units
from ddpm_codec.diffusion.configs import get_config
from ddpm_codec.diffusion.model import DiffusionModel
from ddpm_codec.format import container
from ddpm_codec.io.checkpoint import load_model, save_model


@settings(max_examples=400, deadline=None)
@given(st.integers(1, 300), st.integers(1, 40), st.sampled_from([1, 2, 4, 8]))
def test_tile_spans_partition_the_axis_evenly(n, tile, multiple):
    spans = tile_spans(n, tile, multiple)
    assert spans[0][0] == 0 and sum(s for _, s in spans) == n
    assert all(a + s == b for (a, s), (b, _) in zip(spans, spans[1:]))       # contiguous
    assert len(spans) == min(-(-n // tile), -(-n // multiple))
    full = [s for _, s in spans[:-1]]
    assert all(s % multiple == 0 and s > 0 for s in full)                    # no padding inside
    assert spans[-1][1] > 0
    if full:
        assert max(full) - min(full) <= multiple                              # even, no sliver
        assert spans[-1][1] > max(full) - 2 * multiple
        assert max(full) <= multiple * -(-tile // multiple)


@pytest.mark.parametrize("shape, channels", [((60, 45, 3), 1), ((60, 45, 3), 3), ((29, 30, 1), 1),
                                             ((7, 100, 4), 1), ((28, 28, 1), 1)])
@pytest.mark.parametrize("tile, multiple", [(28, 4), (8, 1), (5, 2)])
def test_units_place_back_exactly(shape, channels, tile, multiple):
    rng = np.random.default_rng(sum(shape) + tile)
    im = ImageRecord(pixels=rng.integers(0, 256, shape, dtype=np.uint8), name="a.png", mode="RGB")
    units = to_units([im], channels, multiple, tile)
    assert len(units) == count_units([im], channels, tile)
    assert all(u.pixels.shape[1] % multiple == 0 and u.pixels.shape[2] % multiple == 0 for u in units)
    back = ImageRecord(pixels=np.zeros(shape, np.uint8), name="a.png", mode="RGB")
    for u in units:
        place_unit(back, u)
    assert np.array_equal(back.pixels, im.pixels)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    model = DiffusionModel.from_config(get_config("tiny")).eval()
    path = tmp_path_factory.mktemp("m") / "tiny"
    return model, save_model(model, path)


def test_tiled_and_whole_streams_round_trip(tiny):
    model, fp = tiny
    side = model.unet.cfg.image_size
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (side + 9, 2 * side + 3, 3), dtype=np.uint8)
    small = rng.integers(0, 256, (5, 7, 1), dtype=np.uint8)
    images = [ImageRecord(pixels=img, name="big.png", mode="RGB"), ImageRecord(pixels=small, name="small.png", mode="L")]
    tiled, rep = lossless.encode(images, model, fp, steps=3, tiles="always", classical_choice=False)
    assert rep.tile == side and rep.units == 3 * 2 * 3 + 1
    assert container.parse(tiled).header["tile"] == side
    whole, rep_w = lossless.encode(images, model, fp, steps=3, tiles="never", classical_choice=False)
    assert rep_w.tile == 0 and rep_w.units == 4 and "tile" not in container.parse(whole).header
    for data in (tiled, whole):
        out = lossless.decode(data, model, fp)
        assert [o.name for o in out] == ["big.png", "small.png"]
        assert np.array_equal(out[0].pixels, img) and np.array_equal(out[1].pixels, small)
    # 4 planes < 8: auto tries 28-pixel tiles, 56-pixel tiles (59 > 56) and whole planes
    assert lossless.tile_options(images, model) == [side, 2 * side, 0]
    auto, rep_a = lossless.encode(images, model, fp, steps=3, classical_choice=False)
    assert len(auto) <= min(len(tiled), len(whole)) and rep_a.rejected_bytes >= len(auto)
    assert rep_a.tile in (side, 2 * side, 0) and (auto == tiled) == (rep_a.tile == side)
    assert [np.array_equal(o.pixels, i.pixels) for o, i in zip(lossless.decode(auto, model, fp), images)] == [1, 1]


def test_images_within_one_tile_are_not_tiled(tiny):
    model, fp = tiny
    img = np.random.default_rng(2).integers(0, 256, (28, 20, 1), dtype=np.uint8)
    assert lossless.tile_options([ImageRecord(pixels=img, name="a", mode="L")], model, "always") == [0]
    a, _ = lossless.encode([ImageRecord(pixels=img, name="a", mode="L")] * 2, model, fp, steps=2, tiles="always",
                           classical_choice=False)
    b, _ = lossless.encode([ImageRecord(pixels=img, name="a", mode="L")] * 2, model, fp, steps=2, tiles="never",
                           classical_choice=False)
    assert a == b


def test_many_units_keep_whole_planes(tiny):
    model, _ = tiny
    imgs = [ImageRecord(pixels=np.zeros((40, 40, 1), np.uint8), name=f"{k}", mode="L") for k in range(lossless.TILE_BELOW_UNITS)]
    assert lossless.tile_options(imgs, model) == [0]
    assert lossless.tile_options(imgs[:-1], model) == [28, 0]
    assert lossless.tile_options([ImageRecord(pixels=np.zeros((57, 9, 1), np.uint8), name="a", mode="L")], model) == [28, 56, 0]
    many = [ImageRecord(pixels=np.zeros((28 * 9, 28 * 8, 1), np.uint8), name="a", mode="L")]     # 72 tiles > 64
    assert lossless.tile_options(many, model) == [28]
    with pytest.raises(ValueError):
        lossless.tile_options(imgs, model, "sometimes")


def test_whole_plane_limit_and_tiled_limit(tiny):
    model, fp = tiny
    big = ImageRecord(pixels=np.zeros((300, 300, 1), np.uint8), name="big.png", mode="L")     # > 2^16 pixels
    with pytest.raises(container.CodecError, match="as one plane"):
        lossless.encode([big], model, fp, steps=2, tiles="never", classical_choice=False)
    assert lossless.tile_options([big], model) == [28]                        # auto must tile it


def test_hostile_tile_field_is_refused(tiny):
    """A header asking for 1-pixel tiles of a large image must not make the decoder
    build millions of units: a clean StreamError before any allocation."""
    model, fp = tiny
    img = ImageRecord(pixels=np.zeros((60, 60, 1), np.uint8), name="a.png", mode="L")
    data, _ = lossless.encode([img], model, fp, steps=2, tiles="always", classical_choice=False)
    c = container.parse(data)
    for tile, geom in ((1, [4000, 4000]), (0, [400, 400])):
        h = dict(c.header)
        h["images"] = [["a.png", "L", *geom, 1]]
        h["tile"] = tile
        bad = container.pack(container.Container("lossless", c.fingerprint, h, c.payload, c.encrypted))
        with pytest.raises(container.StreamError):
            lossless.decode(bad, model, fp)


def test_one_large_image_funds_its_own_chain(fmnist_images):
    """The shipped model on one 84x84 image (a 3x3 mosaic of test images): as
    tiles it is chain-coded after one classical seed tile and beats the
    whole-plane stream (which can only be classical), and auto keeps it."""
    model, meta = load_model(None)
    tiles = fmnist_images[:9, 0]
    img = np.ascontiguousarray(tiles.reshape(3, 3, 28, 28).transpose(0, 2, 1, 3).reshape(84, 84))[:, :, None]
    rec = [ImageRecord(pixels=img, name="mosaic.png", mode="L")]
    tiled, rep = lossless.encode(rec, model, meta["fingerprint"], steps=25, tiles="always", classical_choice=False)
    whole, rep_w = lossless.encode(rec, model, meta["fingerprint"], steps=25, tiles="never", classical_choice=False)
    assert rep.units == 9 and rep.seed_units == 1 and rep_w.units == 1
    assert len(tiled) < 0.95 * len(whole)
    assert np.array_equal(lossless.decode(tiled, model, meta["fingerprint"])[0].pixels, img)
    auto, _ = lossless.encode(rec, model, meta["fingerprint"], steps=25, classical_choice=False)
    assert auto == tiled
    # from predicted sizes, encoding only the layout it picks: the same choice
    predicted, _ = lossless.encode(rec, model, meta["fingerprint"], steps=25)
    assert container.parse(predicted).header["tile"] == 28
    assert len(predicted) <= 1.02 * len(tiled)      # a marginal tile may go either way on the estimate
    assert np.array_equal(lossless.decode(predicted, model, meta["fingerprint"])[0].pixels, img)
