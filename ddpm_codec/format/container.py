"""The `.ddpmc` file format shared by the lossless and the lossy codec.

Layout:

    offset  size  field
    0       5     magic b"DDPMC"
    5       1     format version (3; 2 stored the image list record by record,
                  1 had the keystream's old head rule)
    6       1     mode: 0 lossless, 1 lossy
    7       1     flags: bit 0 = payload encrypted (keystream XOR),
                  bit 1 = header deflated (used when that is smaller),
                  bit 2 = portable (version 5: exact conditionals; read into
                  the header dict as ``"portable": True``)
    8       8     model fingerprint (first 8 bytes of the SHA-256 of config + weights)
    16      v     header length H (varint, <= 64 KiB)
    ..      H     header: a compact binary dict (`ddpm_codec.format.compact`): chain,
                  grid, images (as runs, `ddpm_codec.format.image_table`), checksums,
                  coder parameters (see each codec)
    ..      2     low 16 bits of the CRC-32 of everything before
    ..      v     payload length P (varint)
    ..      P     payload (codec-specific)
    ..      4     CRC-32 of everything before

Why so small: a 28x28 image costs a few hundred bytes, so every byte of
framing shows in bits/dim (a JSON header cost 2-3 bits/dim per image).
The header's own CRC lets a lossy *prefix* (cut on purpose) be trusted up to
its payload; the final CRC catches damage before any decoding work starts,
and a checksum of the original pixels inside the header catches a decode
that went wrong anyway (e.g. conditionals computed differently elsewhere).
Every size is checked against what the file holds before it is used, so a
hostile header cannot make the decoder allocate or loop without bound.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from ddpm_codec.errors import CodecError
from ddpm_codec.format import compact, image_table, varint

MAGIC = b"DDPMC"
VERSION = 5
# 4 adds the lossless `classical` field (a version 3 stream is one without it); 5 adds
# `portable` (exact conditionals and symbol tables: a version 4 stream is a float one)
READABLE_VERSIONS = (3, 4, 5)
OLDER_VERSIONS = (1, 2)  # recognised, refused with a clear message
MODES = {"lossless": 0, "lossy": 1}
MAX_HEADER = 1 << 16
MAX_PAYLOAD = 1 << 40
FLAG_ENCRYPTED = 1
FLAG_DEFLATED = 2          # header bytes are raw-deflated (many near-identical image records)
FLAG_PORTABLE = 4          # version 5: exact conditionals, decodable on any machine
FINGERPRINT_BYTES = 8


class StreamError(CodecError):
    """A stream that is not ours, damaged, truncated or from a future version."""


class ModelMismatch(StreamError):
    """A stream made with another model than the one asked to decode it."""


@dataclass
class Container:
    mode: str
    fingerprint: str          # hex; only its first 8 bytes are stored
    header: dict
    payload: bytes
    encrypted: bool = False
    truncated: bool = False


def pack_raw(mode: int, fingerprint: bytes, head: bytes, payload: bytes, version: int = VERSION,
             flags: int = 0) -> bytes:
    """Frame given header bytes (tests use it to build damaged streams)."""
    pre = MAGIC + bytes([version, mode, flags]) + fingerprint[:FINGERPRINT_BYTES] + varint.encode(len(head)) + head
    pre += struct.pack("<H", zlib.crc32(pre) & 0xFFFF)
    out = pre + varint.encode(len(payload)) + payload
    return out + struct.pack("<I", zlib.crc32(out))


def stored_header(header: dict) -> dict:
    """The header as written: the image list (if any) as name and geometry runs
    (a list that is not records of five is left as is; the reader refuses it)."""
    imgs = header.get("images")
    if not (isinstance(imgs, list) and all(isinstance(r, list) and len(r) == 5 and isinstance(r[0], str)
                                           for r in imgs)):
        return header
    out = {k: v for k, v in header.items() if k != "images"}
    out.update(image_table.pack(header["images"]))
    return out


def pack(c: Container) -> bytes:
    flags = FLAG_ENCRYPTED if c.encrypted else 0
    if c.header.get("portable"):           # a flag bit, not a header field
        flags |= FLAG_PORTABLE
    head = compact.dumps(stored_header({k: v for k, v in c.header.items() if k != "portable"}))
    if len(head) > MAX_HEADER:
        raise ValueError("header too large")
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    small = z.compress(head) + z.flush()
    if len(small) < len(head):
        head, flags = small, flags | FLAG_DEFLATED
    return pack_raw(MODES[c.mode], bytes.fromhex(c.fingerprint), head, c.payload, flags=flags)


def _inflate(raw: bytes) -> bytes:
    d = zlib.decompressobj(-15)
    try:
        out = d.decompress(raw, MAX_HEADER + 1)
    except zlib.error:
        raise StreamError("corrupt stream: header does not inflate")
    if len(out) > MAX_HEADER or d.unconsumed_tail or not d.eof or d.unused_data:
        raise StreamError("corrupt stream: header does not inflate")
    return out


def header_end(data: bytes) -> int:
    """Offset of the payload length field (after the header CRC); StreamError if cut short."""
    hlen, pos = varint.decode(data, 16)
    if hlen is None:
        raise StreamError("truncated stream: header incomplete" if len(data) < 26 else
                          "corrupt stream: header length out of range")
    if hlen > MAX_HEADER:
        raise StreamError("corrupt stream: header length out of range")
    if len(data) < pos + hlen + 2:
        raise StreamError("truncated stream: header incomplete")
    return pos + hlen + 2


def parse(data: bytes, allow_truncated: bool = False) -> Container:
    """Validate and split a stream; raises StreamError with a one-line reason."""
    if len(data) == 0:
        raise StreamError("empty file: not a ddpm-codec stream")
    if data[:5] != MAGIC:
        if MAGIC.startswith(data):
            raise StreamError("truncated stream: header incomplete")
        raise StreamError("not a ddpm-codec stream (bad magic)")
    if len(data) < 17:
        raise StreamError("truncated stream: header incomplete")
    version, mode, flags = data[5], data[6], data[7]
    if version not in READABLE_VERSIONS:
        if version in OLDER_VERSIONS:
            raise StreamError(f"stream format version {version} was written by an older ddpm-codec "
                              f"(this one reads version {VERSION})")
        raise StreamError(f"stream format version {version} is not supported (this ddpm-codec reads {VERSION})"
                          if version > VERSION else f"unknown stream format version {version}")
    names = {v: k for k, v in MODES.items()}
    known = FLAG_ENCRYPTED | FLAG_DEFLATED | (FLAG_PORTABLE if version >= 5 else 0)
    if mode not in names or flags & ~known:
        raise StreamError("corrupt stream: unknown mode or flags")
    end = header_end(data)
    (crc,) = struct.unpack_from("<H", data, end - 2)
    if zlib.crc32(data[:end - 2]) & 0xFFFF != crc:
        raise StreamError("corrupt stream: header checksum mismatch")
    hstart = end - 2 - varint.decode(data, 16)[0]
    raw = data[hstart:end - 2]
    if flags & FLAG_DEFLATED:
        raw = _inflate(raw)
    try:
        header = compact.loads(raw)
    except compact.CompactError as e:
        raise StreamError(f"corrupt stream: header is not valid ({e})")
    if not isinstance(header, dict) or "portable" in header:
        raise StreamError("corrupt stream: header is not an object" if not isinstance(header, dict)
                          else "corrupt stream: bad header field 'portable'")
    if flags & FLAG_PORTABLE:
        header["portable"] = True
    if "images" in header or ("names" in header) != ("geoms" in header):
        raise StreamError("corrupt stream: bad image list")
    if "names" in header:
        try:
            header["images"] = image_table.unpack(header.pop("names"), header.pop("geoms"))
        except image_table.ImageTableError as e:
            raise StreamError(f"corrupt stream: bad image list ({e})")
    plen, start = varint.decode(data, end)
    if plen is None:
        if not allow_truncated:
            raise StreamError("truncated stream: payload length missing")
        plen, start = 0, len(data)
    if plen > MAX_PAYLOAD:
        raise StreamError("corrupt stream: payload length out of range")
    payload = data[start:start + plen]
    truncated = len(payload) < plen or len(data) < start + plen + 4
    if truncated:
        if not allow_truncated:
            raise StreamError(f"truncated stream: payload has {len(payload)} of {plen} bytes")
    else:
        if len(data) > start + plen + 4:
            raise StreamError("corrupt stream: trailing bytes after the payload")
        (fcrc,) = struct.unpack_from("<I", data, start + plen)
        if zlib.crc32(data[:start + plen]) != fcrc:
            raise StreamError("corrupt stream: checksum mismatch")
    return Container(names[mode], data[8:16].hex(), header, bytes(payload), bool(flags & FLAG_ENCRYPTED),
                     truncated)


def check_model(c: Container, fingerprint: str):
    if c.fingerprint != fingerprint[:2 * FINGERPRINT_BYTES]:
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
