"""One image alone coded as pixel groups with a conditional net (ddpm_codec.codec.pixel_group_codec)."""
import json

import numpy as np
import pytest
import torch
from helpers import random_model
from scipy.special import ndtr

from ddpm_codec.codec import lossless, pixel_group_codec
from ddpm_codec.codec.units import ImageRecord
from ddpm_codec.diffusion import pixel_groups
from ddpm_codec.format import container
from ddpm_codec.io.checkpoint import CheckpointError, fingerprint, load_companion, load_model, save_model
from ddpm_codec.training.groups import conditional_from, draw_targets, group_loss


def _garment(seed=0, side=28):
    """A smooth blob on black, like a Fashion-MNIST garment (no dataset needed)."""
    r = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side]
    img = 200 * np.exp(-((yy - side / 2) ** 2 + (xx - side / 2) ** 2) / (2 * (side / 4) ** 2))
    img = img + r.normal(0, 8, img.shape) * (img > 30)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def cond_model():
    base = random_model("tiny-vdm", 0, scale=0.02)
    m = conditional_from(base)
    torch.manual_seed(1)
    with torch.no_grad():              # a conditioning conv that does something
        m.unet.cond_in.weight.add_(torch.randn_like(m.unet.cond_in.weight) * 0.05)
    return base, m.eval()


def test_group_sizes_cover_the_image_and_shrink():
    for n in (784, 400, 1024, 30):
        sizes = pixel_groups.group_sizes(n)
        assert sum(sizes) == n and all(s > 0 for s in sizes)
        assert sizes == sorted(sizes, reverse=True)
    g = pixel_groups.group_index(28, 28)
    counts = np.bincount(g.reshape(-1))
    assert list(counts) == pixel_groups.group_sizes(784)
    assert np.array_equal(g, pixel_groups.group_index(28, 28))           # fixed: encoder and decoder agree


def test_network_input_hides_what_the_decoder_does_not_know():
    g = torch.from_numpy(pixel_groups.group_index(28, 28)).view(1, 1, 28, 28)
    known, target = pixel_groups.masks(g, torch.tensor([3]))
    assert int(known.sum()) == sum(pixel_groups.group_sizes(784)[:3]) and int(target.sum()) == pixel_groups.group_sizes(784)[3]
    z, x = torch.randn(1, 1, 28, 28), torch.rand(1, 1, 28, 28)
    canvas, cond = pixel_groups.network_input(z, x, known, target, torch.tensor(0.5))
    unknown = ~(known | target)
    # changing unknown pixels or latents off the group changes nothing the net sees
    z2, x2 = torch.where(unknown | known, torch.randn_like(z), z), torch.where(unknown | target, torch.rand_like(x), x)
    c2, d2 = pixel_groups.network_input(z2, x2, known, target, torch.tensor(0.5))
    assert torch.equal(canvas, c2) and torch.equal(cond, d2)


def test_conditional_net_starts_as_its_base_and_base_fingerprints_are_unchanged(cond_model):
    base, _ = cond_model
    m = conditional_from(base)
    assert "cond_channels" not in base.config()["unet"]       # old configs hash as before
    assert m.config()["unet"]["cond_channels"] == pixel_groups.COND_CHANNELS
    z, t = torch.randn(2, 1, 28, 28), torch.tensor([0.3, 0.7])
    with torch.no_grad():
        assert torch.allclose(m.eps(z, t, torch.randn(2, 3, 28, 28)), base.eps(z, t), atol=1e-6)
    with pytest.raises(ValueError, match="conditioning planes"):
        m.eps(z, t)
    with pytest.raises(ValueError, match="no conditioning"):
        base.eps(z, t, torch.zeros(2, 3, 28, 28))


def test_group_loss_trains_the_conditioning_conv(cond_model):
    base, _ = cond_model
    m = conditional_from(base).train()
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    groups = torch.from_numpy(pixel_groups.group_index(28, 28)).view(1, 1, 28, 28)
    gen = torch.Generator().manual_seed(0)
    target = draw_targets(pixel_groups.group_sizes(784), 4, gen)
    loss = group_loss(m, x, groups, target, torch.rand(4), torch.randn(4, 1, 28, 28))
    assert loss.shape == (4,) and bool(torch.all(torch.isfinite(loss)))
    loss.mean().backward()
    assert float(m.unet.cond_in.weight.grad.abs().sum()) > 0


def _record(px, name="blob.png"):
    return ImageRecord(pixels=px[:, :, None].copy(), name=name, mode="L")


def test_pixel_groups_round_trip_exactly(cond_model):
    _, m = cond_model
    fp = fingerprint(m)
    px = _garment(0)
    data, rep = lossless._encode_pixel_groups([_record(px)], m, fp, 4, 0.25, True, 0)
    h = container.parse(data).header
    assert int(h["pixel_groups"][0], 16) > len(pixel_group_codec.COARSE_GRIDS)   # the first group is always coded directly
    assert rep.pixel_groups == len(pixel_groups.group_sizes(784))
    out = lossless.decode(data, None, "00" * 32, groups_model=(m, fp))
    assert np.array_equal(out[0].pixels[:, :, 0], px) and out[0].name == "blob.png"
    # the stream holds what the coder says it costs, plus the header and word padding
    assert 8 * len(container.parse(data).payload) - rep.ideal_net_bits < 64 + 0.01 * rep.ideal_net_bits


def test_direct_code_costs_what_the_discretized_gaussian_says(cond_model):
    """The first group's direct code against -log2 of bin masses computed here."""
    _, m = cond_model
    px = _garment(1)
    groups = pixel_groups.group_index(28, 28)
    k = int(groups.max())
    times = m.schedule.chain(4)
    chain = pixel_group_codec.GroupChain(m, times, 0.25, groups, k, px)
    x = px.reshape(1, -1)[:, np.flatnonzero(groups.reshape(-1) == k)]
    from bitsback.ans.message import Message
    codes = [pixel_group_codec.DirectCodec(chain, i).push(Message.empty(), x) for i in range(len(pixel_group_codec.DIRECT_FACTORS))]
    j = int(np.argmin([c.num_bits() for c in codes]))
    bits = codes[j].num_bits()
    assert pixel_group_codec.DirectCodec(chain, j).pop(codes[j])[1].tolist() == x.tolist()
    mean_m, spread = chain.direct_prediction()
    mean = (mean_m.reshape(-1) + 1) * 127.5
    v = x.reshape(-1).astype(float)
    # the prediction, recomputed here: weighted mean of the known 3 x 3 neighbours
    known = groups < k
    pv = px.astype(float)
    for i, f in enumerate(np.flatnonzero(groups.reshape(-1) == k)[:20]):
        r, c = divmod(int(f), 28)
        ws = [(np.exp(-(dy * dy + dx * dx) / 0.5), pv[r + dy, c + dx]) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
              if 0 <= r + dy < 28 and 0 <= c + dx < 28 and known[r + dy, c + dx]]
        if ws:
            assert mean[i] == pytest.approx(sum(w * q for w, q in ws) / sum(w for w, _ in ws))

    def code_bits(scales):
        s = scales.reshape(-1) * 127.5
        hi = np.where(v == 255, 1.0, ndtr((v + 0.5 - mean) / s))
        lo = np.where(v == 0, 0.0, ndtr((v - 0.5 - mean) / s))
        return -np.log2(np.maximum(hi - lo, 2.0 ** -24)).sum()

    ideal = code_bits(chain.direct_scales(j, spread))
    best = min(code_bits(chain.direct_scales(i, spread)) for i in range(len(pixel_group_codec.DIRECT_FACTORS)))
    assert ideal <= best + 2.0          # the scale picked is the best one (by real, not ideal, bits)
    assert abs(bits - ideal) < 0.02 * ideal + 64


def test_group_codes_round_trip_and_refuse_garbage():
    res = pixel_group_codec.GroupResult()
    res.coarse, res.direct = [[2, 1.0]], [[0, 5], [1, 10]]
    codes = pixel_group_codec.group_codes(res, 10, pixel_group_codec.COARSE_GRIDS)
    assert pixel_group_codec.read_group_codes(codes, 10, pixel_group_codec.COARSE_GRIDS) == ({2: 1.0}, {0: 5, 1: 10})
    assert len(codes) == 10
    for bad in (codes[:-1], "0" + codes[1:], codes[:-1] + "g", codes[:-1] + "F", codes + "00", 7, [5] * 10):
        with pytest.raises(ValueError):
            pixel_group_codec.read_group_codes(bad, 10, pixel_group_codec.COARSE_GRIDS)


@pytest.fixture(scope="module")
def model_dir(cond_model, tmp_path_factory):
    base, m = cond_model
    d = tmp_path_factory.mktemp("withgroups")
    fp = save_model(base, d / "model", {"recommended_steps": 4})
    save_model(m, d / "model_groups", {"base_fingerprint": fp})
    return d


def test_codec_keeps_the_smallest_stream_and_decodes_it(model_dir):
    from ddpm_codec.api import Codec
    codec = Codec(str(model_dir))
    assert codec.groups is not None
    px = _garment(2)
    data, rep = codec.compress([px], steps=4)
    alt = lossless._encode_pixel_groups([_record(px, "image0.png")], *codec.groups, 4, 0.25, True, 0)[0]
    assert len(data) <= len(alt) and rep.rejected_bytes > 0
    assert np.array_equal(codec.decompress_arrays(data)[0], px)
    assert np.array_equal(codec.decompress_arrays(alt)[0], px)
    # two images never use pixel groups
    data2, rep2 = codec.compress([px, _garment(3)], steps=4)
    assert rep2.pixel_groups == 0


def test_group_stream_refuses_a_model_without_its_companion(model_dir, cond_model, tmp_path):
    from ddpm_codec.api import Codec
    codec = Codec(str(model_dir))
    alt = lossless._encode_pixel_groups([_record(_garment(4))], *codec.groups, 4, 0.25, True, 0)[0]
    base, _ = cond_model
    save_model(base, tmp_path / "model", {"recommended_steps": 4})
    with pytest.raises(container.ModelMismatch, match="pixel groups"):
        Codec(str(tmp_path)).decompress(alt)
    # a companion fine-tuned from another model is refused when loading
    other = random_model("tiny-vdm", 5, scale=0.02)
    save_model(conditional_from(other), tmp_path / "model_groups", {"base_fingerprint": fingerprint(other)})
    with pytest.raises(CheckpointError, match="another model"):
        load_companion(str(tmp_path), fingerprint(base))


def test_damaged_group_streams_fail_cleanly(model_dir):
    from ddpm_codec.api import Codec
    codec = Codec(str(model_dir))
    data = lossless._encode_pixel_groups([_record(_garment(5))], *codec.groups, 4, 0.25, True, 0)[0]
    c = container.parse(data)
    for change in ({"pixel_groups": "00" * 5}, {"pixel_groups": c.header["pixel_groups"][:4]},
                   {"pixel_groups": [5] * 10},
                   {"steps": 0}, {"steps": 90000}, {"seed_codecs": [1]}, {"pixels_sha256": "00" * 8}):
        h = {**c.header, **change}
        bad = container.pack(container.Container("lossless", codec.groups[1], h, c.payload, c.encrypted))
        with pytest.raises(container.StreamError):
            codec.decompress(bad)
    flipped = bytearray(c.payload)
    flipped[len(flipped) // 2] ^= 0x10
    bad = container.pack(container.Container("lossless", codec.groups[1], c.header, bytes(flipped), c.encrypted))
    with pytest.raises(container.StreamError):
        codec.decompress(bad)


def test_shipped_companion_if_present_matches_the_default_model():
    from ddpm_codec.io.checkpoint import companion_path
    comp = companion_path(None).with_suffix(".json")
    if not comp.exists():
        pytest.skip("no pixel-group net shipped")
    base, meta = load_model(None)
    model, fp = load_companion(None, meta["fingerprint"])
    assert json.loads(comp.read_text())["base_fingerprint"] == meta["fingerprint"]
    assert pixel_group_codec.supports(model, (1, 28, 28))


def test_cli_round_trips_one_image_by_pixel_groups_and_refuses_a_plain_model(model_dir, cond_model, tmp_path):
    """Through the CLI: the group stream (forced by a companion whose chain codes
    the blob far below its classical code) decodes exactly; without the
    companion, decompress exits 2 with one line."""
    from click.testing import CliRunner
    from PIL import Image

    from ddpm_codec_cli.main import cli

    def run(*args):
        return CliRunner().invoke(cli, [str(a) for a in args], prog_name="ddpm-codec")

    px = _garment(6)
    Image.fromarray(px).save(tmp_path / "blob.png")
    from ddpm_codec.api import Codec
    codec = Codec(str(model_dir))
    data = lossless._encode_pixel_groups([_record(px)], *codec.groups, 4, 0.25, True, 0)[0]
    (tmp_path / "g.ddpmc").write_bytes(data)
    res = run("decompress", tmp_path / "g.ddpmc", "-o", tmp_path / "out", "--model", model_dir)
    assert res.exit_code == 0, res.output
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "blob.png")), px)
    res = run("compress", tmp_path / "blob.png", "-o", tmp_path / "c.ddpmc", "--model", model_dir, "--steps", 4)
    assert res.exit_code == 0, res.output
    res = run("decompress", tmp_path / "c.ddpmc", "-o", tmp_path / "out2", "--model", model_dir)
    assert res.exit_code == 0 and np.array_equal(np.asarray(Image.open(tmp_path / "out2" / "blob.png")), px)
    plain = tmp_path / "plain"
    base, _ = cond_model
    save_model(base, plain / "model", {"recommended_steps": 4})
    res = run("decompress", tmp_path / "g.ddpmc", "-o", tmp_path / "out3", "--model", plain)
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "pixel groups" in res.stderr.splitlines()[-1] and not (tmp_path / "out3").exists()


def test_shipped_companion_codes_a_test_image_alone_below_its_classical_stream(fmnist_images):
    """The shipped model and its pixel-group net on real test images, each alone:
    the group stream decodes exactly, and over a few images it is smaller than the
    classical-seed-only stream the codec would write without it."""
    from ddpm_codec.io.checkpoint import companion_path
    if not companion_path(None).with_suffix(".json").exists():
        pytest.skip("no pixel-group net shipped")
    from ddpm_codec.api import Codec
    codec = Codec()
    group_bytes, classical_bytes = 0, 0
    for px in fmnist_images[:3, 0]:
        rec = [_record(px, "")]
        g, rep = lossless._encode_pixel_groups(rec, *codec.groups, 25, 0.25, True, 0)
        assert np.array_equal(codec.decompress_arrays(g)[0], px)
        cl, _ = lossless._Encoder(rec, codec.model, codec.fingerprint, 25, 0.25, True, 64, 0, None,
                                  "classical").run()
        group_bytes, classical_bytes = group_bytes + len(g), classical_bytes + len(cl)
    assert group_bytes < 0.95 * classical_bytes
