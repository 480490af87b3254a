"""Reverse channel coding (RCC) of a diagonal Gaussian sample.

Sends x ~ q = N(mu_q, diag s_q^2) to a decoder that knows only
p = N(mu_p, diag s_p^2) and a shared seed, in about KL(q || p) bits: the
"send x_t ~ q(x_t | x_{t+1}, x_0) using p_theta(x_t | x_{t+1})" step of
DDPM Algorithms 3-4 (section 4.3).

Method: capped Poisson functional representation (PFR) per chunk.
Dimensions are visited in a shared random order and cut into C chunks of
equal size, C = ceil(KL / bits_per_chunk) (:mod:`bitsback.rcc.layout`). For
a chunk of KL k bits the encoder draws N = 2^round(k + margin_bits)
candidates from p with shared randomness (:mod:`bitsback.rcc.shared_random`),
capped at 2^max_candidates_log2, and sends the index of the PFR winner
(:mod:`bitsback.rcc.search`) under a model of that index
(:mod:`bitsback.rcc.index`).

The sample is approximate. An uncapped PFR winner is an exact sample of q;
a capped one is not: log q/p has a spread of sqrt(2k) nats under q, so
q's upper tail of log q/p is out of reach and the winner leans towards p
(for a 16-bit chunk and 2 bits of margin its component along mu_q - mu_p is
~0.6 s.d. short, and its log2 q/p is ~4 bits below the KL), while its index
costs about the KL (~1 bit less under a code that knows the chunk's KL).
Per-dimension KLs beyond the cap (~20 bits) are searched at the cap and come
out far from q: give such steps more diffusion steps, not more bits here.
``info["log_ratio_bits"]`` (the sum of log2 q/p at the sent sample, equal to
the KL in expectation for an exact sample) measures this per call. In a diffusion chain the next step's q is
conditioned on the sample actually sent, so the chain stays consistent: the
approximation costs rate-distortion, never correctness. With a margin of
~3 sqrt(2k/ln 2) bits the winner is exact up to Monte Carlo precision.

Payload: one range-coded byte string, side information included and counted:
  c0 = ceil(KL / bits_per_chunk): its bit length (fixed prior) and the bits
     below its leading one; then C - c0, the chunks the encoder added so that
     none overflows the cap (mostly 0, ~1 bit);
  if C < dims: a flag "some chunk is halved" and, if set, one adaptive flag
     per splittable chunk in pre-order (rare, :mod:`bitsback.rcc.layout`);
  per chunk: the index octave (model: :func:`rcc_index.octave_prior`, a
     function of c0 and C) and the bits below the index's leading one;
  optionally check_bits of a CRC.
The tail is cut to the shortest byte string that still decodes and is not
shorter than the symbols' information; the decoder re-encodes what it read
and requires the same bytes, so a damaged payload raises :class:`RCCError`
with high probability (measured ~90% of truncations, ~80% of bit flips, at
no cost); check_bits=k makes it 1 - 2^-k and also catches a wrong seed. seed, step, shape and the three tuning parameters are not in
the payload: the decoder must be given the encoder's (the container keeps
them). For several steps use :func:`frame` / :func:`unframe`.
"""
import time
import zlib

import numpy as np

from bitsback.rcc.coder import RCCError, Reader, Writer, categorical, frame, unframe, uniform
from bitsback.rcc.index import join_index, mantissa_size, octave_prior, search_log2, split_index
from bitsback.rcc.layout import chunk_count, code_layout, gaussian_kl_bits, max_extra, overflow_rule
from bitsback.rcc.search import log_weight_coefs, pfr_search, regenerate
from bitsback.rcc.shared_random import check_key, permutation

__all__ = ["RCCError", "encode_gaussian", "decode_gaussian", "gaussian_kl_bits",
           "frame", "unframe"]

MAX_LOG2 = 23          # constriction's Uniform needs sizes < 2^24


def _code_check(io, check_bits: int, context: tuple) -> None:
    """Optional CRC (low check_bits bits) of everything coded so far and the context."""
    if check_bits == 0:
        return
    data = repr(context).encode() + np.array([s for s, _ in io.items], dtype="<i8").tobytes()
    want = zlib.crc32(data) & ((1 << check_bits) - 1)
    if io.code(want, uniform(1 << check_bits)) != want:
        raise RCCError("check bits differ: corrupted payload or other seed/step/parameters")


def _check_params(bits_per_chunk, margin_bits, lmax, check_bits):
    if int(check_bits) != check_bits or not 0 <= check_bits <= 16:
        raise ValueError("check_bits must be an integer in [0, 16]")
    if not (np.isfinite(bits_per_chunk) and bits_per_chunk > 0):
        raise ValueError("bits_per_chunk must be a positive number")
    if not np.isfinite(margin_bits):
        raise ValueError("margin_bits must be finite")
    if int(lmax) != lmax or not 0 <= lmax <= MAX_LOG2:
        raise ValueError(f"max_candidates_log2 must be an integer in [0, {MAX_LOG2}]")
    return float(bits_per_chunk), float(margin_bits), int(lmax), int(check_bits)


def _as_gaussian(mu, s, name):
    mu, s = np.broadcast_arrays(np.asarray(mu, dtype=np.float64), np.asarray(s, dtype=np.float64))
    if mu.size == 0:
        raise ValueError(f"{name} has no dimensions")
    if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(s)) and np.all(s > 0)):
        raise ValueError(f"{name}: means must be finite and scales finite and > 0")
    return mu, s


# ---- the payload, described once for both directions -----------------------
# Each function takes a Writer (which codes the symbols it is given) or a
# Reader (which ignores them and returns what it decodes).

def _count_model(dims: int):
    return categorical([2.0 ** (-0.5 * k) for k in range(dims.bit_length())])


def _extra_model(n: int):
    return categorical([float(n + 1)] + [1.0 / k for k in range(1, n + 1)])


def _code_count(io, counts, dims: int) -> tuple:
    """(c0, C): c0 by bit length (fixed prior) and the bits below its leading
    one, then C - c0 (mostly 0)."""
    c0, chunks = counts
    bl = io.code(c0.bit_length() - 1, _count_model(dims)) + 1
    if bl >= 2:
        c0 = (1 << (bl - 1)) + io.code(c0 - (1 << (bl - 1)), uniform(1 << (bl - 1)))
    else:
        c0 = 1
    if c0 > dims:
        raise RCCError(f"payload announces {c0} chunks for {dims} dimensions")
    extra = io.code(chunks - c0, _extra_model(max_extra(c0, dims)))
    return c0, c0 + extra


# ---- encoder ------------------------------------------------------------------

def encode_gaussian(mu_q, s_q, mu_p, s_p, seed: int, step: int, bits_per_chunk: float = 16.0,
                    margin_bits: float = 2.0, max_candidates_log2: int = 20, check_bits: int = 0):
    """Send a sample of N(mu_q, s_q^2) given N(mu_p, s_p^2) known to the decoder.

    check_bits > 0 appends that many bits of a CRC over the decoded symbols,
    seed, step, size and parameters, for a decoder that must not return
    garbage on its own (without it detection is free but not certain).

    Returns (payload bytes, the sample the decoder will reproduce bit for bit,
    info dict). Arrays broadcast together; the sample has their shape."""
    t_start = time.perf_counter()
    B, m, lmax, check_bits = _check_params(bits_per_chunk, margin_bits, max_candidates_log2,
                                           check_bits)
    seed, step = check_key(seed, step)
    mu_q, s_q = _as_gaussian(mu_q, s_q, "q")
    mu_p, s_p = _as_gaussian(mu_p, s_p, "p")
    mu_q, s_q, mu_p, s_p = np.broadcast_arrays(mu_q, s_q, mu_p, s_p)
    shape, dims = mu_q.shape, mu_q.size
    perm = permutation(dims, seed, step)
    mq, sq, mp, sp = (v.reshape(-1)[perm] for v in (mu_q, s_q, mu_p, s_p))
    kl = gaussian_kl_bits(mq, sq, mp, sp)
    c0, chunks = chunk_count(kl, B, m, lmax)

    io = Writer()
    _code_count(io, (c0, chunks), dims)
    leaves = code_layout(io, dims, chunks, overflow_rule(kl, m, lmax))
    n_side = len(io.items)
    a, b, c = log_weight_coefs(mq, sq, mp, sp)
    x = np.empty(dims)
    res = {k: [] for k in ("kl", "L", "index", "log_ratio", "dims")}
    for ci, (start, size) in enumerate(leaves):
        sl = slice(start, start + size)
        k_c = float(kl[sl].sum())
        L = search_log2(k_c, m, lmax)
        idx, z, lw = pfr_search(a[sl], b[sl], c[sl], L, (seed, step, ci))
        x[sl] = mp[sl] + sp[sl] * z
        for key, v in (("kl", k_c), ("L", L), ("index", idx), ("log_ratio", lw / np.log(2)),
                       ("dims", size)):
            res[key].append(v)
    octaves = categorical(octave_prior(c0, chunks, B, m, lmax))
    for i in res["index"]:
        e, mant, size = split_index(i)
        io.code(e, octaves)
        io.code(mant, uniform(size))
    _code_check(io, check_bits, (seed, step, dims, B, m, lmax))
    payload = io.payload()
    sample = np.empty(dims)
    sample[perm] = x
    side_bits, index_bits = io.bits(0, n_side), io.bits(n_side)
    info = {
        "kl_bits": float(kl.sum()),
        "payload_bits": 8 * len(payload),          # everything sent
        "side_bits": side_bits,                     # ideal length of C and split flags
        "index_bits": index_bits,                   # ideal length of the chunk indices
        "tail_bits": 8 * len(payload) - side_bits - index_bits,   # coder slack
        "chunks": len(leaves),
        "base_chunks": chunks,                      # before halving; ceil(KL/B) = c0
        "c0": c0,
        "kl_bits_per_chunk": np.array(res["kl"]),
        "chunk_dims": np.array(res["dims"]),
        "log2_candidates": np.array(res["L"]),
        "indices": np.array(res["index"], dtype=np.int64),
        "n_candidates": int(sum(1 << L for L in res["L"])),
        "log_ratio_bits": float(np.sum(res["log_ratio"])),
        "log_ratio_bits_per_chunk": np.array(res["log_ratio"]),
        "capped_chunks": int(sum(k + m >= lmax + 0.5 for k in res["kl"])),  # margin < margin_bits
        "encode_seconds": time.perf_counter() - t_start,
    }
    return payload, sample.reshape(shape), info


# ---- decoder ------------------------------------------------------------------

def decode_gaussian(payload: bytes, mu_p, s_p, seed: int, step: int, bits_per_chunk: float = 16.0,
                    margin_bits: float = 2.0, max_candidates_log2: int = 20,
                    check_bits: int = 0) -> np.ndarray:
    """Rebuild the encoder's sample from ``payload`` and p; RCCError if the
    payload does not decode exactly (truncated, corrupted, other parameters)."""
    B, m, lmax, check_bits = _check_params(bits_per_chunk, margin_bits, max_candidates_log2,
                                           check_bits)
    seed, step = check_key(seed, step)
    mu_p, s_p = _as_gaussian(mu_p, s_p, "p")
    shape, dims = mu_p.shape, mu_p.size
    perm = permutation(dims, seed, step)
    mp, sp = mu_p.reshape(-1)[perm], s_p.reshape(-1)[perm]
    io = Reader(payload)
    c0, chunks = _code_count(io, (0, 0), dims)
    leaves = code_layout(io, dims, chunks)
    octaves = categorical(octave_prior(c0, chunks, B, m, lmax))
    x = np.empty(dims)
    for ci, (start, size) in enumerate(leaves):
        e = io.code(0, octaves)
        mant = io.code(0, uniform(mantissa_size(e)))
        z = regenerate(join_index(e, mant), size, (seed, step, ci))
        x[start:start + size] = mp[start:start + size] + sp[start:start + size] * z
    _code_check(io, check_bits, (seed, step, dims, B, m, lmax))
    io.finish()
    sample = np.empty(dims)
    sample[perm] = x
    return sample.reshape(shape)
