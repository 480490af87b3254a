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

The codec: :class:`GaussianStep` describes those symbols once, for a
:class:`~bitsback.rcc.coder.Writer` (``encode``) and a
:class:`~bitsback.rcc.coder.Reader` (``decode``); how the chunk count and
the octaves are modelled, and the "some chunk is halved" flag, are its
parameters, so a format that codes several steps per payload with models of
its own (ddpm_codec's progressive lossy frames) uses the same codec.
:func:`encode_gaussian` / :func:`decode_gaussian` are one step per payload
with the models above.
"""
import time
import zlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from bitsback.rcc.coder import Model, RCCError, Reader, Writer, categorical, frame, unframe, uniform
from bitsback.rcc.index import join_index, mantissa_size, octave_prior, search_log2, split_index
from bitsback.rcc.layout import chunk_count, code_layout, gaussian_kl_bits, max_extra, overflow_rule
from bitsback.rcc.search import log_weight_coefs, pfr_search, regenerate
from bitsback.rcc.shared_random import check_key, permutation

__all__ = ["RCCError", "GaussianStep", "StepSymbols", "SentStep", "BitLengthCount", "encode_gaussian",
           "decode_gaussian", "gaussian_kl_bits", "frame", "unframe"]

MAX_LOG2 = 23          # constriction's Uniform needs sizes < 2^24


# ---- how the chunk count is coded: one object per payload format ---------------

class BitLengthCount:
    """c0 = ceil(KL / B) by its bit length (fixed prior) and the bits below its
    leading one; C - c0 mostly 0.  The count code of a standalone payload."""

    def code_c0(self, io, c0: int, dims: int) -> int:
        bit_lengths = categorical([2.0 ** (-0.5 * k) for k in range(dims.bit_length())])
        bl = io.code(c0.bit_length() - 1, bit_lengths) + 1
        if bl < 2:
            return 1
        return (1 << (bl - 1)) + io.code(c0 - (1 << (bl - 1)), uniform(1 << (bl - 1)))

    def extra_model(self, n: int) -> Model:
        return categorical([float(n + 1)] + [1.0 / k for k in range(1, n + 1)])


def prior_octaves(c0: int, chunks: int, bits_per_chunk: float, margin_bits: float, lmax: int) -> Model:
    """The octave model of :func:`bitsback.rcc.index.octave_prior`."""
    return categorical(octave_prior(c0, chunks, bits_per_chunk, margin_bits, lmax))


# ---- what one step's payload says ---------------------------------------------

@dataclass
class StepSymbols:
    """What a step's symbols tell both sides: the counts, the chunks (start,
    size) in the shared order, and the PFR winner's index in every chunk."""
    c0: int                       # ceil(KL / bits_per_chunk)
    base_chunks: int              # C, before halving
    leaves: list
    indices: list

    @property
    def octaves(self) -> list:
        return [int(i).bit_length() for i in self.indices]


@dataclass
class SentStep(StepSymbols):
    """StepSymbols plus what only the encoder knows."""
    kl_bits: float = 0.0
    side_bits: float = 0.0        # ideal length of the side information (counts, layout)
    index_bits: float = 0.0       # ideal length of the chunk indices (and check bits)
    chunk_kl_bits: list = field(default_factory=list)
    log2_candidates: list = field(default_factory=list)
    log_weights: list = field(default_factory=list)     # log q/p at each chunk's winner, nats

    @property
    def n_candidates(self) -> int:
        return sum(1 << L for L in self.log2_candidates)


# ---- the codec ------------------------------------------------------------------

@dataclass(frozen=True)
class GaussianStep:
    """RCC of one diagonal-Gaussian sample keyed by (seed, step): the side
    information (chunk count, C - c0, halving flags), then per chunk the PFR
    winner's index octave and mantissa, then optionally check bits.

    ``encode(writer, q, p, seed, step)`` appends the symbols and returns (the
    sample, :class:`SentStep`); ``decode(reader, p, seed, step)`` reads them
    and returns (the same sample, :class:`StepSymbols`).  q and p are (mean,
    s.d.) arrays of one shape."""
    bits_per_chunk: float
    margin_bits: float
    max_candidates_log2: int
    count_code: object = BitLengthCount()        # code_c0(io, c0, dims) and extra_model(n)
    octave_model: Callable = prior_octaves        # (c0, C, B, margin, lmax) -> the chunks' octave model
    split_model: Model | None = None              # "some chunk is halved" (None: the layout's 15:1)
    check_bits: int = 0

    def encode(self, writer: Writer, q, p, seed: int, step: int, side_from: int | None = None):
        """side_from: where this step's side information starts in ``writer.items``
        if the caller coded some of it (default: where this call starts)."""
        m, lmax = self.margin_bits, self.max_candidates_log2
        shape, dims = p[0].shape, p[0].size
        perm = permutation(dims, seed, step)
        mq, sq, mp, sp = (v.reshape(-1)[perm] for v in (*q, *p))
        kl = gaussian_kl_bits(mq, sq, mp, sp)
        side_from = len(writer.items) if side_from is None else side_from
        c0, chunks, leaves = self._code_side(writer, dims, chunk_count(kl, self.bits_per_chunk, m, lmax),
                                             overflow_rule(kl, m, lmax))
        sent = SentStep(c0, chunks, leaves, [], kl_bits=float(kl.sum()))
        index_from = len(writer.items)
        a, b, c = log_weight_coefs(mq, sq, mp, sp)
        octaves = self.octave_model(c0, chunks, self.bits_per_chunk, m, lmax)
        x = np.empty(dims)
        for ci, (start, size) in enumerate(leaves):
            chunk = slice(start, start + size)
            chunk_kl = float(kl[chunk].sum())
            L = search_log2(chunk_kl, m, lmax)
            index, z, log_weight = pfr_search(a[chunk], b[chunk], c[chunk], L, (seed, step, ci))
            x[chunk] = mp[chunk] + sp[chunk] * z
            sent.indices.append(self._code_index(writer, index, octaves))
            sent.chunk_kl_bits.append(chunk_kl)
            sent.log2_candidates.append(L)
            sent.log_weights.append(log_weight)
        self._code_check(writer, seed, step, dims)
        sent.side_bits, sent.index_bits = writer.bits(side_from, index_from), writer.bits(index_from)
        return _unpermute(x, perm, shape), sent

    def decode(self, reader: Reader, p, seed: int, step: int):
        shape, dims = p[0].shape, p[0].size
        perm = permutation(dims, seed, step)
        mp, sp = (v.reshape(-1)[perm] for v in p)
        c0, chunks, leaves = self._code_side(reader, dims)
        symbols = StepSymbols(c0, chunks, leaves, [])
        octaves = self.octave_model(c0, chunks, self.bits_per_chunk, self.margin_bits, self.max_candidates_log2)
        x = np.empty(dims)
        for ci, (start, size) in enumerate(leaves):
            index = self._code_index(reader, 0, octaves)
            chunk = slice(start, start + size)
            x[chunk] = mp[chunk] + sp[chunk] * regenerate(index, size, (seed, step, ci))
            symbols.indices.append(index)
        self._code_check(reader, seed, step, dims)
        return _unpermute(x, perm, shape), symbols

    # Each part below takes a Writer (which codes the symbols it is given) or a
    # Reader (which ignores them and returns what it decodes).

    def _code_side(self, io, dims: int, counts=(0, 0), rule=None) -> tuple:
        """(c0, C, chunk leaves): c0, then C - c0, then the halving flags."""
        c0 = self.count_code.code_c0(io, counts[0], dims)
        if c0 > dims:
            raise RCCError(f"step announces {c0} chunks for {dims} dimensions")
        chunks = c0 + io.code(counts[1] - c0, self.count_code.extra_model(max_extra(c0, dims)))
        return c0, chunks, code_layout(io, dims, chunks, rule, split_model=self.split_model)

    @staticmethod
    def _code_index(io, index: int, octaves: Model) -> int:
        """A chunk's index: its octave, then the bits below its leading one."""
        e, mantissa, _ = split_index(index)
        e = io.code(e, octaves)
        return join_index(e, io.code(mantissa, uniform(mantissa_size(e))))

    def _code_check(self, io, seed: int, step: int, dims: int) -> None:
        """Optional CRC (low check_bits bits) of everything coded so far and the context."""
        if self.check_bits == 0:
            return
        context = (seed, step, dims, self.bits_per_chunk, self.margin_bits, self.max_candidates_log2)
        data = repr(context).encode() + np.array([s for s, _ in io.items], dtype="<i8").tobytes()
        want = zlib.crc32(data) & ((1 << self.check_bits) - 1)
        if io.code(want, uniform(1 << self.check_bits)) != want:
            raise RCCError("check bits differ: corrupted payload or other seed/step/parameters")


def _unpermute(x: np.ndarray, perm: np.ndarray, shape) -> np.ndarray:
    sample = np.empty(x.size)
    sample[perm] = x
    return sample.reshape(shape)


# ---- one step per payload ----------------------------------------------------------

def _checked_codec(bits_per_chunk, margin_bits, lmax, check_bits) -> GaussianStep:
    if int(check_bits) != check_bits or not 0 <= check_bits <= 16:
        raise ValueError("check_bits must be an integer in [0, 16]")
    if not (np.isfinite(bits_per_chunk) and bits_per_chunk > 0):
        raise ValueError("bits_per_chunk must be a positive number")
    if not np.isfinite(margin_bits):
        raise ValueError("margin_bits must be finite")
    if int(lmax) != lmax or not 0 <= lmax <= MAX_LOG2:
        raise ValueError(f"max_candidates_log2 must be an integer in [0, {MAX_LOG2}]")
    return GaussianStep(float(bits_per_chunk), float(margin_bits), int(lmax), check_bits=int(check_bits))


def _as_gaussian(mu, s, name):
    mu, s = np.broadcast_arrays(np.asarray(mu, dtype=np.float64), np.asarray(s, dtype=np.float64))
    if mu.size == 0:
        raise ValueError(f"{name} has no dimensions")
    if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(s)) and np.all(s > 0)):
        raise ValueError(f"{name}: means must be finite and scales finite and > 0")
    return mu, s


def encode_gaussian(mu_q, s_q, mu_p, s_p, seed: int, step: int, bits_per_chunk: float = 16.0,
                    margin_bits: float = 2.0, max_candidates_log2: int = 20, check_bits: int = 0):
    """Send a sample of N(mu_q, s_q^2) given N(mu_p, s_p^2) known to the decoder.

    check_bits > 0 appends that many bits of a CRC over the decoded symbols,
    seed, step, size and parameters, for a decoder that must not return
    garbage on its own (without it detection is free but not certain).

    Returns (payload bytes, the sample the decoder will reproduce bit for bit,
    info dict). Arrays broadcast together; the sample has their shape."""
    t_start = time.perf_counter()
    codec = _checked_codec(bits_per_chunk, margin_bits, max_candidates_log2, check_bits)
    seed, step = check_key(seed, step)
    mu_q, s_q = _as_gaussian(mu_q, s_q, "q")
    mu_p, s_p = _as_gaussian(mu_p, s_p, "p")
    mu_q, s_q, mu_p, s_p = np.broadcast_arrays(mu_q, s_q, mu_p, s_p)
    writer = Writer()
    sample, sent = codec.encode(writer, (mu_q, s_q), (mu_p, s_p), seed, step)
    payload = writer.payload()
    log_ratio = np.array([w / np.log(2) for w in sent.log_weights])
    info = {
        "kl_bits": sent.kl_bits,
        "payload_bits": 8 * len(payload),          # everything sent
        "side_bits": sent.side_bits,                # ideal length of C and split flags
        "index_bits": sent.index_bits,              # ideal length of the chunk indices
        "tail_bits": 8 * len(payload) - sent.side_bits - sent.index_bits,   # coder slack
        "chunks": len(sent.leaves),
        "base_chunks": sent.base_chunks,            # before halving; ceil(KL/B) = c0
        "c0": sent.c0,
        "kl_bits_per_chunk": np.array(sent.chunk_kl_bits),
        "chunk_dims": np.array([size for _, size in sent.leaves]),
        "log2_candidates": np.array(sent.log2_candidates),
        "indices": np.array(sent.indices, dtype=np.int64),
        "n_candidates": int(sent.n_candidates),
        "log_ratio_bits": float(np.sum(log_ratio)),
        "log_ratio_bits_per_chunk": log_ratio,
        "capped_chunks": int(sum(k + codec.margin_bits >= codec.max_candidates_log2 + 0.5
                                 for k in sent.chunk_kl_bits)),   # margin < margin_bits
        "encode_seconds": time.perf_counter() - t_start,
    }
    return payload, sample, info


def decode_gaussian(payload: bytes, mu_p, s_p, seed: int, step: int, bits_per_chunk: float = 16.0,
                    margin_bits: float = 2.0, max_candidates_log2: int = 20,
                    check_bits: int = 0) -> np.ndarray:
    """Rebuild the encoder's sample from ``payload`` and p; RCCError if the
    payload does not decode exactly (truncated, corrupted, other parameters)."""
    codec = _checked_codec(bits_per_chunk, margin_bits, max_candidates_log2, check_bits)
    seed, step = check_key(seed, step)
    mu_p, s_p = _as_gaussian(mu_p, s_p, "p")
    reader = Reader(payload)
    sample, _ = codec.decode(reader, (mu_p, s_p), seed, step)
    reader.finish()
    return sample
