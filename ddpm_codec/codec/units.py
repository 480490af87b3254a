"""Images as the codecs see them: *units* of one padded shape, a checksum
of the original pixels, and the header's image list.

With a one-channel model every colour plane of an image is a unit; otherwise
the image is one unit.  Units are padded (edge replication) to a multiple of
what the U-Net needs and cropped back on decode.  Shared by the lossless and
the lossy codec.

Tiles (lossless): a plane can instead be cut into tiles of the model's
training size, each a unit.  Why: bits-back needs bits in flight before its
pushes pay back, and one unit alone has nothing to take them from, so one
large image as one unit could only be stored classically; as tiles, its first
tile seeds the chain of the rest (HiLLoC's way).  The price is the context
across tile borders.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from ddpm_codec.format import container

MAX_UNITS = 1 << 20
MAX_DIMS = 1 << 30
# the U-Net runs on a whole plane at once, and its self-attention is quadratic in
# the positions of its lowest level: 2^16 pixels (256 x 256) keeps that under
# ~100 MB; larger images are refused with a clear error, never half-coded
MAX_UNIT_PIXELS = 1 << 16
# a tiled image is coded a few tiles per network call, so only its size in the
# header and the work bound limit it: 16M pixels (4096 x 4096)
MAX_TILED_PIXELS = 1 << 24


@dataclass(kw_only=True)
class ImageRecord:
    """One image of a stream: pixels, the name it is decoded to, and its mode."""
    pixels: np.ndarray            # (H, W, C) uint8
    name: str = "image"
    mode: str = "L"



class Unit(NamedTuple):
    image: int                 # index into the image list
    plane: int                 # colour plane (one-channel model), else 0
    pixels: np.ndarray         # padded (C, H', W') uint8
    origin: tuple = (0, 0)     # (row, column) of its top-left pixel in the image


def _planes(im: ImageRecord, channels: int) -> list:
    c = im.pixels.shape[2]
    if channels == 1:
        return [im.pixels[:, :, j:j + 1] for j in range(c)]
    if channels == c:
        return [im.pixels]
    raise container.CodecError(f"{im.name}: a {c}-channel image cannot be coded by a {channels}-channel model")


def tile_spans(n: int, tile: int, multiple: int) -> list[tuple[int, int]]:
    """(start, size) of the ceil(n / tile) tiles along one axis of n pixels: as
    even as blocks of `multiple` allow, larger first (the last one cut by the
    image edge and padded back).  Why even: a sliver of a few pixels at the edge
    costs far more per pixel than a tile a little smaller than the model's size."""
    blocks = -(-n // multiple)
    parts = min(-(-n // tile), blocks)
    sizes = [multiple * (blocks // parts + (k < blocks % parts)) for k in range(parts)]
    starts = [sum(sizes[:k]) for k in range(parts)]
    return [(a, min(b, n - a)) for a, b in zip(starts, sizes)]


def count_units(images: list[ImageRecord], channels: int, tile: int = 0, whole=frozenset()) -> int:
    """How many units `to_units` makes, without making them."""
    n = 0
    for i, im in enumerate(images):
        if i in whole:
            n += 1
            continue
        h, w, c = im.pixels.shape
        per_plane = -(-h // tile) * -(-w // tile) if tile else 1
        n += per_plane * (c if channels == 1 else 1)
    return n


def to_units(images: list[ImageRecord], channels: int, multiple: int, tile: int = 0,
             whole=frozenset()) -> list[Unit]:
    """The units of `images`: whole planes, or tiles of side at most about
    `tile` (`tile_spans`), each padded to `multiple`; an image in `whole` is one
    unit of all its channels, unpadded (stored classically as one picture)."""
    limit = MAX_TILED_PIXELS if tile else MAX_UNIT_PIXELS
    for im in images:
        h, w, _ = im.pixels.shape
        if h * w > limit:
            raise container.CodecError(f"{im.name}: {w}x{h} is larger than this codec codes "
                               + ("at once" if tile else "as one plane") + f" ({limit} pixels)"
                               + ("" if tile else "; lossless coding can tile it (--tiles always)"))
    if count_units(images, channels, tile, whole) > MAX_UNITS:
        raise container.CodecError(f"too many image planes or tiles in one stream (> {MAX_UNITS})")
    out = []
    for i, im in enumerate(images):
        if i in whole:
            out.append(Unit(i, 0, np.ascontiguousarray(im.pixels.transpose(2, 0, 1))))
            continue
        h, w, _ = im.pixels.shape
        rows = tile_spans(h, tile, multiple) if tile else [(0, h)]
        cols = tile_spans(w, tile, multiple) if tile else [(0, w)]
        for j, pl in enumerate(_planes(im, channels)):
            for r, th in rows:
                for c0, tw in cols:
                    piece = pl[r:r + th, c0:c0 + tw]
                    ph, pw = -th % multiple, -tw % multiple
                    piece = np.pad(piece, ((0, ph), (0, pw), (0, 0)), mode="edge")
                    out.append(Unit(i, j, np.ascontiguousarray(piece.transpose(2, 0, 1)), (r, c0)))
    return out


def place_unit(image: ImageRecord, unit: Unit, pixels: np.ndarray | None = None) -> None:
    """Write a decoded unit (its `pixels`, or `pixels` given) back into its
    image at its origin, cropping the padding: plane `unit.plane` of the image
    for a one-channel unit, else all channels."""
    px = unit.pixels if pixels is None else pixels
    hh, ww, _ = image.pixels.shape
    r, c = unit.origin
    th, tw = min(px.shape[1], hh - r), min(px.shape[2], ww - c)
    if px.shape[0] == 1:
        image.pixels[r:r + th, c:c + tw, unit.plane] = px[0, :th, :tw]
    else:
        image.pixels[r:r + th, c:c + tw] = px.transpose(1, 2, 0)[:th, :tw]


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
    groups.sort(key=lambda g: -units[g[0]].pixels.size)
    return [n for g in groups for n in g]


def pick_first(order: list[int], j: int) -> list[int]:
    """Move order[j] to the front (the unit chosen as the first seed)."""
    return [order[j], *order[:j], *order[j + 1:]] if j else order


def shape_groups(units):
    """Indices of units grouped by padded shape, in first-appearance order."""
    by = {}
    for n, u in enumerate(units):
        by.setdefault(u.pixels.shape, []).append(n)
    return list(by.values())


def check_image_list(h: dict, payload_bytes: int, max_pixels: int = MAX_UNIT_PIXELS) -> list:
    """The header's image list [name, mode, H, W, C], bounded by the payload
    (and each image by `max_pixels`: one plane, or a tiled image)."""
    imgs = container.field(h, "images", list)
    if not 1 <= len(imgs) <= MAX_UNITS:
        raise container.StreamError("corrupt stream: image count out of range")
    dims = 0
    for im in imgs:
        ok = isinstance(im, list) and len(im) == 5 and isinstance(im[0], str) and isinstance(im[1], str)
        ok = ok and all(isinstance(v, int) and not isinstance(v, bool) for v in im[2:])
        if not ok or not (1 <= im[2] <= 1 << 16 and 1 <= im[3] <= 1 << 16 and 1 <= im[4] <= 4):
            raise container.StreamError("corrupt stream: bad image record")
        if im[2] * im[3] > max_pixels:
            raise container.StreamError("corrupt stream: an image is larger than any encoder writes")
        dims += im[2] * im[3] * im[4]
    if dims > MAX_DIMS or dims > 64 * 8 * max(payload_bytes, 64) * 64:
        raise container.StreamError("corrupt stream: image sizes do not fit the payload")
    return imgs
