"""Reading and writing images for the lossless codec.

"Lossless" here means: the pixel values that pillow decodes from the input are
exactly the values the codec stores and the PNG it writes back contains. So
this module refuses every input where pillow would silently change values
(16-bit samples truncated to 8, premultiplied alpha) and every input that has
no single 8-bit raster (multi-frame files, CMYK and other colour spaces).

Two inputs are converted, losslessly, and the conversion is recorded in
`Image.original_mode`:

- palette ('P', 'PA') images become RGB, or RGBA when the palette or a tRNS
  chunk carries transparency; every pixel keeps its exact colour;
- 1-bit ('1') images become 'L' with values 0 and 255 (and 2- or 4-bit grey
  PNGs, which pillow already spreads evenly over 0..255, stay 'L').

A colour-key transparency on an L or RGB image (PNG tRNS) is made explicit as
an LA or RGBA alpha channel (0 where the pixel equals the key, else 255), so
that what decodes looks like what was encoded.

Metadata (EXIF orientation, ICC profiles, gamma) is not applied or kept: the
codec stores the raster as it is in the file.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from io import BytesIO

import numpy as np
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

from ddpm_codec.errors import DdpmCodecError
from ddpm_codec.io.atomic import OutputExistsError, atomic_write_bytes  # noqa: F401 (re-exported)

#: Refuse images with more pixels than this (64 Mi pixels) unless told otherwise.
DEFAULT_MAX_PIXELS = 1 << 26

#: Channel counts of the modes the codec handles.
MODE_CHANNELS = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# errno values of filesystems that cannot make hard links (FAT, some network mounts).


class ImageIOError(DdpmCodecError):
    """Base class for this module's errors."""


class UnsupportedImageError(ImageIOError):
    """The input is missing, unreadable or not an image the codec can store exactly.

    `reason` is a short code ('missing', 'unreadable', 'corrupt', 'mode',
    'bit_depth', 'frames', 'empty', 'too_large') so that callers can branch
    without parsing the message.
    """

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason




@dataclass
class Image:
    """A decoded image: an HxWxC uint8 raster plus where it came from."""

    pixels: np.ndarray  # (H, W, C) uint8
    mode: str  # 'L' | 'LA' | 'RGB' | 'RGBA'
    name: str  # file name without directory
    format: str | None  # pillow format of the source file, e.g. 'PNG'
    original_mode: str  # pillow mode of the source before any lossless conversion

    @property
    def converted(self) -> bool:
        """True when the source mode differs from `mode` (palette, 1-bit, colour key)."""
        return self.original_mode != self.mode

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def channels(self) -> int:
        return int(self.pixels.shape[2])


def _refuse(path, what: str, reason: str) -> UnsupportedImageError:
    return UnsupportedImageError(f"{path}: {what}", reason)


def _png_bit_depth(path) -> int:
    """Bits per sample from a PNG's IHDR (8 if the header is not where expected)."""
    with open(path, "rb") as f:
        head = f.read(25)
    if len(head) == 25 and head[:8] == _PNG_SIGNATURE and head[12:16] == b"IHDR":
        return head[24]
    return 8


def _check_bit_depth(path, im) -> None:
    """Refuse files whose samples pillow would narrow to 8 bits without telling."""
    fmt = im.format
    if fmt == "PNG":
        depth = _png_bit_depth(path)
        if depth > 8:
            raise _refuse(path, f"{depth}-bit PNG samples are not supported "
                                "(only 8-bit or less per channel)", "bit_depth")
    elif fmt == "TIFF":
        bits = im.tag_v2.get(258, (8,))
        bits = bits if isinstance(bits, tuple) else (bits,)
        if any(int(b) > 8 for b in bits):
            raise _refuse(path, f"{max(bits)}-bit TIFF samples are not supported "
                                "(only 8-bit or less per channel)", "bit_depth")
        extra = im.tag_v2.get(338, ())
        extra = extra if isinstance(extra, tuple) else (extra,)
        if 1 in extra:
            raise _refuse(path, "premultiplied-alpha TIFF is not supported "
                                "(un-premultiplying loses values)", "mode")
    elif fmt == "PPM":
        args = im.tile[0][3] if im.tile else None
        maxval = args[-1] if isinstance(args, tuple) and isinstance(args[-1], int) else 255
        if maxval > 255:
            raise _refuse(path, f"PNM maxval {maxval} (more than 8 bits) is not supported",
                          "bit_depth")


def _declares_zero_size(path) -> bool:
    """True for a PNG whose header says width or height 0 (pillow rejects it unnamed)."""
    with open(path, "rb") as f:
        head = f.read(24)
    if head[:8] == _PNG_SIGNATURE and head[12:16] == b"IHDR":
        return head[16:20] == b"\0\0\0\0" or head[20:24] == b"\0\0\0\0"
    return False


def _apply_colour_key(arr: np.ndarray, key) -> np.ndarray:
    """Add an alpha channel from a tRNS colour key: 0 where the pixel equals it."""
    key = np.asarray(key if isinstance(key, tuple) else (key,), dtype=np.int64)
    if key.size != arr.shape[2] or np.any(key > 255) or np.any(key < 0):
        return arr  # a key that cannot match any 8-bit pixel makes nothing transparent
    hit = np.all(arr == key.astype(np.uint8), axis=2)
    alpha = np.where(hit, 0, 255).astype(np.uint8)[..., None]
    return np.concatenate([arr, alpha], axis=2)


def read_image(path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image:
    """Decode `path` into an `Image`, refusing anything that cannot round-trip exactly."""
    path = os.fspath(path)
    name = os.path.basename(path)
    if not os.path.exists(path):
        raise _refuse(path, "no such file", "missing")
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise _refuse(path, "file is empty (0 bytes)", "empty")
    if os.path.isdir(path):
        raise _refuse(path, "is a directory, not an image file", "missing")
    try:
        with warnings.catch_warnings():
            # Our cap (checked below) replaces pillow's decompression-bomb warning;
            # pillow's hard limit (2x its cap) still ends in a clear refusal.
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
            im = PILImage.open(path)
    except UnidentifiedImageError:
        if _declares_zero_size(path):
            raise _refuse(path, "image has zero width or height", "empty") from None
        raise _refuse(path, "not a recognised image file (unreadable or corrupt)",
                      "corrupt") from None
    except PILImage.DecompressionBombError:
        raise _refuse(path, "image is too large (pillow's own limit refused it)",
                      "too_large") from None
    except OSError as e:
        raise _refuse(path, f"cannot open: {e.strerror or e}", "unreadable") from None
    with im:
        w, h = im.size
        if w == 0 or h == 0:
            raise _refuse(path, f"image has zero size ({w}x{h})", "empty")
        if w * h > max_pixels:
            raise _refuse(path, f"image is too large: {w}x{h} = {w * h} pixels, cap is "
                                f"{max_pixels}", "too_large")
        frames = getattr(im, "n_frames", 1)
        if frames > 1:
            raise _refuse(path, f"multi-frame image ({frames} frames) is not supported; "
                                "extract one frame first", "frames")
        src_mode = im.mode
        if src_mode.startswith(("I", "F")):
            kind = "32-bit float" if src_mode.startswith("F") else (
                "16-bit integer" if "16" in src_mode else "32-bit integer")
            raise _refuse(path, f"{kind} samples (pillow mode {src_mode!r}) are not "
                                "supported; only 8-bit", "bit_depth")
        if src_mode not in ("L", "LA", "RGB", "RGBA", "P", "PA", "1"):
            raise _refuse(path, f"pillow mode {src_mode!r} is not supported (only 8-bit "
                                "L, LA, RGB, RGBA, palette and 1-bit)", "mode")
        _check_bit_depth(path, im)
        fmt = im.format
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
                im.load()
            if src_mode in ("P", "PA"):
                has_alpha = (src_mode == "PA" or "transparency" in im.info
                             or (im.palette is not None and im.palette.mode == "RGBA"))
                im = im.convert("RGBA" if has_alpha else "RGB")
            elif src_mode == "1":
                im = im.convert("L")
            arr = np.asarray(im, dtype=np.uint8)
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise _refuse(path, f"corrupt or truncated image data ({e})", "corrupt") from None
        if arr.ndim == 2:
            arr = arr[:, :, None]
        mode = im.mode
        key = im.info.get("transparency")
        if mode in ("L", "RGB") and key is not None and not isinstance(key, bytes):
            if src_mode == "L" and fmt == "PNG" and _png_bit_depth(path) in (2, 4):
                # pillow scales 2- and 4-bit grey samples to 0..255 but not the key
                key = key * 255 // ((1 << _png_bit_depth(path)) - 1)
            arr = _apply_colour_key(arr, key)
            if arr.shape[2] == MODE_CHANNELS[mode] + 1:
                mode = "LA" if mode == "L" else "RGBA"
        if arr.shape[2] != MODE_CHANNELS[mode]:
            raise _refuse(path, f"decoded raster has {arr.shape[2]} channels for mode {mode}",
                          "corrupt")
    return Image(np.ascontiguousarray(arr), mode, name, fmt, src_mode)


def _check_pixels(pixels: np.ndarray, mode: str) -> np.ndarray:
    """Validate an HxWxC (or HxW for 'L') uint8 raster against `mode`."""
    if mode not in MODE_CHANNELS:
        raise ValueError(f"mode must be one of {sorted(MODE_CHANNELS)}, got {mode!r}")
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8:
        raise ValueError(f"pixels must be uint8, got {pixels.dtype}")
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.ndim != 3 or pixels.shape[2] != MODE_CHANNELS[mode]:
        raise ValueError(f"pixels of shape {pixels.shape} do not fit mode {mode} "
                         f"(want H x W x {MODE_CHANNELS[mode]})")
    if pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise ValueError(f"cannot write a zero-size image {pixels.shape}")
    return pixels


def encode_png(pixels: np.ndarray, mode: str, compress_level: int = 6,
               optimize: bool = False) -> bytes:
    """PNG bytes of an 8-bit raster (no metadata), for writing or measuring."""
    pixels = _check_pixels(pixels, mode)
    arr = pixels[:, :, 0] if mode == "L" else pixels
    buf = BytesIO()
    PILImage.fromarray(np.ascontiguousarray(arr), mode=mode).save(
        buf, format="PNG", compress_level=compress_level, optimize=optimize)
    return buf.getvalue()


def write_png(path, pixels: np.ndarray, mode: str, force: bool = False) -> int:
    """Write an 8-bit PNG atomically; returns the number of bytes written."""
    data = encode_png(pixels, mode)
    atomic_write_bytes(path, data, force=force)
    return len(data)
