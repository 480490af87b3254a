"""Lossless image I/O: exact round trips, clear refusals, atomic writes."""
import errno
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image as PILImage

from ddpm_codec.io import images as imageio
from ddpm_codec.io.images import (
    MODE_CHANNELS,
    OutputExistsError,
    UnsupportedImageError,
    atomic_write_bytes,
    read_image,
    write_png,
)

SIZES = [(1, 1), (3, 7), (29, 31)]


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _raw_png(path, width, height, depth, colour_type, channels):
    """A PNG written by hand, for headers pillow will not write (16-bit RGB, zero size)."""
    bytes_per_row = width * channels * depth // 8
    rows = b"".join(b"\0" + bytes(range(bytes_per_row % 256))[:bytes_per_row].ljust(
        bytes_per_row, b"\x07") for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
                     + _png_chunk(b"IDAT", zlib.compress(rows)) + _png_chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("mode", sorted(MODE_CHANNELS))
@pytest.mark.parametrize("size", SIZES)
def test_round_trip_every_mode(tmp_path, mode, size):
    rng = np.random.default_rng([MODE_CHANNELS[mode], *size])
    pixels = rng.integers(0, 256, size=size + (MODE_CHANNELS[mode],), dtype=np.uint8)
    path = tmp_path / f"x_{mode}.png"
    n = write_png(path, pixels, mode)
    assert n == path.stat().st_size
    im = read_image(path)
    assert im.mode == mode and not im.converted
    assert im.format == "PNG" and im.name == path.name
    assert im.pixels.dtype == np.uint8 and im.pixels.shape == pixels.shape
    np.testing.assert_array_equal(im.pixels, pixels)
    assert (im.height, im.width, im.channels) == pixels.shape


def test_alpha_zero_pixels_keep_their_colour(tmp_path):
    pixels = np.array([[[10, 20, 30, 0], [40, 50, 60, 0]]], dtype=np.uint8)
    write_png(tmp_path / "a.png", pixels, "RGBA")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png").pixels, pixels)


def _palette_image(size=(7, 3)):
    im = PILImage.new("P", size)
    im.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 8, 7])
    im.putdata([i % 4 for i in range(size[0] * size[1])])
    return im


def test_palette_becomes_rgb_with_exact_colours(tmp_path):
    _palette_image().save(tmp_path / "p.png")
    im = read_image(tmp_path / "p.png")
    assert (im.mode, im.original_mode, im.converted) == ("RGB", "P", True)
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [9, 8, 7]], dtype=np.uint8)
    np.testing.assert_array_equal(im.pixels.reshape(-1, 3), colours[np.arange(21) % 4])
    write_png(tmp_path / "back.png", im.pixels, im.mode)
    np.testing.assert_array_equal(read_image(tmp_path / "back.png").pixels, im.pixels)


def test_palette_with_transparency_becomes_rgba(tmp_path):
    _palette_image().save(tmp_path / "p.png", transparency=1)
    im = read_image(tmp_path / "p.png")
    assert (im.mode, im.original_mode) == ("RGBA", "P")
    idx = np.arange(21) % 4
    np.testing.assert_array_equal(im.pixels[..., 3].ravel(), np.where(idx == 1, 0, 255))
    np.testing.assert_array_equal(im.pixels[..., 1].ravel()[idx == 1], 255)


def test_colour_key_becomes_alpha(tmp_path):
    grey = np.array([[0, 5, 9], [5, 5, 1]], dtype=np.uint8)
    PILImage.fromarray(grey).save(tmp_path / "k.png", transparency=5)
    im = read_image(tmp_path / "k.png")
    assert im.mode == "LA"
    np.testing.assert_array_equal(im.pixels[..., 0], grey)
    np.testing.assert_array_equal(im.pixels[..., 1], np.where(grey == 5, 0, 255))


def test_two_bit_grey_with_colour_key(tmp_path):
    ihdr = struct.pack(">IIBBBBB", 4, 1, 2, 0, 0, 0, 0)  # 4x1, 2-bit grey: 0, 1, 2, 3
    (tmp_path / "g.png").write_bytes(
        b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"tRNS", b"\0\2")
        + _png_chunk(b"IDAT", zlib.compress(b"\0\x1b")) + _png_chunk(b"IEND", b""))
    im = read_image(tmp_path / "g.png")
    assert im.mode == "LA"
    np.testing.assert_array_equal(im.pixels[0], [[0, 255], [85, 255], [170, 0], [255, 255]])


def test_one_bit_becomes_l_0_255(tmp_path):
    PILImage.fromarray(np.array([[0, 255, 255]], dtype=np.uint8)).convert("1").save(
        tmp_path / "b.png")
    im = read_image(tmp_path / "b.png")
    assert (im.mode, im.original_mode) == ("L", "1")
    np.testing.assert_array_equal(im.pixels[..., 0], [[0, 255, 255]])


def _refusals(tmp_path):
    """(path, reason, kwargs) for every kind of input read_image must refuse."""
    t = tmp_path
    PILImage.fromarray(np.zeros((3, 4), np.uint16)).save(t / "grey16.png")
    PILImage.fromarray(np.zeros((3, 4), np.int32)).save(t / "int32.tif")
    PILImage.fromarray(np.zeros((3, 4), np.float32)).save(t / "float.tif")
    PILImage.new("CMYK", (4, 3)).save(t / "cmyk.jpg")
    PILImage.new("YCbCr", (4, 3)).save(t / "ycc.tif")
    PILImage.new("LAB", (4, 3)).save(t / "lab.tif")
    frames = [PILImage.new("L", (4, 3), c) for c in (0, 99)]
    frames[0].save(t / "anim.gif", save_all=True, append_images=frames[1:])
    PILImage.new("L", (5, 5)).save(t / "big.png")
    PILImage.new("RGB", (40, 30)).save(t / "full.png")
    (t / "trunc.png").write_bytes((t / "full.png").read_bytes()[:60])
    (t / "junk.png").write_bytes(b"this is not an image at all")
    (t / "empty.png").write_bytes(b"")
    (t / "adir").mkdir()
    return [
        (t / "nope.png", "missing", {}),
        (t / "adir", "missing", {}),
        (_raw_png(t / "rgb16.png", 3, 2, 16, 2, 3), "bit_depth", {}),
        (t / "grey16.png", "bit_depth", {}),
        (t / "int32.tif", "bit_depth", {}),
        (t / "float.tif", "bit_depth", {}),
        (t / "cmyk.jpg", "mode", {}),
        (t / "ycc.tif", "mode", {}),
        (t / "lab.tif", "mode", {}),
        (t / "anim.gif", "frames", {}),
        (_raw_png(t / "zero.png", 0, 3, 8, 0, 1), "empty", {}),
        (t / "empty.png", "empty", {}),
        (t / "big.png", "too_large", {"max_pixels": 24}),
        (t / "trunc.png", "corrupt", {}),
        (t / "junk.png", "corrupt", {}),
    ]


def test_refusals_are_clear_and_name_the_file(tmp_path):
    messages = set()
    for path, reason, kwargs in _refusals(tmp_path):
        with pytest.raises(UnsupportedImageError) as info:
            read_image(path, **kwargs)
        msg = str(info.value)
        assert info.value.reason == reason, (path, msg)
        assert str(path) in msg and "\n" not in msg
        messages.add(msg.split(": ", 1)[1])
    assert len(messages) >= 12  # one wording per kind of problem, not one catch-all


def test_size_cap_is_configurable(tmp_path):
    PILImage.new("L", (5, 5)).save(tmp_path / "s.png")
    assert read_image(tmp_path / "s.png", max_pixels=25).pixels.shape == (5, 5, 1)


def test_write_refuses_to_overwrite_unless_forced(tmp_path):
    path = tmp_path / "out.png"
    path.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError, match="out.png"):
        write_png(path, np.zeros((2, 2), np.uint8), "L")
    assert path.read_bytes() == b"keep me"
    write_png(path, np.full((2, 2, 1), 7, np.uint8), "L", force=True)
    assert read_image(path).pixels.max() == 7
    assert sorted(os.listdir(tmp_path)) == ["out.png"]


def test_write_rejects_bad_pixels_and_writes_nothing(tmp_path):
    for pixels, mode in [(np.zeros((2, 2, 3), np.uint16), "RGB"),
                         (np.zeros((2, 2, 3), np.uint8), "RGBA"),
                         (np.zeros((0, 2, 1), np.uint8), "L"),
                         (np.zeros((2, 2, 1), np.uint8), "P")]:
        with pytest.raises(ValueError):
            write_png(tmp_path / "bad.png", pixels, mode)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("failing", ["fsync", "link", "replace"])
def test_failed_write_leaves_no_partial_or_temp_file(tmp_path, monkeypatch, failing):
    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(imageio.os, failing, boom)
    path = tmp_path / "out.bin"
    force = failing == "replace"
    if force:
        path.write_bytes(b"old")
    with pytest.raises(OSError):
        atomic_write_bytes(path, b"x" * 1000, force=force)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == (["out.bin"] if force else [])
    if force:
        assert path.read_bytes() == b"old"


def test_write_without_hard_links_falls_back_to_rename(tmp_path, monkeypatch):
    def no_links(*args, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted")
    monkeypatch.setattr(imageio.os, "link", no_links)
    atomic_write_bytes(tmp_path / "f", b"data")
    with pytest.raises(OutputExistsError):
        atomic_write_bytes(tmp_path / "f", b"new")
    monkeypatch.undo()
    assert (tmp_path / "f").read_bytes() == b"data"
    assert os.listdir(tmp_path) == ["f"]


def test_atomic_write_bytes_content_and_permissions(tmp_path):
    path = tmp_path / "stream.ddpm"
    atomic_write_bytes(path, b"\x00\x01payload")
    assert path.read_bytes() == b"\x00\x01payload"
    mask = os.umask(0o022)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask
    with pytest.raises(OutputExistsError):
        atomic_write_bytes(path, b"other")
    atomic_write_bytes(path, b"other", force=True)
    assert path.read_bytes() == b"other"
    assert os.listdir(tmp_path) == ["stream.ddpm"]
