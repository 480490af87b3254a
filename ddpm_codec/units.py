"""Images as the codecs see them: *units* of one padded shape, a checksum
of the original pixels, and the header's image list.

With a one-channel model every colour plane of an image is a unit; otherwise
the image is one unit.  Units are padded (edge replication) to a multiple of
what the U-Net needs and cropped back on decode.  Shared by the lossless and
the lossy codec.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from . import container as C

MAX_UNITS = 1 << 20
MAX_DIMS = 1 << 30
# the U-Net runs on a whole plane at once, and its self-attention is quadratic in
# the positions of its lowest level: 2^16 pixels (256 x 256) keeps that under
# ~100 MB; larger images are refused with a clear error, never half-coded
MAX_UNIT_PIXELS = 1 << 16


@dataclass
class ImageRecord:
    pixels: np.ndarray            # (H, W, C) uint8
    name: str = "image"
    mode: str = "L"



def to_units(images: list[ImageRecord], channels: int, multiple: int):
    """List of (image index, plane slice, padded (C, H', W') uint8 array)."""
    out = []
    for i, im in enumerate(images):
        p = im.pixels
        h, w, c = p.shape
        if h * w > MAX_UNIT_PIXELS:
            raise C.CodecError(f"{im.name}: {w}x{h} is larger than this codec codes at once "
                               f"({MAX_UNIT_PIXELS} pixels); split it into tiles")
        ph, pw = -h % multiple, -w % multiple
        if channels == 1:
            planes = [p[:, :, j:j + 1] for j in range(c)]
        elif channels == c:
            planes = [p]
        else:
            raise C.CodecError(f"{im.name}: a {c}-channel image cannot be coded by a {channels}-channel model")
        for j, pl in enumerate(planes):
            pl = np.pad(pl, ((0, ph), (0, pw), (0, 0)), mode="edge")
            out.append((i, j, np.ascontiguousarray(pl.transpose(2, 0, 1))))
    return out


def place_unit(image: ImageRecord, plane: int, unit: np.ndarray) -> None:
    """Write a decoded (C, H', W') unit back into its image, cropping the
    padding: plane `plane` of the image for a one-channel unit, else all."""
    hh, ww, _ = image.pixels.shape
    if unit.shape[0] == 1:
        image.pixels[:, :, plane] = unit[0, :hh, :ww]
    else:
        image.pixels[...] = unit.transpose(1, 2, 0)[:hh, :ww]


def pixel_checksum(images) -> str:
    """First 64 bits (hex) of the SHA-256 of every image's shape and pixels:
    plenty to catch a decode that went wrong, and 8 bytes in the header."""
    return _pixel_sha256(images)[:16]


def _pixel_sha256(images) -> str:
    h = hashlib.sha256()
    for im in images:
        h.update(f"{im.pixels.shape}|".encode())
        h.update(np.ascontiguousarray(im.pixels).tobytes())
    return h.hexdigest()


def times_hash(times: torch.Tensor) -> str:
    """32 bits of the SHA-256 of the chain's times: the fingerprint already pins
    the model, this catches a chain computed differently (another version)."""
    return hashlib.sha256(times.to(torch.float64).numpy().tobytes()).hexdigest()[:8]


def coding_order(units) -> list[int]:
    """Units in coding order: by shape, the largest shapes first, so that a
    unit never needs more stack than the earlier ones left."""
    groups = shape_groups(units)
    groups.sort(key=lambda g: -units[g[0]][2].size)
    return [n for g in groups for n in g]


def pick_first(order: list[int], j: int) -> list[int]:
    """Move order[j] to the front (the unit chosen as the first seed)."""
    return [order[j], *order[:j], *order[j + 1:]] if j else order


def shape_groups(units):
    """Indices of units grouped by padded shape, in first-appearance order."""
    by = {}
    for n, (_, _, u) in enumerate(units):
        by.setdefault(u.shape, []).append(n)
    return list(by.values())


def check_image_list(h: dict, payload_bytes: int) -> list:
    """The header's image list [name, mode, H, W, C], bounded by the payload."""
    imgs = C.field(h, "images", list)
    if not 1 <= len(imgs) <= MAX_UNITS:
        raise C.StreamError("corrupt stream: image count out of range")
    dims = 0
    for im in imgs:
        ok = isinstance(im, list) and len(im) == 5 and isinstance(im[0], str) and isinstance(im[1], str)
        ok = ok and all(isinstance(v, int) and not isinstance(v, bool) for v in im[2:])
        if not ok or not (1 <= im[2] <= 1 << 16 and 1 <= im[3] <= 1 << 16 and 1 <= im[4] <= 4):
            raise C.StreamError("corrupt stream: bad image record")
        if im[2] * im[3] > MAX_UNIT_PIXELS:
            raise C.StreamError("corrupt stream: an image is larger than any encoder writes")
        dims += im[2] * im[3] * im[4]
    if dims > MAX_DIMS or dims > 64 * 8 * max(payload_bytes, 64) * 64:
        raise C.StreamError("corrupt stream: image sizes do not fit the payload")
    return imgs
