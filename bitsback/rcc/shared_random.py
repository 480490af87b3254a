"""Shared randomness for reverse channel coding.

Encoder and decoder must draw the same candidates, on any machine and with
any numpy release. So every stream is keyed by explicit integers through
``SeedSequence`` (never ``hash()``), the raw PCG64 words are used directly
(their stream is stable across numpy versions, unlike ``Generator`` methods),
and normals come from the inverse CDF: branch-free, so a last-bit difference
in ``ndtri`` between builds moves a decoded value by an ulp instead of
desynchronising the stream the way a rejection sampler would.
"""
import numpy as np
from scipy.special import ndtri

# Domain tags keep the streams of different purposes apart.
TAG_PERMUTATION = 0x5243_4350  # "RCCP"
TAG_CANDIDATES = 0x5243_434E   # "RCCN"
TAG_ARRIVALS = 0x5243_4341     # "RCCA" (encoder only: PFR arrival times)

_U64 = (1 << 64) - 1


def check_key(seed: int, step: int) -> tuple:
    """Validate (seed, step) as non-negative 64-bit integers."""
    out = []
    for name, v in (("seed", seed), ("step", step)):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {type(v).__name__}")
        v = int(v)
        if not 0 <= v <= _U64:
            raise ValueError(f"{name} must lie in [0, 2**64), got {v}")
        out.append(v)
    return tuple(out)


def bit_generator(*key: int) -> np.random.PCG64:
    """PCG64 keyed by a tuple of non-negative Python ints (64-bit safe)."""
    return np.random.PCG64(np.random.SeedSequence([int(k) for k in key]))


def permutation(n: int, seed: int, step: int) -> np.ndarray:
    """Fisher-Yates on raw 64-bit words with integer multiply-shift: the same
    permutation for a given (seed, step, n) on every platform."""
    words = bit_generator(TAG_PERMUTATION, seed, step, n).random_raw(max(n - 1, 1))
    perm = list(range(n))
    for k, i in enumerate(range(n - 1, 0, -1)):
        j = (int(words[k]) * (i + 1)) >> 64
        perm[i], perm[j] = perm[j], perm[i]
    return np.asarray(perm, dtype=np.int64)


def batch_rows(dims: int) -> int:
    """Candidates per batch, a function of the chunk's dimension only (the
    decoder regenerates one batch): about 2^16 normals, 2^8..2^14 rows."""
    k = 16 - int(np.ceil(np.log2(max(dims, 1))))
    return 1 << min(14, max(8, k))


def candidate_normals(seed: int, step: int, chunk: int, batch: int,
                      rows: int, dims: int) -> np.ndarray:
    """The first ``rows`` candidates (standard normal, shape (rows, dims)) of
    batch ``batch`` of chunk ``chunk``; row r is candidate batch*B + r.

    A prefix of rows is the same whatever ``rows`` is asked for, so the
    decoder can stop at the row it needs."""
    raw = bit_generator(TAG_CANDIDATES, seed, step, chunk, batch).random_raw(rows * dims)
    u = (raw >> np.uint64(11)).astype(np.float64)
    u += 0.5
    u *= 2.0 ** -53                     # uniform on (0, 1), never 0 or 1
    return ndtri(u).reshape(rows, dims)


def arrival_increments(seed: int, step: int, chunk: int, batch: int, rows: int) -> np.ndarray:
    """Exp(1) gaps of the Poisson process that orders candidates (encoder only)."""
    g = np.random.Generator(bit_generator(TAG_ARRIVALS, seed, step, chunk, batch))
    return g.standard_exponential(rows)
