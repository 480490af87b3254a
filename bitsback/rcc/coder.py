"""Entropy coding of an RCC payload: a range coder with a canonical, trimmed tail.

constriction's range coder flushes whole 32-bit words (about 16 bits of
slack per payload). The decoder here pads a payload with 0xFF bytes, so the
encoder may cut it to the shortest byte string that still decodes to the
same symbols (measured: about 3 bits over the information content). The
decoder re-encodes what it decoded and requires the very same bytes back:
a truncated, extended or corrupted payload then fails loudly with high
probability, at no cost in bits.
"""
from functools import lru_cache

import constriction
import numpy as np

from bitsback import varint
from bitsback.errors import BitsBackError

_model = constriction.stream.model
_queue = constriction.stream.queue
_PAD = b"\xff"
SLACK_BITS = 4.0


class RCCError(BitsBackError, ValueError):
    """A reverse-channel-coding payload or stream that cannot be decoded as given
    (truncated, corrupted, or read with other parameters than it was written with)."""


class Model:
    """A constriction model plus its ideal code lengths (for accounting)."""
    __slots__ = ("cm", "p")

    def __init__(self, cm, p):
        self.cm, self.p = cm, p

    def bits(self, symbol: int) -> float:
        return float(-np.log2(self.p[symbol])) if isinstance(self.p, np.ndarray) else self.p


_CERTAIN = Model(None, 0.0)      # a one-symbol alphabet: nothing to code


@lru_cache(maxsize=64)
def uniform(size: int) -> Model:
    if size == 1:
        return _CERTAIN
    return Model(_model.Uniform(int(size)), float(np.log2(size)))


def categorical(weights) -> Model:
    w = np.asarray(weights, dtype=np.float64)
    if w.size == 1:
        return _CERTAIN
    return Model(_model.Categorical(w, perfect=False), w / w.sum())


def _words(data: bytes) -> np.ndarray:
    data = bytes(data) + _PAD * ((-len(data)) % 4) + _PAD * 8
    return np.frombuffer(data, dtype=">u4").astype(np.uint32)


def _decodes_to(data: bytes, items) -> bool:
    dec = _queue.RangeDecoder(_words(data))
    try:
        return all(int(dec.decode(m.cm)) == s for s, m in items)
    except Exception:       # constriction rejects some invalid states
        return False


def encode_items(items) -> bytes:
    """[(symbol, model), ...] -> the shortest payload that decodes to them and
    is no more than SLACK_BITS shorter than their information content (so a
    truncated payload, whose tail decodes from the padding into improbable
    symbols, is not canonical)."""
    if not items:
        return b""
    enc = _queue.RangeEncoder()
    for s, m in items:
        enc.encode(np.array([s], dtype=np.int32), m.cm)
    full = enc.get_compressed().astype(">u4").tobytes()
    info = round(sum(m.bits(s) for s, m in items), 6)
    shortest = max(0, int(np.ceil((info - SLACK_BITS) / 8.0)))
    best = None
    for n in range(len(full), min(shortest, len(full)) - 1, -1):
        if not _decodes_to(full[:n], items):
            break
        best = n
    if best is None:                       # cannot happen with a sound coder
        raise RuntimeError("range coder output does not decode with 0xFF padding")
    return full[:best]


class Writer:
    """Collects (symbol, model) pairs; shares ``code`` with :class:`Reader` so
    that one function describes the payload for both directions."""

    def __init__(self):
        self.items = []

    def code(self, symbol: int, model) -> int:
        if model.cm is None:
            assert symbol == 0
            return 0
        self.items.append((int(symbol), model))
        return int(symbol)

    def payload(self) -> bytes:
        return encode_items(self.items)

    def bits(self, start: int = 0, stop=None) -> float:
        """Ideal code length of items[start:stop]."""
        return sum(m.bits(s) for s, m in self.items[start:stop])


class Reader:
    """Sequential decoder that records what it read, for the canonical check."""

    def __init__(self, payload: bytes):
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise TypeError("payload must be bytes")
        self.payload = bytes(payload)
        self._dec = _queue.RangeDecoder(_words(self.payload))
        self.items = []

    def code(self, symbol, model) -> int:
        """Decode one symbol (``symbol`` is ignored: it is what the writer knew)."""
        if model.cm is None:
            return 0
        try:
            s = int(self._dec.decode(model.cm))
        except Exception as e:
            raise RCCError(f"payload cannot be decoded: {e}") from e
        self.items.append((s, model))
        return s

    def finish(self) -> None:
        """Raise RCCError unless the payload is exactly what the encoder writes."""
        if encode_items(self.items) != self.payload:
            raise RCCError("payload is truncated, corrupted, or was written with other "
                           "parameters (seed, step, chunking, dims) than the decoder's")


# ---- framing: concatenate per-step payloads -------------------------------

def frame(payloads) -> bytes:
    """Concatenate payloads, each prefixed by its byte length as an LEB128 varint."""
    return b"".join(varint.encode(len(p)) + bytes(p) for p in payloads)


def unframe(data: bytes) -> list:
    """Inverse of :func:`frame`; RCCError on a truncated or malformed stream."""
    data, pos, out = bytes(data), 0, []
    while pos < len(data):
        n, after = varint.decode(data, pos)
        if n is None:
            raise RCCError("stream ends inside a length prefix" if after >= len(data) or
                           all(b & 0x80 for b in data[pos:]) else "length prefix longer than 64 bits")
        pos = after
        if pos + n > len(data):
            raise RCCError(f"frame {len(out)} needs {n} bytes, {len(data) - pos} left")
        out.append(data[pos:pos + n])
        pos += n
    return out
