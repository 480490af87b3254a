"""The header's image list, stored as runs: a 100-image stream's names and
geometries cost a few bytes, not a few hundred.

In memory (and to every codec) the list is ``[[name, mode, H, W, C], ...]``.
In the header it is two run lists:

  geoms: [[count, mode, H, W, C], ...]   consecutive images of one geometry,
         or the int S alone for one grayscale S x S image (mode "L"): 1 byte,
         not 14, which matters to a stream of one small image
  names: items, each one of
         "name"                          one name
         ["name", count]                 count images of that name (e.g. "")
         ["prefix", start, count, width, "suffix"]
                                         prefix + str(start + i) + suffix,
                                         zero-padded to width (0: not padded)

so ``image0.png ... image99.png`` or ``fashion_00000.png ...`` is one run.
Decoding is strict and bounded: counts add up on both sides and the total
stays under MAX_IMAGES before anything is expanded.
"""
from __future__ import annotations

import re

from ddpm_codec.format.compact import is_uint

MAX_IMAGES = 1 << 20
MAX_WIDTH = 20
MAX_NAME_CHARS = 1 << 25     # all names expanded: a few bytes of runs cannot ask for gigabytes
_NUMBERED = re.compile(r"^(.*?)(\d+)(\D*)$", re.DOTALL)


class ImageTableError(ValueError):
    """A run list that is not a valid image table."""


def _numbered(name: str):
    """(prefix, number, width, suffix) of a name ending in digits (before a
    non-digit suffix), width 0 when the number is not zero-padded."""
    m = _NUMBERED.match(name)
    if not m or len(m.group(2)) > MAX_WIDTH:
        return None
    digits = m.group(2)
    width = len(digits) if len(digits) > 1 and digits[0] == "0" else 0
    return m.group(1), int(digits), width, m.group(3)


def _format(prefix: str, number: int, width: int, suffix: str) -> str:
    return f"{prefix}{str(number).zfill(width)}{suffix}"


def _continues(run, name: str) -> bool:
    prefix, start, count, width, suffix = run
    return name == _format(prefix, start + count, width, suffix) and (width == 0 or
                                                                       len(str(start + count)) <= width)


def pack_names(names: list[str]) -> list:
    out = []
    for name in names:
        last = out[-1] if out else None
        if isinstance(last, list) and len(last) == 5 and _continues(last, name):
            last[2] += 1
            continue
        if isinstance(last, list) and len(last) == 2 and last[0] == name:
            last[1] += 1
            continue
        if isinstance(last, str):
            if last == name:
                out[-1] = [name, 2]
                continue
            a = _numbered(last)
            if a and _continues([a[0], a[1], 1, a[2], a[3]], name):
                out[-1] = [a[0], a[1], 2, a[2], a[3]]
                continue
        out.append(name)
    return out


def pack_geoms(records) -> list | int:
    if len(records) == 1:
        _, mode, h, w, c = records[0]
        if mode == "L" and h == w and c == 1 and is_uint(h):
            return h
    out = []
    for _, mode, h, w, c in records:
        if out and out[-1][1:] == [mode, h, w, c]:
            out[-1][0] += 1
        else:
            out.append([1, mode, h, w, c])
    return out


def pack(records) -> dict:
    """[[name, mode, H, W, C], ...] -> {"names": runs, "geoms": runs}."""
    return {"names": pack_names([r[0] for r in records]), "geoms": pack_geoms(records)}


def _uint(v, hi) -> bool:
    return is_uint(v) and v <= hi


def _name_chars(item) -> int:
    """Characters the run expands to (an upper bound for numbered runs)."""
    if isinstance(item, str):
        return len(item)
    if len(item) == 2:
        return item[1] * len(item[0])
    return item[2] * (len(item[0]) + len(item[4]) + max(item[3], len(str(item[1] + item[2]))))


def _name_count(item) -> int:
    if isinstance(item, str):
        return 1
    if isinstance(item, list) and len(item) == 2 and isinstance(item[0], str) and _uint(item[1], MAX_IMAGES) \
            and item[1] >= 1:
        return item[1]
    if isinstance(item, list) and len(item) == 5 and isinstance(item[0], str) and isinstance(item[4], str) \
            and _uint(item[1], 1 << 62) and _uint(item[2], MAX_IMAGES) and item[2] >= 1 \
            and _uint(item[3], MAX_WIDTH):
        return item[2]
    raise ImageTableError("bad name run")


def unpack(names, geoms) -> list:
    """Inverse of :func:`pack`; ImageTableError on anything malformed."""
    if is_uint(geoms) and geoms >= 1:
        geoms = [[1, "L", geoms, geoms, 1]]
    if not isinstance(names, list) or not isinstance(geoms, list):
        raise ImageTableError("bad image list")
    total = 0
    for g in geoms:
        if not (isinstance(g, list) and len(g) == 5 and _uint(g[0], MAX_IMAGES) and g[0] >= 1):
            raise ImageTableError("bad geometry run")
        total += g[0]
        if total > MAX_IMAGES:
            raise ImageTableError("image count out of range")
    if sum(_name_count(item) for item in names) != total:
        raise ImageTableError("names and geometries disagree")
    if sum(_name_chars(item) for item in names) > MAX_NAME_CHARS:
        raise ImageTableError("names too long")
    flat = []
    for item in names:
        if isinstance(item, str):
            flat.append(item)
        elif len(item) == 2:
            flat.extend([item[0]] * item[1])
        else:
            prefix, start, count, width, suffix = item
            flat.extend(_format(prefix, start + i, width, suffix) for i in range(count))
    out, k = [], 0
    for count, mode, h, w, c in geoms:
        for _ in range(count):
            out.append([flat[k], mode, h, w, c])
            k += 1
    return out
