"""A compact binary form of JSON-like headers (None, bool, int, float, str,
list, dict), so a stream's header costs tens of bytes, not hundreds.

One tag byte per value (a list of two or more non-negative ints is packed
under one tag); ints as varints (sign in the tag), floats as float32
when exact else float64, lowercase even-length hex strings as raw bytes,
and dict keys from a fixed table (one byte) or spelled out.  The reader is
strict and bounded: nesting depth, lengths against the bytes left, finite
floats and valid UTF-8, so any byte string either decodes or raises
`CompactError`.
"""
from __future__ import annotations

import math
import re
import struct

from ddpm_codec.format import varint

NONE, FALSE, TRUE, UINT, NINT, F32, F64, STR, HEX, LIST, DICT, UINTS = range(12)
MAX_DEPTH = 32
# keys of the codecs' headers (the index is the encoding). Frozen: a key not in the table is
# spelled out under the number len(KEYS) + its length, so even appending one changes how
# every spelled-out key reads (a format change)
KEYS = ("codec", "steps", "times_sha", "grid_fraction", "seed", "encrypt", "seed_mode", "seed_codecs",
        "seed_words", "seed_words_omitted", "groups", "images", "pixels_sha256", "determinism", "torch",
        "threads", "dtype", "device", "rcc", "min_step_bits", "lossless_tail", "format", "frame_bits",
        "crcs", "stop_level", "params", "bits_per_chunk", "margin_bits", "max_candidates_log2", "final_crc",
        "coarse", "topups", "seed_pick", "names", "geoms", "tile", "pixel_groups")
_KEY_INDEX = {k: i for i, k in enumerate(KEYS)}
_HEX = re.compile(r"(?:[0-9a-f]{2})+")


class CompactError(ValueError):
    """Bytes that are not a valid compact value."""


def dumps(value) -> bytes:
    out = bytearray()
    _write(out, value, 0)
    return bytes(out)


def _write(out, v, depth):
    if depth > MAX_DEPTH:
        raise ValueError("header nested too deeply")
    if v is None:
        out.append(NONE)
    elif v is True or v is False:
        out.append(TRUE if v else FALSE)
    elif isinstance(v, int):
        out.append(UINT if v >= 0 else NINT)
        out += varint.encode(v if v >= 0 else -v - 1)
    elif isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError("non-finite float in header")
        try:
            f32 = struct.pack("<f", v)
        except OverflowError:
            f32 = None
        if f32 is not None and struct.unpack("<f", f32)[0] == v:
            out.append(F32)
            out += f32
        else:
            out.append(F64)
            out += struct.pack("<d", v)
    elif isinstance(v, str):
        if _HEX.fullmatch(v):
            out.append(HEX)
            raw = bytes.fromhex(v)
            out += varint.encode(len(raw)) + raw
        else:
            raw = v.encode("utf-8")
            out.append(STR)
            out += varint.encode(len(raw)) + raw
    elif isinstance(v, (list, tuple)) and len(v) >= 2 and all(is_uint(x) for x in v):
        out.append(UINTS)                      # packed: no tag byte per item
        out += varint.encode(len(v))
        for item in v:
            out += varint.encode(item)
    elif isinstance(v, (list, tuple)):
        out.append(LIST)
        out += varint.encode(len(v))
        for item in v:
            _write(out, item, depth + 1)
    elif isinstance(v, dict):
        out.append(DICT)
        out += varint.encode(len(v))
        for k, item in v.items():
            if not isinstance(k, str):
                raise ValueError("header keys must be strings")
            if k in _KEY_INDEX:
                out += varint.encode(_KEY_INDEX[k])
            else:
                raw = k.encode("utf-8")
                out += varint.encode(len(KEYS) + len(raw)) + raw
            _write(out, item, depth + 1)
    else:
        raise ValueError(f"cannot store {type(v).__name__} in a header")


def is_uint(v) -> bool:
    """A non-negative int that is not a bool (what UINTS packs; what header checks want)."""
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def loads(data: bytes):
    value, pos = _read(data, 0, 0)
    if pos != len(data):
        raise CompactError("trailing bytes")
    return value


def _count(data, pos):
    n, pos = varint.decode(data, pos)
    if n is None or n > len(data) - pos:
        raise CompactError("length out of range")
    return n, pos


def _read(data, pos, depth):
    if depth > MAX_DEPTH:
        raise CompactError("nested too deeply")
    if pos >= len(data):
        raise CompactError("cut short")
    tag = data[pos]
    pos += 1
    if tag == NONE:
        return None, pos
    if tag in (FALSE, TRUE):
        return tag == TRUE, pos
    if tag in (UINT, NINT):
        n, pos = varint.decode(data, pos)
        if n is None:
            raise CompactError("bad integer")
        return (n if tag == UINT else -n - 1), pos
    if tag in (F32, F64):
        size = 4 if tag == F32 else 8
        if pos + size > len(data):
            raise CompactError("cut short")
        v = struct.unpack_from("<f" if tag == F32 else "<d", data, pos)[0]
        if not math.isfinite(v):
            raise CompactError("non-finite float")
        return v, pos + size
    if tag in (STR, HEX):
        n, pos = _count(data, pos)
        raw = data[pos:pos + n]
        if tag == HEX:
            return raw.hex(), pos + n
        try:
            return raw.decode("utf-8"), pos + n
        except UnicodeDecodeError:
            raise CompactError("bad UTF-8")
    if tag == LIST:
        n, pos = _count(data, pos)
        items = []
        for _ in range(n):
            v, pos = _read(data, pos, depth + 1)
            items.append(v)
        return items, pos
    if tag == UINTS:
        n, pos = _count(data, pos)
        items = []
        for _ in range(n):
            v, pos = varint.decode(data, pos)
            if v is None:
                raise CompactError("bad integer")
            items.append(v)
        return items, pos
    if tag == DICT:
        n, pos = _count(data, pos)
        out = {}
        for _ in range(n):
            k, pos = varint.decode(data, pos)
            if k is None:
                raise CompactError("bad key")
            if k < len(KEYS):
                key = KEYS[k]
            else:
                size = k - len(KEYS)
                if size > len(data) - pos:
                    raise CompactError("key out of range")
                try:
                    key = data[pos:pos + size].decode("utf-8")
                except UnicodeDecodeError:
                    raise CompactError("bad UTF-8 key")
                pos += size
            out[key], pos = _read(data, pos, depth + 1)
        return out, pos
    raise CompactError(f"unknown tag {tag}")
