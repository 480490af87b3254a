"""The `.ddpmc` file format shared by the lossless and the lossy codec.

Layout (little-endian):

    offset  size  field
    0       5     magic b"DDPMC"
    5       1     format version (1)
    6       1     mode: 0 lossless, 1 lossy
    7       1     flags: bit 0 = payload encrypted (keystream XOR)
    8       32    model fingerprint (sha256 of config + weights)
    40      4     header length H (<= 1 MiB)
    44      H     header: deflate-compressed UTF-8 JSON (chain, grid, images,
                  checksums, coder parameters; see each codec), at most
                  1 MiB once inflated
    44+H    4     CRC-32 of bytes 0 .. 44+H
    48+H    8     payload length P
    56+H    P     payload (codec-specific)
    56+H+P  4     CRC-32 of the payload

The CRCs catch damage before any decoding work starts; a checksum of the
original pixels inside the header catches a decode that went wrong anyway
(for instance conditionals computed differently on another machine).  Every
size is checked against what the file can hold before it is used, so a
hostile header cannot make the decoder allocate or loop without bound.
A lossy stream may be cut short on purpose: `parse(..., allow_truncated=True)`
then returns the payload prefix that is there.
"""
from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass

from .errors import CodecError

MAGIC = b"DDPMC"
VERSION = 1
MODES = {"lossless": 0, "lossy": 1}
MAX_HEADER = 1 << 20
MAX_PAYLOAD = 1 << 34
FLAG_ENCRYPTED = 1


class StreamError(CodecError):
    """A stream that is not ours, damaged, truncated or from a future version."""


class ModelMismatch(StreamError):
    """A stream made with another model than the one asked to decode it."""


@dataclass
class Container:
    mode: str
    fingerprint: str          # hex
    header: dict
    payload: bytes
    encrypted: bool = False
    truncated: bool = False


def pack(c: Container) -> bytes:
    fp = bytes.fromhex(c.fingerprint)
    if len(fp) != 32:
        raise ValueError("fingerprint must be 32 bytes of hex")
    raw = json.dumps(c.header, separators=(",", ":"), sort_keys=True).encode()
    if len(raw) > MAX_HEADER:
        raise ValueError("header too large")
    head = zlib.compress(raw, 9)
    pre = MAGIC + bytes([VERSION, MODES[c.mode], FLAG_ENCRYPTED if c.encrypted else 0]) + fp
    pre += struct.pack("<I", len(head)) + head
    out = pre + struct.pack("<I", zlib.crc32(pre)) + struct.pack("<Q", len(c.payload)) + c.payload
    return out + struct.pack("<I", zlib.crc32(c.payload))


def _no_constant(name):
    raise ValueError(f"{name} in header")


def parse(data: bytes, allow_truncated: bool = False) -> Container:
    """Validate and split a stream; raises StreamError with a one-line reason."""
    if len(data) == 0:
        raise StreamError("empty file: not a ddpm-codec stream")
    if data[:5] != MAGIC:
        if MAGIC.startswith(data):
            raise StreamError("truncated stream: header incomplete")
        raise StreamError("not a ddpm-codec stream (bad magic)")
    if len(data) < 44:
        raise StreamError("truncated stream: header incomplete")
    version, mode, flags = data[5], data[6], data[7]
    if version != VERSION:
        raise StreamError(f"stream format version {version} is not supported (this ddpm-codec reads {VERSION})"
                          if version > VERSION else f"unknown stream format version {version}")
    names = {v: k for k, v in MODES.items()}
    if mode not in names or flags & ~FLAG_ENCRYPTED:
        raise StreamError("corrupt stream: unknown mode or flags")
    (hlen,) = struct.unpack_from("<I", data, 40)
    if hlen > MAX_HEADER:
        raise StreamError("corrupt stream: header length out of range")
    if len(data) < 56 + hlen:
        raise StreamError("truncated stream: header incomplete")
    (crc,) = struct.unpack_from("<I", data, 44 + hlen)
    if zlib.crc32(data[:44 + hlen]) != crc:
        raise StreamError("corrupt stream: header checksum mismatch")
    try:
        inflater = zlib.decompressobj()
        raw = inflater.decompress(data[44:44 + hlen], MAX_HEADER)
        if inflater.unconsumed_tail or not inflater.eof:
            raise StreamError("corrupt stream: header too large or incomplete")
        header = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (zlib.error, ValueError, RecursionError):
        # ValueError covers bad UTF-8, bad JSON, NaN/Infinity and over-long integers;
        # RecursionError a deeply nested header
        raise StreamError("corrupt stream: header is not valid")
    if not isinstance(header, dict):
        raise StreamError("corrupt stream: header is not an object")
    (plen,) = struct.unpack_from("<Q", data, 48 + hlen)
    if plen > MAX_PAYLOAD:
        raise StreamError("corrupt stream: payload length out of range")
    start = 56 + hlen
    payload = data[start:start + plen]
    truncated = len(payload) < plen or len(data) < start + plen + 4
    if truncated:
        if not allow_truncated:
            raise StreamError(f"truncated stream: payload has {len(payload)} of {plen} bytes")
    else:
        if len(data) > start + plen + 4:
            raise StreamError("corrupt stream: trailing bytes after the payload")
        (pcrc,) = struct.unpack_from("<I", data, start + plen)
        if zlib.crc32(payload) != pcrc:
            raise StreamError("corrupt stream: payload checksum mismatch")
    return Container(names[mode], data[8:40].hex(), header, bytes(payload), bool(flags & FLAG_ENCRYPTED),
                     truncated)


def check_model(c: Container, fingerprint: str):
    if c.fingerprint != fingerprint:
        raise ModelMismatch(f"stream was made with model {c.fingerprint[:12]}, not with the model given "
                            f"({fingerprint[:12]}); pass the right --model")


def field(header: dict, key: str, kind, lo=None, hi=None):
    """Read a header field, checking its type and range."""
    if key not in header:
        raise StreamError(f"corrupt stream: header lacks {key!r}")
    v = header[key]
    ok = isinstance(v, kind) and not (kind is int and isinstance(v, bool))
    if ok and lo is not None and v < lo:
        ok = False
    if ok and hi is not None and v > hi:
        ok = False
    if not ok:
        raise StreamError(f"corrupt stream: header field {key!r} is invalid")
    return v
