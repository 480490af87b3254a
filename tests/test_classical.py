"""Classical codecs: exact lossless round trips, bits/dim bookkeeping, mosaics, lossy trends."""
import math
import sys

import numpy as np
import pytest

from ddpm_codec.io import classical

JXL_OK, JXL_REASON = classical.jpegxl_status()
needs_jxl = pytest.mark.skipif(not JXL_OK, reason=JXL_REASON)


def _codec_param(codec):
    return pytest.param(codec, marks=needs_jxl) if codec == "jpegxl" else codec


def fashion_like(n=6, seed=0):
    """Garment-ish blobs: dark background, a bright textured shape, (N, 1, 28, 28)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:28, :28]
    out = np.zeros((n, 1, 28, 28), np.uint8)
    for i in range(n):
        cy, cx, ry, rx = 14 + rng.integers(-2, 3), 14 + rng.integers(-2, 3), \
            rng.integers(7, 12), rng.integers(5, 10)
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        texture = 120 + 60 * np.sin(xx / 2.0 + i) + rng.normal(0, 12, (28, 28))
        out[i, 0] = np.where(inside, np.clip(texture, 1, 255), 0).astype(np.uint8)
    return out


@pytest.mark.parametrize("codec", [_codec_param(c) for c in classical.LOSSLESS_CODECS])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_lossless_round_trip_is_exact(codec, channels):
    rng = np.random.default_rng(channels)
    img = rng.integers(0, 256, (9, 11, channels), dtype=np.uint8)
    img[..., -1][:3] = 0 if channels in (2, 4) else img[..., -1][:3]  # transparent rows
    data = classical.encode_lossless(codec, img)
    np.testing.assert_array_equal(classical.decode(codec, data, channels), img)
    assert classical.lossless_num_bytes(codec, img) == len(data)


@pytest.mark.parametrize("codec", [_codec_param(c) for c in classical.LOSSLESS_CODECS])
@pytest.mark.parametrize("layout", classical.LAYOUTS)
def test_lossless_bits_per_dim(codec, layout):
    imgs = fashion_like(5)
    r = classical.lossless_bits_per_dim(codec, imgs, layout)
    assert r.num_dims == 5 * 28 * 28 and r.num_images == 5 and r.layout == layout
    assert math.isfinite(r.bits_per_dim) and 0 < r.bits_per_dim < 8
    assert r.bits_per_dim == pytest.approx(8 * r.num_bytes / r.num_dims)


def test_mosaic_amortizes_headers():
    imgs = fashion_like(9)
    per = classical.lossless_bits_per_dim("png", imgs, "per_image")
    mos = classical.lossless_bits_per_dim("png", imgs, "mosaic")
    assert mos.num_dims == per.num_dims  # padding never counted
    assert mos.bits_per_dim < per.bits_per_dim


def test_mismatch_is_detected(monkeypatch):
    img = fashion_like(1)[0, 0]
    monkeypatch.setattr(classical, "decode", lambda codec, data, ch: np.zeros((28, 28, 1), np.uint8))
    with pytest.raises(classical.LosslessMismatchError):
        classical.lossless_num_bytes("png", img)


def test_jpegxl_unavailable_is_reported(monkeypatch):
    monkeypatch.setitem(sys.modules, "imagecodecs", None)  # import now fails
    ok, reason = classical.jpegxl_status()
    assert not ok and "imagecodecs is not installed" in reason
    with pytest.raises(classical.CodecUnavailableError, match="jpegxl"):
        classical.encode_lossless("jpegxl", np.zeros((2, 2), np.uint8))


@pytest.mark.parametrize("n, grid", [(1, (1, 1)), (2, (1, 2)), (5, (2, 3)), (9, (3, 3)),
                                     (10, (3, 4)), (200, (14, 15)), (10000, (100, 100))])
def test_mosaic_grid(n, grid):
    rows, cols = classical.mosaic_grid(n)
    assert (rows, cols) == grid
    assert rows * cols >= n and (rows - 1) * cols < n


def test_mosaic_layout_and_inverse():
    imgs = np.random.default_rng(1).integers(1, 256, (7, 3, 4, 5), dtype=np.uint8)
    grid = classical.mosaic(imgs)
    assert grid.shape == (3 * 4, 3 * 5, 3)  # 7 tiles -> 3 x 3 grid
    for k in range(7):
        r, c = divmod(k, 3)
        np.testing.assert_array_equal(grid[4 * r:4 * r + 4, 5 * c:5 * c + 5].transpose(2, 0, 1),
                                      imgs[k])
    assert not grid[8:, 5:].any()  # the two padding tiles are zero
    np.testing.assert_array_equal(classical.unmosaic(grid, 7, 4, 5), imgs)
    with pytest.raises(ValueError):
        classical.unmosaic(grid, 7, 5, 5)


@pytest.mark.parametrize("codec, settings", [
    ("jpeg", (10, 50, 95)), ("webp", (10, 50, 95)),
    pytest.param("jpegxl", (6.0, 2.0, 0.3), marks=needs_jxl)])
def test_lossy_rmse_falls_as_quality_rises(codec, settings):
    imgs = fashion_like(4)
    results = [classical.lossy_bits_per_dim(codec, imgs, q, "per_image") for q in settings]
    errors = [r.rmse for r in results]
    rates = [r.bits_per_dim for r in results]
    assert errors == sorted(errors, reverse=True) and errors[0] > errors[-1]
    assert rates == sorted(rates)
    assert all(r.psnr == pytest.approx(20 * math.log10(255 / r.rmse)) for r in results)
    mos = classical.lossy_bits_per_dim(codec, imgs, settings[1], "mosaic")
    assert mos.num_dims == imgs.size and 0 < mos.rmse < 60


def test_lossy_rgb_shapes():
    img = np.random.default_rng(3).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    for codec in ("jpeg", "webp"):
        nbytes, rec = classical.lossy_roundtrip(codec, img, 80)
        assert nbytes > 0 and rec.shape == img.shape and rec.dtype == np.uint8
    with pytest.raises(ValueError, match="alpha"):
        classical.lossy_roundtrip("jpeg", np.zeros((4, 4, 4), np.uint8), 80)


def test_rmse_and_psnr():
    a = np.zeros((2, 2), np.uint8)
    b = np.array([[0, 2], [2, 2]], np.uint8)
    assert classical.rmse(a, b) == pytest.approx(math.sqrt(3))
    assert classical.rmse(b, a) == classical.rmse(a, b)  # no uint8 wrap-around
    assert classical.psnr(a, a) == math.inf
    assert classical.psnr(a, np.full((2, 2), 255, np.uint8)) == pytest.approx(0.0)
    with pytest.raises(ValueError):
        classical.rmse(a, b[:1])


@pytest.mark.parametrize("shape", [(1, 1), (8, 8), (16, 24), (30, 41), (300, 17), (64, 128), (48, 64, 3),
                                   (1000, 1333), (7, 70000)])
def test_jpegxl_size_header_is_read_before_decoding(shape):
    if not classical.jpegxl_status()[0]:
        pytest.skip(classical.jpegxl_status()[1])
    img = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    data = classical.encode_lossless("jpegxl", img, jxl_effort=1)
    assert classical.jpegxl_size(data) == (shape[1], shape[0])
    assert classical.jpegxl_size(b"\x89PNG....") is None
