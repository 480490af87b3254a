"""LEB128 varints: the length prefixes of framed payloads (one implementation for the
whole toolkit: RCC frames here, the stream container in ddpm_codec.format)."""
from __future__ import annotations


def encode(n: int) -> bytes:
    if n < 0:
        raise ValueError("varints are unsigned")
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def decode(buf: bytes, pos: int):
    """(value, next position), or (None, pos) if the varint is cut short or over 63 bits."""
    n, shift = 0, 0
    while True:
        if pos >= len(buf) or shift > 56:
            return None, pos
        b = buf[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, pos
