"""How one reverse step of the progressive codec is written into a frame.

A frame is one range-coded payload (:mod:`bitsback.rcc.coder`) holding
several steps.  Per step: the jump to the target level (model peaked at the
previous jump), the chunk count (model peaked at the previous step's), the
extra chunks and split flags of :mod:`bitsback.rcc.step`, then per chunk the
index octave and mantissa of the capped PFR winner.  Symbol models use
integer weights so encoder and decoder build bit-identical tables.  This
mirrors :func:`bitsback.rcc.encode_gaussian` symbol for symbol except for
the count and octave models, because rcc writes one step per payload.
"""
from __future__ import annotations

import time
from functools import lru_cache

import numpy as np

from bitsback.rcc.coder import RCCError, categorical, uniform
from bitsback.rcc.index import join_index, mantissa_size, octave_weights, search_log2, split_index
from bitsback.rcc.layout import chunk_count, code_layout, gaussian_kl_bits, max_extra, overflow_rule
from bitsback.rcc.search import log_weight_coefs, pfr_search, regenerate
from bitsback.rcc.shared_random import permutation

# ---- symbol models (integer weights: last-bit float differences between
# machines cannot change them) ----------------------------------------------
_STOP = categorical([63.0, 1.0])
_SPLIT = categorical([63.0, 1.0])


def _int_weights(w) -> np.ndarray:
    w = np.asarray(w, dtype=np.float64)
    return np.maximum(1.0, np.round(w / w.max() * 65536.0))


def _jump_model(level: int, prev):
    """Jump j = level - target in 1..level: 1/j for the first step, then peaked at
    the previous jump (jumps shrink as the steps' KL grows down the chain)."""
    j = np.arange(1, level + 1, dtype=np.float64)
    if prev is None:
        w = 1.0 / j
    else:
        d = np.minimum(np.abs(j - prev), 40.0)
        w = np.where(j < prev, 0.25 ** d, 0.1 ** d)
    return categorical(_int_weights(w))


def _count_models(pred: float, dims: int):
    """(model over c0 in 1..hi [+ escape], hi): two-sided geometric around pred."""
    pred = round(pred * 16.0) / 16.0
    hi = int(min(dims, np.floor(3.0 * pred) + 8))
    c = np.arange(1, hi + 1, dtype=np.float64)
    w = list(np.exp(-np.abs(c - pred) / (0.3 + 0.1 * pred)))
    if hi < dims:
        w.append(1e-4)                             # escape: c0 > hi, then uniform
    return categorical(_int_weights(w)), hi


_BIT_LENGTH = categorical([1.0] * 41)


def _code_big(io, v: int) -> int:
    """A non-negative integer below 2^40: bit length, then 16-bit digits (constriction's
    uniform models stay small)."""
    n = io.code(int(v).bit_length(), _BIT_LENGTH)
    out, shift = 0, 0
    while shift < n:
        w = min(16, n - shift)
        out |= io.code((int(v) >> shift) & ((1 << w) - 1), uniform(1 << w)) << shift
        shift += w
    return out


def _code_count(io, c0: int, pred: float, dims: int) -> int:
    model, hi = _count_models(pred, dims)
    s = io.code(min(c0, hi + 1) - 1, model)
    if s < hi:
        return s + 1
    return hi + 1 + _code_big(io, c0 - hi - 1)


_NODES = np.linspace(-2.5, 2.5, 11)
_NODE_W = np.exp(-0.5 * _NODES ** 2)
OCTAVE_SPREAD = 0.2


@lru_cache(maxsize=256)
def _octave_model(c0: int, chunks: int, B: float, m: float, lmax: int):
    """Model of every chunk's index octave in a step of c0 = ceil(KL / B) cut into
    `chunks` chunks: a mixture of :func:`bitsback.rcc_index.octave_weights` over
    chunk KLs uniform in the bin B (c0 - 1, c0] / chunks times a log-normal of
    s.d. OCTAVE_SPREAD (0.2: measured 0.196 on Fashion-MNIST chains; rcc's own
    prior uses 0.5 and costs ~0.15 bits/chunk more here). Integer weights."""
    if c0 >= 2:
        comps = [(B * (c0 - 1 + u) / chunks * np.exp(OCTAVE_SPREAD * x), w)
                 for u in (0.1, 0.3, 0.5, 0.7, 0.9) for x, w in zip(_NODES, _NODE_W)]
    else:
        comps = [(B / chunks * 2.0 ** (-x), 1.0) for x in np.linspace(0.0, 7.0, 15)]
    return categorical(octave_weights(comps, m, lmax))


def _extra_model(n: int):
    """C - c0, the chunks added so that none overflows the search cap: mostly 0."""
    return categorical([32.0 * (n + 1)] + [1.0 / k for k in range(1, n + 1)])


class _Ctx:
    """What both sides know between steps: level, previous jump and chunk count."""

    def __init__(self, K: int):
        self.K, self.level, self.jump, self.c0 = K, None, None, None

    def count_pred(self, jump: int) -> float:
        """Expected chunk count: the previous one, scaled down where the chain
        goes back from merged steps to single ones (their KL is per level)."""
        if self.c0 is None:
            return 1.0
        if jump == 1 and self.jump is not None and self.jump > 1:
            return max(1.0, self.c0 / self.jump)
        return float(self.c0)


def _code_head(io, ctx: _Ctx, dims, jump=0, counts=(0, 0), rule=None):
    """Jump, chunk count and layout of one step (Writer: codes them; Reader: decodes)."""
    if ctx.level is None:
        jump = 0                                # the top latent: no jump symbol
    else:
        jump = io.code(jump - 1, _jump_model(ctx.level, ctx.jump)) + 1
    c0 = _code_count(io, counts[0], ctx.count_pred(max(jump, 1)), dims)
    if c0 > dims:
        raise RCCError(f"step announces {c0} chunks for {dims} dimensions")
    chunks = c0 + io.code(counts[1] - counts[0], _extra_model(max_extra(c0, dims)))
    leaves = code_layout(io, dims, chunks, rule, split_model=_SPLIT)
    return jump, c0, chunks, leaves


def _advance(ctx: _Ctx, jump: int, c0: int):
    ctx.level = ctx.K - 1 if ctx.level is None else ctx.level - jump
    if jump:
        ctx.jump = jump
    ctx.c0 = c0


# ---- encoder ------------------------------------------------------------------
def _encode_step(io, ctx, mq, sq, mp, sp, seed, target, params):
    """Append one step to Writer `io`; returns (sample, info)."""
    t0 = time.perf_counter()
    B, m, lmax = params["bits_per_chunk"], params["margin_bits"], params["max_candidates_log2"]
    shape, dims = mq.shape, mq.size
    perm = permutation(dims, seed, target)
    fq, fsq, fp, fsp = (v.reshape(-1)[perm] for v in (mq, sq, mp, sp))
    kl = gaussian_kl_bits(fq, fsq, fp, fsp)
    c0, chunks = chunk_count(kl, B, m, lmax)
    jump = 0 if ctx.level is None else ctx.level - target
    n0 = len(io.items)
    jump, c0, chunks, leaves = _code_head(io, ctx, dims, jump, (c0, chunks), overflow_rule(kl, m, lmax))
    n_side = len(io.items)
    a, b, c = log_weight_coefs(fq, fsq, fp, fsp)
    x = np.empty(dims)
    octaves = _octave_model(c0, chunks, B, m, lmax)
    lw_sum, cands, weight = 0.0, 0, 0
    for ci, (start, size) in enumerate(leaves):
        sl = slice(start, start + size)
        L = search_log2(float(kl[sl].sum()), m, lmax)
        idx, zc, lw = pfr_search(a[sl], b[sl], c[sl], L, (seed, target, ci))
        x[sl] = fp[sl] + fsp[sl] * zc
        e, mant, size_m = split_index(idx)
        io.code(e, octaves)
        io.code(mant, uniform(size_m))
        lw_sum, cands, weight = lw_sum + lw, cands + (1 << L), weight + e
    _advance(ctx, jump, c0)
    sample = np.empty(dims)
    sample[perm] = x
    info = {"level": target, "jump": jump, "kl_bits": float(kl.sum()), "log_ratio_bits": lw_sum / np.log(2.0),
            "side_bits": io.bits(n0, n_side), "index_bits": io.bits(n_side), "chunks": len(leaves),
            "n_candidates": cands, "weight": weight, "seconds": time.perf_counter() - t0}
    return sample.reshape(shape), info



def _decode_step(io, ctx, chain, z, eps, seed, shape, params):
    B, m, lmax = params["bits_per_chunk"], params["margin_bits"], params["max_candidates_log2"]
    dims = int(np.prod(shape))
    jump, c0, chunks, leaves = _code_head(io, ctx, dims)
    target = ctx.K - 1 if ctx.level is None else ctx.level - jump
    if target < 0:
        raise RCCError("a step jumps below the chain")
    if ctx.level is None:
        mp, sp = np.zeros(shape), np.ones(shape)
    else:
        mp, sp = chain.p(z, eps, ctx.level, target)
    perm = permutation(dims, seed, target)
    fp, fsp = mp.reshape(-1)[perm], sp.reshape(-1)[perm]
    octaves = _octave_model(c0, chunks, B, m, lmax)
    x = np.empty(dims)
    weight = 0
    for ci, (start, size) in enumerate(leaves):
        e = io.code(0, octaves)
        mant = io.code(0, uniform(mantissa_size(e)))
        zc = regenerate(join_index(e, mant), size, (seed, target, ci))
        x[start:start + size] = fp[start:start + size] + fsp[start:start + size] * zc
        weight += e
    _advance(ctx, jump, c0)
    sample = np.empty(dims)
    sample[perm] = x
    return sample.reshape(shape), weight


