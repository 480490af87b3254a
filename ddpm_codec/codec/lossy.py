"""Progressive lossy codec (DDPM Algorithms 3-4) by reverse channel coding.

The encoder sends z_T ~ q(z_T | x) using p(z_T) = N(0, I), then walks down
the chain: holding z_t (as the decoder does), it sends z_s ~ q(z_s | z_t, x)
using p(z_s | z_t) (Gaussians of different variances when the model's
variance is 'transition').  Any prefix of frames decodes to z_t and so to
x0_hat(z_t) (eq. 15), or to a sample of p(x | z_t) when asked.

Each step is the capped Poisson functional representation of
:mod:`bitsback.rcc.step`: dimensions in a shared random order cut into chunks of
about `bits_per_chunk` bits of KL, per chunk 2^(KL + margin) candidates
drawn from p with randomness keyed by (seed, target level, chunk), the
winner's index entropy coded.  The seed is in the stream header.  The
sample is the documented approximation of :mod:`bitsback.rcc.step`: the capped
search leans towards p.  What a step really delivers is log q/p at the sent
sample (``log_ratio_bits``), on average below its KL; the next step's q is
conditioned on the sample actually sent, so the chain stays consistent and
pays for the lean later (chain KLs above the evaluator's), and its x0_hat
at a given level is a little worse than the evaluator's.  Measured
(benchmarks/bench_lossy.py): payload ~1.5x the evaluator's rate at the same
level; the per-chunk cost of this RCC (index bits minus log q/p, ~3 bits
per ~10-bit chunk) is most of it.

Merging steps: a step whose KL is small pays side information and chunk
overhead for little, so the encoder jumps from t straight to the first chain
level s below it whose KL reaches `min_step_bits` (one network call at z_t
gives p(z_s | z_t) for every s).  Coarser steps cost KL of their own (the
merged chain is a coarser discretisation), hence a small threshold.

Frames: several steps share one range-coded payload (:mod:`bitsback.rcc.coder`)
so that the coder's tail and the length prefix are paid per frame, not per
step.  Per step the symbols are: the jump (model peaked at the previous
jump), c0 = ceil(KL / bits_per_chunk) (model peaked at the previous step's
count), the extra chunks and split flags of :mod:`bitsback.rcc.step`, then per
chunk the index octave (mixture prior fitted to the chunk-KL spread of
diffusion steps) and mantissa.  A frame ends once the bit lengths of its
chunk indices add up to `frame_bits` (an integer rule the decoder follows),
at level 0, or with an explicit stop flag (coded only where neither holds).
Each step after its jump is one :class:`bitsback.rcc.step.GaussianStep`,
the codec :func:`bitsback.rcc.step.encode_gaussian` uses for one step per
payload, here with the frame's count and octave models; the frame format,
written once for both directions, is :mod:`ddpm_codec.codec.lossy_frames`.

Unit stream = frames, each varint(len) payload; with `lossless_tail`, one
more frame after level 0 codes x with the discretized decoder p(x | z_t0)
(ANS).  Every byte is in the stream and counted.  The header records the
seed, the RCC parameters with `frame_bits`, and a CRC of each unit's final
reconstruction, so a complete decode with other numerics, another seed or a
damaged payload ends in a StreamError instead of a silently different image
(a prefix cannot be checked: it decodes to what its frames say).
"""
from __future__ import annotations

import time

import numpy as np

from ddpm_codec.codec.lossy_frames import (
    FRAME_BITS,
    MIN_STEP_BITS,
    RCC_PARAMS,
    ChainConditionals,
    decode_unit,
    encode_unit,
    iter_unit,
    length_prefixed,
    shown_pixels,
    unit_crc,
)
from ddpm_codec.codec.units import ImageRecord, check_image_list, pixel_checksum, place_unit
from ddpm_codec.codec.units import times_hash as _times_hash
from ddpm_codec.codec.units import to_units as _units
from ddpm_codec.diffusion.model import DiffusionModel
from ddpm_codec.format import container, varint

__all__ = ["encode", "decode", "progressive", "encode_unit", "decode_unit", "iter_unit",
           "RCC_PARAMS", "MIN_STEP_BITS", "FRAME_BITS", "CODEC", "FORMAT"]

_Chain = ChainConditionals          # the name tests/test_lossy.py uses

CODEC = "rcc-progressive"
FORMAT = 2


def _rcc_field(params: dict, frame_bits: int) -> list:
    """The header's "rcc": [bits_per_chunk, margin_bits, max_candidates_log2, frame_bits]."""
    return [float(params["bits_per_chunk"]), float(params["margin_bits"]), int(params["max_candidates_log2"]),
            int(frame_bits)]


# header fields left out at these values (36 bytes, 0.37 bits/dim of a 28x28 image);
# changing one changes the format: bump container.VERSION
HEADER_DEFAULTS = {"codec": CODEC, "rcc": _rcc_field(RCC_PARAMS, FRAME_BITS)}


# ---- streams of images --------------------------------------------------------
def _rcc_params(h) -> tuple:
    """(RCC parameters, frame_bits) from the header's "rcc": [B, margin, lmax, frame_bits]."""
    r = h.get("rcc")
    if not (isinstance(r, list) and len(r) == 4 and
            all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in r)):
        raise container.StreamError("corrupt stream: bad RCC parameters")
    b, m, lmax, fb = r
    if not (0.5 <= b <= 64 and -16 <= m <= 16 and isinstance(lmax, int) and 0 <= lmax <= 23
            and isinstance(fb, int) and 1 <= fb <= 1 << 20):
        raise container.StreamError("corrupt stream: RCC parameters out of range")
    return {"bits_per_chunk": float(b), "margin_bits": float(m), "max_candidates_log2": lmax}, fb


def encode(images: list[ImageRecord], model: DiffusionModel, fingerprint: str, steps: int = 100,
           bpd: float | None = None, stop_at: int | None = None, min_step_bits: float = MIN_STEP_BITS,
           lossless_tail: bool = False, params: dict | None = None, frame_bits: int = FRAME_BITS,
           keep_latents: bool = False):
    """A lossy stream of `images`; returns (bytes, per-unit reports).

    bpd: stop before the payload of a unit passes bpd * (its C*H*W) bits;
    stop_at: code the chain down to latent index stop_at (0 = all)."""
    params = dict(RCC_PARAMS, **(params or {}))
    units = _units(images, model.channels, model.unet.multiple)
    times = model.schedule.chain(steps)
    chain = ChainConditionals(model, times)
    checksum = pixel_checksum(images)
    seed = int(checksum[:8], 16)
    stop_level = 0 if stop_at is None else int(np.clip(stop_at, 0, chain.K - 1))
    if lossless_tail and (stop_level != 0 or bpd is not None):
        raise ValueError("the lossless tail needs the whole chain (no --stop-at / --bpd)")
    body, reports = bytearray(), []
    for n, u in enumerate(unit.pixels for unit in units):
        t0 = time.perf_counter()
        max_bits = None if bpd is None else bpd * u.size
        data, rep = encode_unit(chain, u, seed + n, params, min_step_bits, frame_bits, stop_level, max_bits,
                                lossless_tail, keep_latents)
        rep["encode_seconds"] = time.perf_counter() - t0
        stored = length_prefixed(data)
        rep["offset"] = len(body) + len(stored) - len(data)      # unit data start within the payload
        body += stored
        reports.append(rep)
    header = {"codec": CODEC, "format": FORMAT, "steps": int(steps), "times_sha": _times_hash(times),
              "seed": seed, "final_crc": [r["final_crc"] for r in reports],
              "rcc": _rcc_field(params, frame_bits),
              "images": [[im.name, im.mode, *map(int, im.pixels.shape)] for im in images]}
    if lossless_tail:
        header["lossless_tail"] = True
    header = {k: v for k, v in header.items() if k not in HEADER_DEFAULTS or v != HEADER_DEFAULTS[k]}
    return container.pack(container.Container("lossy", fingerprint, header, bytes(body))), reports


def _open(data: bytes, model: DiffusionModel, fingerprint: str, max_bytes=None):
    c = container.parse(data if max_bytes is None else data[:max_bytes], allow_truncated=True)
    if c.mode != "lossy":
        raise container.StreamError("not a lossy stream")
    container.check_model(c, fingerprint)
    h = {**HEADER_DEFAULTS, **c.header}
    if container.field(h, "codec", str) != CODEC or container.field(h, "format", int) != FORMAT:
        raise container.StreamError("unsupported lossy codec or stream format")
    steps = container.field(h, "steps", int, 1, 100000)
    container.field(h, "seed", int, 0, (1 << 32) - 1)
    if "lossless_tail" in h:
        container.field(h, "lossless_tail", bool)
    check_image_list(h, len(c.payload))      # sizes bounded by the payload
    params, frame_bits = _rcc_params(h)
    try:
        times = model.schedule.chain(steps)
    except ValueError as e:
        raise container.StreamError(f"corrupt stream: its chain does not fit this model ({e})")
    if _times_hash(times) != h.get("times_sha"):
        raise container.ModelMismatch("stream's chain times differ from this model's chain")
    images = [ImageRecord(pixels=np.zeros((hh, ww, cc), np.uint8), name=name, mode=mode) for name, mode, hh, ww, cc in h["images"]]
    units = _units(images, model.channels, model.unet.multiple)
    crcs = h.get("final_crc")
    if not (isinstance(crcs, list) and len(crcs) == len(units) and
            all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 32 for v in crcs)):
        raise container.StreamError("corrupt stream: bad final checks")
    cfg = {"params": params, "frame_bits": frame_bits, "tail": bool(h.get("lossless_tail", False)),
           "seed": h["seed"], "crc": crcs}
    return c, cfg, ChainConditionals(model, times), images, units


def _unit_slices(body: bytes, count: int, strict: bool):
    """Each unit's (start within the payload, bytes, whether they are all there);
    a unit cut short gives the bytes that are there. strict (a complete
    container): every unit must be whole and nothing may follow the last."""
    pos = 0
    for _ in range(count):
        length, start = varint.decode(body, pos)
        whole = length is not None and start + length <= len(body)
        if strict and not whole:
            raise container.StreamError("corrupt stream: a unit is longer than the payload")
        yield start, (b"" if length is None else body[start:start + length]), whole
        pos = len(body) if length is None else min(len(body), start + length)
    if strict and pos != len(body):
        raise container.StreamError("corrupt stream: trailing bytes after the last unit")


def decode(data: bytes, model: DiffusionModel, fingerprint: str, stop_at=None, max_bytes=None,
           stochastic=False, latents: list | None = None) -> list[ImageRecord]:
    """Images from a stream or any prefix of it (max_bytes), down to latent index
    stop_at at most. latents, if a list, receives per unit [(level, z), ...]."""
    c, cfg, chain, images, units = _open(data, model, fingerprint, max_bytes)
    stop_level = None if stop_at is None else int(stop_at)
    strict = not c.truncated
    for n, (unit, (_, sub, whole)) in enumerate(zip(units, _unit_slices(c.payload, len(units), strict))):
        u = unit.pixels
        lat = [] if latents is not None else None
        r = decode_unit(chain, sub, u.shape, cfg["seed"] + n, cfg["params"], cfg["frame_bits"], cfg["tail"],
                        stop_level, stochastic, latents=lat)
        if latents is not None:
            latents.append(lat)
        if strict and r["kind"] != "stopped":
            if not r["complete"]:
                raise container.StreamError("corrupt stream: a frame runs past its unit")
            if unit_crc(r["x0_hat"]) != cfg["crc"][n]:
                raise container.StreamError("decoded image fails the stream's check (damaged stream, other seed, "
                                            "or conditionals computed differently from the encoder's)")
        place_unit(images[unit.image], unit, r["pixels"])
    return images


def progressive(data: bytes, model: DiffusionModel, fingerprint: str):
    """Every truncation point of a complete stream in one decoding pass: per unit a
    list of dicts (end: file byte offset where the frame ends, so that
    decode(max_bytes=end) shows this image; level; pixels (C, H, W))."""
    c, cfg, chain, images, units = _open(data, model, fingerprint)
    start = len(data) - 4 - len(c.payload)             # payload offset in the file
    out = []
    for n, (unit, (offset, sub, _)) in enumerate(zip(units, _unit_slices(c.payload, len(units), True))):
        u = unit.pixels
        base = start + offset
        pts = []
        for kind, end, level, z, eps in iter_unit(chain, sub, u.shape, cfg["seed"] + n, cfg["params"],
                                                  cfg["frame_bits"], cfg["tail"]):
            px = shown_pixels(chain, kind, z, eps, level, u.shape)
            pts.append({"end": base + end, "level": level, "pixels": px})
        out.append(pts)
    return out

