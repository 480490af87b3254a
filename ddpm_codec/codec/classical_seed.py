"""The classical seed of a lossless stream: real data for the first pops.

A bits-back stream's first pop reads bits that nobody pushed.  Random
initial bits would be dead weight in the file; instead the first units of a
stream are coded with a classical lossless codec (HiLLoC seeded its chain
with FLIF) and those bytes form the bottom of the ANS stack, so the chain's
first pops read real data, which the decoder gets back after the chain and
decodes last.

PNG, WebP and JPEG XL (a bare codestream): the image size of each can be
read before decoding (`classical.jpegxl_size` parses JPEG XL's SizeHeader, and
only the first frame is decoded), so a crafted seed cannot be a decompression bomb.  A simple
lossless WebP is stored as its bare VP8L bitstream ("vp8l"): the 20-byte RIFF
wrapper is rebuilt on decoding (0.2 bits/dim of a 28x28 image).
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image as PILImage

from ddpm_codec.format import container, varint

SEED_CODECS = ("png", "webp", "vp8l", "jxl")     # the header stores the index
SEED_JXL_EFFORT = 7      # cjxl -e 7: within ~1% of effort 9 on small units, several times faster
PICK_AMONG = 16


def pick_first_seed(units, order, code_of=None) -> int:
    """Position in `order` of the unit to code first as the seed: the one with
    the largest classical code among the first PICK_AMONG of the first shape.

    Why: the first chain group needs a fixed number of bits in flight (about
    7 bits/dim on the main grid, 3.6 on the coarsest), so one rich seed unit
    often does what two plain ones would, and each seed unit costs its
    classical code's excess over the model.  `code_of(unit index)`: the unit's
    `classical_best`, where the caller has it already."""
    if len(order) < 2:
        return 0
    shape = units[order[0]].pixels.shape
    cands = [j for j in range(min(PICK_AMONG, len(order))) if units[order[j]].pixels.shape == shape]
    code_of = code_of or (lambda k: classical_best(units[k].pixels))
    sizes = [len(code_of(order[j])[1]) for j in cands]
    return cands[int(np.argmax(sizes))]


def classical_best(unit: np.ndarray) -> tuple[str, bytes]:
    """(codec, bytes) of the smallest exact classical coding of a (C, H, W) unit."""
    from ddpm_codec.io import classical
    hwc = unit.transpose(1, 2, 0)
    best = None
    for codec in ("png", "webp", "jpegxl"):         # vp8l: derived from webp below
        if not classical.codec_status(codec)[0] or (codec == "webp" and hwc.shape[2] == 2):
            continue
        try:
            data = classical.encode_lossless(codec, hwc if hwc.shape[2] != 1 else hwc[:, :, 0],
                                             jxl_effort=SEED_JXL_EFFORT)
        except Exception:  # noqa: BLE001 - a codec that cannot take this layout is simply not a candidate
            if codec != "jpegxl":
                raise
            continue
        bits = bare_vp8l(data) if codec == "webp" else None
        if bits is not None:
            codec, data = "vp8l", bits
        if codec == "jpegxl":
            if classical.jpegxl_size(data) != (hwc.shape[1], hwc.shape[0]):
                continue                  # not a bare codestream whose size we can check: not a seed
            codec = "jxl"
        if best is None or len(data) < len(best[1]):
            best = (codec, data)
    return best


def bare_vp8l(webp: bytes) -> bytes | None:
    """The VP8L bitstream of a simple-format lossless WebP file, else None."""
    if len(webp) < 21 or webp[:4] != b"RIFF" or webp[8:16] != b"WEBPVP8L":
        return None
    bits = webp[20:20 + int.from_bytes(webp[16:20], "little")]
    return bits if riff_vp8l(bits) == webp else None      # exactly the file riff_vp8l rebuilds


def riff_vp8l(bits: bytes) -> bytes:
    """Inverse of :func:`bare_vp8l`: the WebP file around a VP8L bitstream."""
    chunk = b"VP8L" + len(bits).to_bytes(4, "little") + bits + b"\0" * (len(bits) & 1)
    return b"RIFF" + (4 + len(chunk)).to_bytes(4, "little") + b"WEBP" + chunk


def seed_words(codes) -> np.ndarray:
    """Classical codes, length-prefixed, padded to whole 32-bit words."""
    buf = b"".join(varint.encode(len(c)) + c for c in codes)
    buf += b"\0" * (-len(buf) % 4)
    return np.frombuffer(buf, dtype="<u4").astype(np.uint32)


def unseed(words: np.ndarray, count: int) -> list[bytes]:
    """Inverse of :func:`seed_words`; StreamError on anything left over."""
    buf = words.astype("<u4").tobytes()
    out, pos = [], 0
    for _ in range(count):
        n, pos = varint.decode(buf, pos)
        if n is None or pos + n > len(buf):
            raise container.StreamError("corrupt stream: the seed data does not parse")
        out.append(buf[pos:pos + n])
        pos += n
    if any(buf[pos:]):
        raise container.StreamError("corrupt stream: stray bytes after the seed data")
    return out


def decode_unit(codec: str, code: bytes, unit: np.ndarray) -> None:
    """Decode one seed image into the (C, H, W) array `unit`, checking its
    size before any pixels are decoded."""
    from ddpm_codec.io import classical
    if codec == "vp8l":
        codec, code = "webp", riff_vp8l(code)
    try:
        if codec == "jxl":
            codec = "jpegxl"
            if classical.jpegxl_size(code) != (unit.shape[2], unit.shape[1]):
                raise container.StreamError("corrupt stream: a seed image has the wrong size")
        else:
            with PILImage.open(io.BytesIO(code)) as probe:
                if probe.size != (unit.shape[2], unit.shape[1]):
                    raise container.StreamError("corrupt stream: a seed image has the wrong size")
        px = classical.decode(codec, code, unit.shape[0])
    except container.StreamError:
        raise
    except Exception:  # noqa: BLE001 - any failure of a third-party decoder on damaged data
        raise container.StreamError("corrupt stream: a seed image does not decode")
    if px.shape != (unit.shape[1], unit.shape[2], unit.shape[0]):
        raise container.StreamError("corrupt stream: a seed image has the wrong size")
    unit[...] = px.transpose(2, 0, 1)
