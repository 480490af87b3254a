"""Lossless codec: Bit-Swap over the diffusion chain, many images per stream.

Images become *units* the model can code: with a one-channel model each
colour plane is a unit; otherwise the image is one unit.  Units are padded
(edge replication) to a multiple of what the U-Net needs, and units of one
padded shape are coded together, in *groups*.

Why groups: a bits-back pop reads bits before any are pushed.  Bit-Swap
over a diffusion chain reads about (first pop + drain) bits per dim before
it has pushed its own, several times the model's -VLB, so one batch of all
units would need that much initial data.  The encoder instead grows groups
geometrically: each group is as large as the bits already on the stack
fund (found by trying, halving on a shortfall), so earlier images pay the
initial bits of later ones and only the first group needs a seed.
The seed is a documented PRNG word sequence (`bitsback.initial`); the part
of it that no pop ever touched is left out of the file (the decoder
regenerates it), so a file carries only the seed bits actually consumed.

Determinism: the decoder must reproduce every conditional bit for bit.  The
header records the torch version, thread count, dtype and device the
encoder used; the decoder runs with the same thread count, and checks the
pixel checksum (and the seed it gets back) after decoding.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from bitsback import bitswap
from bitsback.errors import BitsBackError, InsufficientInitialBits
from bitsback.initial import seeded_words
from bitsback.message import Message

from . import container as C
from .coding_chain import DiffusionChain
from .model import DiffusionModel

CODEC = "bitswap"
MAX_UNITS = 1 << 20
MAX_DIMS = 1 << 30


@dataclass
class ImageRecord:
    pixels: np.ndarray            # (H, W, C) uint8
    name: str = "image"
    mode: str = "L"


@dataclass
class EncodeReport:
    file_bytes: int = 0
    dims: int = 0                  # sum of H*W*C of the original images
    seed_bits_consumed: int = 0    # seed words a pop touched (stored in the file)
    seed_words_added: int = 0
    net_bits: int = 0              # stream bits minus the seed bits
    ideal_net_bits: float = 0.0
    groups: list = field(default_factory=list)
    network_s: float = 0.0
    total_s: float = 0.0

    @property
    def file_bpd(self):
        return 8 * self.file_bytes / self.dims

    @property
    def net_bpd(self):
        return self.net_bits / self.dims


# ---- units ---------------------------------------------------------------
def _units(images: list[ImageRecord], channels: int, multiple: int):
    """List of (image index, plane slice, padded (C, H', W') uint8 array)."""
    out = []
    for i, im in enumerate(images):
        p = im.pixels
        h, w, c = p.shape
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


def pixel_checksum(images) -> str:
    h = hashlib.sha256()
    for im in images:
        h.update(f"{im.pixels.shape}|".encode())
        h.update(np.ascontiguousarray(im.pixels).tobytes())
    return h.hexdigest()


def _times_hash(times: torch.Tensor) -> str:
    return hashlib.sha256(times.to(torch.float64).numpy().tobytes()).hexdigest()[:16]


def _shape_groups(units):
    """Indices of units grouped by padded shape, in first-appearance order."""
    by = {}
    for n, (_, _, u) in enumerate(units):
        by.setdefault(u.shape, []).append(n)
    return list(by.values())


# ---- encode -------------------------------------------------------------
def encode(images: list[ImageRecord], model: DiffusionModel, fingerprint: str, steps: int = 100,
           grid_fraction: float = 0.25, encrypt: bool = True, max_group: int = 64,
           progress=None) -> tuple[bytes, EncodeReport]:
    t_start = time.perf_counter()
    if not images:
        raise C.CodecError("nothing to compress: no images given")
    units = _units(images, model.channels, model.unet.multiple)
    if len(units) > MAX_UNITS:
        raise C.CodecError(f"too many image planes in one stream ({len(units)} > {MAX_UNITS})")
    checksum = pixel_checksum(images)
    seed = int.from_bytes(bytes.fromhex(checksum)[:8], "little") >> 1
    times = model.schedule.chain(steps)
    chain = DiffusionChain(model, times, grid_fraction)
    msg = Message.empty()
    rep = EncodeReport(dims=int(sum(im.pixels.size for im in images)))
    groups = []          # (shape group id, start, size)
    seed_added = 0
    need_per_unit = None     # bits one unit draws from the stack, measured on the first group
    for gid, members in enumerate(_shape_groups(units)):
        pos = 0
        while pos < len(members):
            size = 1
            if need_per_unit:
                size = max(1, min(max_group, len(members) - pos, int(msg.num_bits() / need_per_unit)))
            while True:
                x = np.stack([units[members[pos + j]][2] for j in range(size)])
                first = msg.num_bits() == 0 and not groups
                try:
                    new, st = bitswap.encode(x, chain, msg, seed=seed + len(groups), encrypt=encrypt,
                                             initial="auto" if first else np.zeros(0, np.uint32),
                                             initial_seed=seed)
                except InsufficientInitialBits:
                    if size == 1:
                        raise C.CodecError("internal: a single unit could not be funded by the stack")
                    size = max(1, size // 2)
                    continue
                break
            if first:
                seed_added = st.added_initial_words
                need_per_unit = 1.15 * st.initial_bits_used
            rep.ideal_net_bits += st.ideal_net_bits
            msg = new
            groups.append([gid, pos, size])
            pos += size
            if progress:
                progress(size)
    words = msg.words()
    base = seeded_words(seed, seed_added)
    n_common = 0
    lim = min(base.size, words.size)
    while n_common < lim and words[n_common] == base[n_common]:
        n_common += 1
    payload = words[n_common:].astype("<u4").tobytes()
    header = {
        "codec": CODEC, "steps": int(steps), "times_sha": _times_hash(times),
        "grid_fraction": float(grid_fraction), "seed": seed, "encrypt": bool(encrypt),
        "seed_words": int(seed_added), "seed_words_omitted": int(n_common),
        "groups": groups,
        "images": [[im.name, im.mode, *map(int, im.pixels.shape)] for im in images],
        "pixels_sha256": checksum,
        "determinism": {"torch": torch.__version__, "threads": torch.get_num_threads(),
                        "dtype": str(next(model.unet.parameters(), torch.zeros(0)).dtype), "device": "cpu"},
    }
    data = C.pack(C.Container("lossless", fingerprint, header, payload, encrypt))
    rep.file_bytes = len(data)
    rep.seed_words_added = seed_added
    rep.seed_bits_consumed = 32 * (seed_added - n_common)
    rep.net_bits = msg.num_bits() - 32 * seed_added
    rep.groups = groups
    rep.network_s = chain.network_seconds
    rep.total_s = time.perf_counter() - t_start
    return data, rep


# ---- decode -------------------------------------------------------------
def _check_header(h: dict, payload_bytes: int):
    F = C.field
    if F(h, "codec", str) != CODEC:
        raise C.StreamError(f"unknown lossless codec {h.get('codec')!r}")
    F(h, "steps", int, 1, 100000)
    F(h, "grid_fraction", float, 1e-6, 1e3)
    F(h, "seed", int, 0, (1 << 63) - 1)
    F(h, "seed_words", int, 0, 1 << 28)
    F(h, "seed_words_omitted", int, 0, h["seed_words"])
    imgs = F(h, "images", list)
    if not 1 <= len(imgs) <= MAX_UNITS:
        raise C.StreamError("corrupt stream: image count out of range")
    dims = 0
    for im in imgs:
        ok = isinstance(im, list) and len(im) == 5 and isinstance(im[0], str) and isinstance(im[1], str)
        ok = ok and all(isinstance(v, int) and not isinstance(v, bool) for v in im[2:])
        if not ok or not (1 <= im[2] <= 1 << 16 and 1 <= im[3] <= 1 << 16 and 1 <= im[4] <= 4):
            raise C.StreamError("corrupt stream: bad image record")
        dims += im[2] * im[3] * im[4]
    if dims > MAX_DIMS or dims > 64 * 8 * max(payload_bytes, 64) * 64:
        raise C.StreamError("corrupt stream: image sizes do not fit the payload")
    groups = F(h, "groups", list)
    if not groups or len(groups) > MAX_UNITS:
        raise C.StreamError("corrupt stream: bad group list")
    for g in groups:
        if not (isinstance(g, list) and len(g) == 3 and all(isinstance(v, int) and v >= 0 for v in g)):
            raise C.StreamError("corrupt stream: bad group record")
    F(h, "pixels_sha256", str)


def decode(data: bytes, model: DiffusionModel, fingerprint: str, progress=None) -> list[ImageRecord]:
    c = C.parse(data)
    if c.mode != "lossless":
        raise C.StreamError("not a lossless stream")
    C.check_model(c, fingerprint)
    h = c.header
    _check_header(h, len(c.payload))
    if len(c.payload) % 4:
        raise C.StreamError("corrupt stream: payload is not whole words")
    times = model.schedule.chain(h["steps"])
    if _times_hash(times) != h.get("times_sha"):
        raise C.ModelMismatch("stream's chain times differ from this model's chain")
    images = [ImageRecord(np.zeros((hh, ww, cc), np.uint8), name, mode) for name, mode, hh, ww, cc in h["images"]]
    units = _units(images, model.channels, model.unet.multiple)
    members_of = _shape_groups(units)
    groups = h["groups"]
    # the groups must tile every shape group exactly, in order
    cover = {}
    for gid, pos, size in groups:
        if gid >= len(members_of) or size < 1 or cover.get(gid, 0) != pos or pos + size > len(members_of[gid]):
            raise C.StreamError("corrupt stream: groups do not match the images")
        cover[gid] = pos + size
    if any(cover.get(g, 0) != len(m) for g, m in enumerate(members_of)):
        raise C.StreamError("corrupt stream: groups do not cover the images")
    words = np.concatenate([seeded_words(h["seed"], h["seed_words_omitted"]),
                            np.frombuffer(c.payload, dtype="<u4").astype(np.uint32)])
    msg = Message.from_words(words)
    chain = DiffusionChain(model, times, h["grid_fraction"])
    threads = torch.get_num_threads()
    want = h.get("determinism", {}).get("threads")
    if isinstance(want, int) and 1 <= want <= 1024:
        torch.set_num_threads(want)
    try:
        for n in range(len(groups) - 1, -1, -1):
            gid, pos, size = groups[n]
            members = members_of[gid][pos:pos + size]
            shape = (size, *units[members[0]][2].shape)
            x, msg = bitswap.decode(msg, chain, shape, seed=h["seed"] + n, encrypt=h.get("encrypt", True),
                                    expect_initial=None)
            for j, m in enumerate(members):
                units[m][2][...] = x[j]
            if progress:
                progress(size)
    except BitsBackError as e:
        raise C.StreamError(f"decoding failed ({type(e).__name__}): the stream is damaged or was made "
                            f"under different conditionals (see the determinism contract)")
    finally:
        torch.set_num_threads(threads)
    left = msg.words()
    if not np.array_equal(left, seeded_words(h["seed"], h["seed_words"])):
        raise C.StreamError("decoding failed: the seed bits did not come back (damaged stream or "
                            "conditionals that differ from the encoder's)")
    # reassemble images from units (crop the padding)
    for i, j, u in units:
        im = images[i]
        hh, ww, _ = im.pixels.shape
        if model.channels == 1:
            im.pixels[:, :, j] = u[0, :hh, :ww]
        else:
            im.pixels[...] = u.transpose(1, 2, 0)[:hh, :ww]
    if pixel_checksum(images) != h["pixels_sha256"]:
        raise C.StreamError("decoded pixels fail the checksum (damaged stream or different conditionals)")
    return images
