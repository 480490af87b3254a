"""Classical image codecs, measured the same way as ours.

Benchmarks and the rate-distortion plot put PNG, WebP and JPEG XL beside the
diffusion codec; this module runs them on dataset arrays (N, C, H, W) uint8
and reports bits/dim with D = N * C * H * W of the original images.

Two layouts:

- 'per_image': every image is a separate file, headers included, as a user
  compressing files one by one would get;
- 'mosaic': all images tiled into one near-square grid (100 x 100 tiles for
  10k images) and compressed as one file, which amortizes headers and lets
  the codec learn across images. Padding tiles (zeros) are compressed but not
  counted in D.

Lossless results are always decoded and compared with the input, so a number
reported here is for a round trip that was exact. JPEG XL needs imagecodecs
built with libjxl; when it is missing, `jpegxl_status()` says why and the
benchmarks skip it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from io import BytesIO

import numpy as np
from PIL import Image as PILImage

from ddpm_codec.errors import DdpmCodecError

LOSSLESS_CODECS = ("png", "webp", "jpegxl")
LOSSY_CODECS = ("jpeg", "webp", "jpegxl")
LAYOUTS = ("per_image", "mosaic")

_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}


class CodecUnavailableError(DdpmCodecError, RuntimeError):
    """The codec's library is not installed or lacks the needed feature."""


class LosslessMismatchError(RuntimeError):
    """A 'lossless' codec did not give back the exact pixels."""


def jpegxl_status() -> tuple[bool, str]:
    """(available, reason): whether imagecodecs can encode and decode JPEG XL here."""
    try:
        import imagecodecs
    except ImportError:
        return False, "imagecodecs is not installed (pip install 'ddpm-codec[bench]')"
    try:
        ok = bool(imagecodecs.JPEGXL.available)
    except AttributeError:
        ok = hasattr(imagecodecs, "jpegxl_encode")
    if not ok:
        return False, f"imagecodecs {imagecodecs.__version__} was built without libjxl"
    return True, f"libjxl {imagecodecs.jpegxl_version()} via imagecodecs"


def codec_status(codec: str) -> tuple[bool, str]:
    """(available, reason) for any codec name used here."""
    if codec == "jpegxl":
        return jpegxl_status()
    if codec == "webp":
        from PIL import features
        if not features.check("webp"):
            return False, "pillow was built without WebP support"
        return True, f"libwebp {features.version('webp')} via pillow"
    if codec in ("png", "jpeg"):
        return True, "pillow"
    raise ValueError(f"unknown codec {codec!r}")


def _require(codec: str) -> None:
    ok, reason = codec_status(codec)
    if not ok:
        raise CodecUnavailableError(f"{codec}: {reason}")


def _as_hwc(pixels: np.ndarray) -> np.ndarray:
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8:
        raise ValueError(f"pixels must be uint8, got {pixels.dtype}")
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.ndim != 3 or pixels.shape[2] not in _MODES:
        raise ValueError(f"want an H x W x C image with C in 1..4, got {pixels.shape}")
    return np.ascontiguousarray(pixels)


def _to_pil(hwc: np.ndarray) -> PILImage.Image:
    mode = _MODES[hwc.shape[2]]
    return PILImage.fromarray(hwc[:, :, 0] if mode == "L" else hwc, mode=mode)


def _from_pil(im: PILImage.Image, channels: int) -> np.ndarray:
    """Decoded pillow image back to H x W x `channels` (WebP always decodes to RGB(A))."""
    arr = np.asarray(im)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.shape[2] == channels:
        return arr
    if channels in (1, 2) and arr.shape[2] in (3, 4):
        grey = np.rint(arr[:, :, :3].astype(np.float64).mean(axis=2)).astype(np.uint8)
        planes = [grey] + ([arr[:, :, 3]] if channels == 2 else [])
        return np.stack(planes, axis=2)
    raise ValueError(f"decoded {arr.shape[2]} channels, expected {channels}")


def _pil_encode(hwc: np.ndarray, **save_args) -> bytes:
    buf = BytesIO()
    _to_pil(hwc).save(buf, **save_args)
    return buf.getvalue()


def encode_lossless(codec: str, pixels: np.ndarray, jxl_effort: int = 9) -> bytes:
    """Lossless bytes of one H x W (x C) image at each codec's strongest usual setting.

    JPEG XL effort 9 is cjxl -e 9; effort 10 is smaller still but several times slower.
    """
    hwc = _as_hwc(pixels)
    _require(codec)
    if codec == "png":
        return _pil_encode(hwc, format="PNG", optimize=True, compress_level=9)
    if codec == "webp":
        # quality=100 with method=6 is cwebp -z 9; exact keeps RGB under alpha 0.
        return _pil_encode(hwc, format="WEBP", lossless=True, quality=100, method=6,
                           exact=True)
    if codec == "jpegxl":
        import imagecodecs
        return bytes(imagecodecs.jpegxl_encode(_squeeze(hwc), lossless=True,
                                                  effort=jxl_effort))
    raise ValueError(f"unknown lossless codec {codec!r} (want one of {LOSSLESS_CODECS})")


def _squeeze(hwc: np.ndarray) -> np.ndarray:
    return hwc[:, :, 0] if hwc.shape[2] == 1 else hwc


def decode(codec: str, data: bytes, channels: int) -> np.ndarray:
    """Decode bytes from any codec here to H x W x `channels` uint8."""
    if codec == "jpegxl":
        import imagecodecs
        arr = np.asarray(imagecodecs.jpegxl_decode(data, index=0))     # the first frame only
        if arr.ndim == 2:
            arr = arr[:, :, None]
        return arr
    with PILImage.open(BytesIO(data)) as im:
        im.load()
        return _from_pil(im, channels)


def lossless_num_bytes(codec: str, pixels: np.ndarray, jxl_effort: int = 9) -> int:
    """Compressed size of one image, after checking that it decodes exactly."""
    hwc = _as_hwc(pixels)
    data = encode_lossless(codec, hwc, jxl_effort)
    back = decode(codec, data, hwc.shape[2])
    if back.shape != hwc.shape or not np.array_equal(back, hwc):
        raise LosslessMismatchError(f"{codec}: lossless round trip changed the pixels")
    return len(data)


def lossy_roundtrip(codec: str, pixels: np.ndarray, quality: float) -> tuple[int, np.ndarray]:
    """(num_bytes, reconstruction) of one image.

    `quality` is pillow's 0..100 quality for 'jpeg' and 'webp', and the
    butteraugli distance for 'jpegxl' (0 = lossless, 1 = visually lossless,
    larger = smaller files).
    """
    hwc = _as_hwc(pixels)
    _require(codec)
    if codec == "jpeg":
        if hwc.shape[2] in (2, 4):
            raise ValueError("JPEG cannot store an alpha channel")
        data = _pil_encode(hwc, format="JPEG", quality=int(quality), optimize=True)
    elif codec == "webp":
        data = _pil_encode(hwc, format="WEBP", quality=float(quality), method=6)
    elif codec == "jpegxl":
        import imagecodecs
        data = bytes(imagecodecs.jpegxl_encode(_squeeze(hwc), distance=float(quality)))
    else:
        raise ValueError(f"unknown lossy codec {codec!r} (want one of {LOSSY_CODECS})")
    return len(data), decode(codec, data, hwc.shape[2])


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    """Root mean squared error on the 0..255 pixel scale, over all values."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    return float(np.sqrt(np.mean((a - b) ** 2)))


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB (inf for identical inputs)."""
    e = rmse(a, b)
    return math.inf if e == 0 else 20.0 * math.log10(peak / e)


def mosaic_grid(n: int) -> tuple[int, int]:
    """(rows, cols) of the near-square grid for n tiles: cols = ceil(sqrt n)."""
    if n <= 0:
        raise ValueError("need at least one image")
    cols = math.isqrt(n - 1) + 1
    return -(-n // cols), cols


def mosaic(images: np.ndarray) -> np.ndarray:
    """Tile (N, C, H, W) images row by row into one (rows*H, cols*W, C) image.

    Unused tiles at the end are zero; `unmosaic` undoes this.
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"want (N, C, H, W) images, got shape {images.shape}")
    n, c, h, w = images.shape
    rows, cols = mosaic_grid(n)
    grid = np.zeros((rows * cols, c, h, w), dtype=images.dtype)
    grid[:n] = images
    grid = grid.reshape(rows, cols, c, h, w).transpose(0, 3, 1, 4, 2)
    return np.ascontiguousarray(grid.reshape(rows * h, cols * w, c))


def unmosaic(grid: np.ndarray, n: int, height: int, width: int) -> np.ndarray:
    """The first n (C, height, width) tiles of a mosaic, as (N, C, H, W)."""
    grid = _as_hwc(grid)
    rows, cols = mosaic_grid(n)
    if grid.shape[:2] != (rows * height, cols * width):
        raise ValueError(f"mosaic of shape {grid.shape} does not hold {n} tiles of "
                         f"{height}x{width}")
    c = grid.shape[2]
    tiles = grid.reshape(rows, height, cols, width, c).transpose(0, 2, 4, 1, 3)
    return np.ascontiguousarray(tiles.reshape(rows * cols, c, height, width)[:n])


@dataclass
class CodecResult:
    """One codec on one set of images; bits_per_dim = 8 * num_bytes / num_dims."""

    codec: str
    layout: str  # 'per_image' | 'mosaic'
    num_images: int
    num_bytes: int
    num_dims: int  # D = N * C * H * W of the originals (mosaic padding excluded)
    bits_per_dim: float
    setting: float | None = None  # quality (jpeg, webp) or distance (jpegxl); None if lossless
    rmse: float | None = None  # over all values of all images, 0..255 scale
    psnr: float | None = None


def _check_images(images: np.ndarray, layout: str) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[0] == 0 or images.dtype != np.uint8:
        raise ValueError(f"want non-empty uint8 (N, C, H, W) images, got "
                         f"{images.dtype} {images.shape}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    return images


def lossless_bits_per_dim(codec: str, images: np.ndarray,
                          layout: str = "per_image", jxl_effort: int = 9) -> CodecResult:
    """Exact-checked lossless size of (N, C, H, W) images, per image or as a mosaic."""
    images = _check_images(images, layout)
    if layout == "mosaic":
        total = lossless_num_bytes(codec, mosaic(images), jxl_effort)
    else:
        total = sum(lossless_num_bytes(codec, im.transpose(1, 2, 0), jxl_effort)
                    for im in images)
    return CodecResult(codec, layout, len(images), total, images.size,
                       8.0 * total / images.size)


def lossy_bits_per_dim(codec: str, images: np.ndarray, quality: float,
                       layout: str = "per_image") -> CodecResult:
    """Rate and distortion of a lossy codec on (N, C, H, W) images at one setting."""
    images = _check_images(images, layout)
    n, c, h, w = images.shape
    if layout == "mosaic":
        total, rec = lossy_roundtrip(codec, mosaic(images), quality)
        recon = unmosaic(rec, n, h, w)
    else:
        total, parts = 0, []
        for im in images:
            nb, rec = lossy_roundtrip(codec, im.transpose(1, 2, 0), quality)
            total += nb
            parts.append(rec.transpose(2, 0, 1))
        recon = np.stack(parts)
    return CodecResult(codec, layout, n, total, images.size, 8.0 * total / images.size,
                       setting=float(quality), rmse=rmse(images, recon),
                       psnr=psnr(images, recon))


_JXL_U32_BITS = (9, 13, 18, 30)
_JXL_RATIOS = {1: (1, 1), 2: (12, 10), 3: (4, 3), 4: (3, 2), 5: (16, 9), 6: (5, 4), 7: (2, 1)}


def jpegxl_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a bare JPEG XL codestream's SizeHeader (ISO/IEC
    18181-1: signature FF 0A, then LSB-first bits), read before any decoding so
    that a crafted file cannot make the decoder allocate more than it says;
    None when `data` is not such a codestream."""
    if len(data) < 3 or data[:2] != b"\xff\x0a":
        return None
    bits = int.from_bytes(data[2:14], "little")
    pos = 0

    def take(n):
        nonlocal pos
        v = (bits >> pos) & ((1 << n) - 1)
        pos += n
        return v

    def u32():
        return take(_JXL_U32_BITS[take(2)]) + 1

    small = take(1)
    height = (take(5) + 1) * 8 if small else u32()
    ratio = take(3)
    if ratio:
        num, den = _JXL_RATIOS[ratio]
        width = height * num // den
    else:
        width = (take(5) + 1) * 8 if small else u32()
    return width, height
