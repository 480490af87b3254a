"""Pixels under the discretized Gaussian decoder of DDPM eq. 13.

Pixel ``v`` in {0..255} is ``x = v/127.5 - 1`` in model units; its bin is
``[x - 1/255, x + 1/255]``, except that bin 0 starts at -inf and bin 255 ends
at +inf (open edge bins). Means and scales come in model units; internally
they are converted to pixel units (bins of width 1 centred on ``v``).

Coding: a window of ``W = min(256, 2h+1)`` values around ``rint(mean)``
(``h = ceil(8 scale)`` in pixel units) shifted to stay inside [0, 255], one
float64 probability per value (CDF differences), plus an escape column that
carries the mass outside the window when ``W < 256``; an escaped pixel is
then coded uniformly with 8 bits. The encoder only pushes pixels, so the
window's leaky 2**-24 floors cost at most ~W * 2**-24 * log2(e) bits.
Ideal bits count a symbol whose float64 mass is below 2**-24 at 24 bits,
the floor constriction actually gives it.
Rows are processed in chunks to bound memory.
"""
import numpy as np
from scipy.special import ndtr

from bitsback import exact as exact_math

_RADIUS = 8.0
FLOOR = 2.0 ** -24  # constriction's smallest probability: ideal bits are capped at 24
_CHUNK = 2048  # rows per table: keeps tables in cache


def _tables(mean, scale):
    m = (np.asarray(mean, np.float64).reshape(-1) + 1.0) * 127.5
    s = np.asarray(scale, np.float64).reshape(-1) * 127.5
    if not (np.all(np.isfinite(m)) and np.all(s > 0) and np.all(np.isfinite(s))):
        raise ValueError("pixel means must be finite and scales positive and finite")
    h = int(np.ceil(_RADIUS * s.max())) if s.size else 1
    w = min(256, 2 * max(h, 1) + 1)
    start = np.clip(np.rint(m) - h, 0, 256 - w).astype(np.int64)
    return m, s, w, start


def _probs(m, s, w, start, exact=False):
    """Window masses: one tail probability T = ndtr(-|e|) per bin edge e, then
    differences that never cancel catastrophically; ``exact``: differences of
    the portable normal CDF (:mod:`bitsback.exact`), the same on every machine."""
    v = start[:, None] + np.arange(w + 1)[None, :]  # lower edges of w bins + top edge
    e = np.where(v == 0, -np.inf, np.where(v == 256, np.inf, v - 0.5))
    e = (e - m[:, None]) / s[:, None]
    if exact:
        return _exact_probs(e, w, start)
    t = ndtr(-np.abs(e))
    neg = e <= 0
    lo_neg, hi_neg = neg[:, :-1], neg[:, 1:]
    p = np.where(hi_neg, t[:, 1:] - t[:, :-1],
                 np.where(lo_neg, 1.0 - t[:, 1:] - t[:, :-1], t[:, :-1] - t[:, 1:]))
    if w < 256:
        below = np.where(start > 0, np.where(neg[:, 0], t[:, 0], 1.0 - t[:, 0]), 0.0)
        above = np.where(start + w < 256, np.where(neg[:, -1], 1.0 - t[:, -1], t[:, -1]), 0.0)
        p = np.concatenate([p, (below + above)[:, None]], axis=1)
    bad = ~(p.sum(axis=1) > 0)
    p[bad] = 1.0  # cannot happen for finite inputs; keep rows codable anyway
    return p


def _exact_probs(e, w, start):
    cdf = exact_math.normal_cdf(e)
    p = cdf[:, 1:] - cdf[:, :-1]
    if w < 256:
        below = np.where(start > 0, cdf[:, 0], 0.0)
        above = np.where(start + w < 256, 1.0 - cdf[:, -1], 0.0)
        p = np.concatenate([p, (below + above)[:, None]], axis=1)
    return p


def _chunks(n):
    return [slice(i, min(i + _CHUNK, n)) for i in range(0, n, _CHUNK)]


def push(msg, x, mean, scale, exact: bool = False) -> np.ndarray:
    """Push uint8 pixels ``x`` (any shape); return ideal bits per pixel
    (``exact``: portable tables, see :func:`_probs`)."""
    x = np.asarray(x)
    shape = x.shape
    mean = np.broadcast_to(np.asarray(mean, np.float64), shape)
    scale = np.broadcast_to(np.asarray(scale, np.float64), shape)
    m, s, w, start = _tables(mean, scale)
    v = x.reshape(-1).astype(np.int64)
    bits = np.empty(v.size)
    for sl in reversed(_chunks(v.size)):
        p = _probs(m[sl], s[sl], w, start[sl], exact)
        sym = v[sl] - start[sl]
        esc = (sym < 0) | (sym >= w)
        sym = np.where(esc, w, sym)
        msg.push_uniform(v[sl][esc], 256)
        msg.push_categorical(sym, p)
        pr = p[np.arange(sym.size), sym] / p.sum(axis=1)
        bits[sl] = -np.log2(np.maximum(pr, FLOOR)) + np.where(esc, 8.0, 0.0)
    return bits.reshape(shape)


def pop(msg, mean, scale, shape=None, exact: bool = False):
    """Pop uint8 pixels of the shape of ``mean`` (or ``shape``); return (x, bits)."""
    shape = np.broadcast_shapes(np.shape(mean), np.shape(scale), shape or ())
    mean = np.broadcast_to(np.asarray(mean, np.float64), shape)
    scale = np.broadcast_to(np.asarray(scale, np.float64), shape)
    m, s, w, start = _tables(mean, scale)
    out = np.empty(m.size, np.int64)
    bits = np.empty(m.size)
    for sl in _chunks(m.size):
        p = _probs(m[sl], s[sl], w, start[sl], exact)
        sym = msg.pop_categorical(p).astype(np.int64)
        esc = sym >= w
        vals = start[sl] + sym
        if esc.any():
            vals[esc] = msg.pop_uniform(256, int(esc.sum()))
        out[sl] = vals
        pr = p[np.arange(sym.size), sym] / p.sum(axis=1)
        bits[sl] = -np.log2(np.maximum(pr, FLOOR)) + np.where(esc, 8.0, 0.0)
    return out.astype(np.uint8).reshape(shape), bits.reshape(shape)
