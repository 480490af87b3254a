"""Which dimensions form which chunk: a layout the decoder can rebuild.

The decoder knows p but not q, hence not where the KL sits. Dimensions are
therefore visited in a shared pseudo-random order (so that a chunk's KL is a
sum over scattered dimensions and concentrates around its mean), cut into C
chunks of equal dimension count, C = ceil(KL / bits_per_chunk) or a little
more if that keeps every chunk under the search cap. Only C is sent (about
log2 C + 3 bits), plus one flag per chunk in the rare steps where a chunk's
KL still overflows the cap far enough to be halved (recursively).

Cutting at equal KL instead would need the cut positions: about 4 bits per
chunk (25% of a 16-bit chunk) for chi-square-like KL per dimension. Equal
sizes leave the chunk KLs uneven instead (s.d. 20-50% of the mean, more for
heavy-tailed KL maps); the index code absorbs that at 0.3-1.3 bits/chunk.
"""
import numpy as np


def gaussian_kl_bits(mu_q, s_q, mu_p, s_p) -> np.ndarray:
    """Per-dimension KL(N(mu_q, s_q^2) || N(mu_p, s_p^2)) in bits, stable for s_q ~ s_p."""
    t = np.log(s_q) - np.log(s_p)                 # log of the std ratio
    d = (mu_q - mu_p) / s_p
    nats = 0.5 * np.expm1(2.0 * t) - t + 0.5 * d * d
    return np.maximum(nats, 0.0) / np.log(2.0)


def base_sizes(dims: int, chunks: int) -> list:
    """C near-equal chunk sizes summing to ``dims`` (larger ones first)."""
    q, r = divmod(dims, chunks)
    return [q + 1] * r + [q] * (chunks - r)


def max_extra(c0: int, dims: int) -> int:
    """How many chunks beyond c0 = ceil(KL / B) the encoder may add."""
    return max(0, min(dims, c0 + (c0 + 1) // 2) - c0)


def chunk_count(kl_perm, bits_per_chunk: float, margin_bits: float, lmax: int) -> tuple:
    """(c0, C): c0 = ceil(KL / bits_per_chunk) (at most dims), and C the
    smallest count in c0 .. c0 + max_extra for which no equal-size chunk
    overflows the cap enough to be halved, else c0. Halving flags cost
    about a bit per chunk once any chunk needs one; C - c0 costs ~1 bit."""
    dims = kl_perm.size
    c0 = int(min(dims, max(1, np.ceil(kl_perm.sum() / bits_per_chunk))))
    csum = np.concatenate(([0.0], np.cumsum(kl_perm)))
    limit = lmax + SPLIT_OVER_CAP - min(margin_bits, 0.0)
    for c in range(c0, c0 + max_extra(c0, dims) + 1):
        ends = np.cumsum([0] + base_sizes(dims, c))
        if np.max(csum[ends[1:]] - csum[ends[:-1]]) < limit:
            return c0, c
    return c0, c0


def walk(sizes, decide) -> list:
    """Leaves (start, size) after halving chunks where ``decide(start, size)``
    says so; ``decide`` is asked only for size >= 2, in pre-order."""
    leaves = []

    def visit(start, size):
        if size >= 2 and decide(start, size):
            half = size // 2
            visit(start, half)
            visit(start + half, size - half)
        else:
            leaves.append((start, size))

    start = 0
    for size in sizes:
        visit(start, size)
        start += size
    return leaves


SPLIT_OVER_CAP = 6.0   # bits past the cap (margin <= -6) before a chunk is halved


def overflow_rule(kl_perm, margin_bits: float, lmax: int):
    """Encoder's split rule: halve a chunk whose KL is far beyond the search cap.

    A chunk over the cap is searched at the cap with a smaller (even negative)
    margin. Simulated capped PFR: margin and chunk size trade bits against
    bias (deficit of log q/p at the sent sample) about 1:1, and a 24-bit
    chunk searched with 2^20 candidates costs 18 bits with a 9.5-bit deficit,
    against 23.3 bits and 6.6 for two 12-bit halves. Halving pays only when
    the margin would fall to about -6 bits."""
    csum = np.concatenate(([0.0], np.cumsum(kl_perm)))
    limit = lmax + SPLIT_OVER_CAP - min(margin_bits, 0.0)
    return lambda start, size: csum[start + size] - csum[start] >= limit


class FlagCoder:
    """Adaptive (Krichevsky-Trofimov) binary model for the split flags."""

    def __init__(self):
        self.counts = [0.5, 0.5]

    def weights(self):
        return self.counts

    def update(self, bit: int):
        self.counts[bit] += 1.0


def code_layout(io, dims: int, chunks: int, rule=None, split_model=None) -> list:
    """Code (or read) which base chunks are halved; returns the chunk leaves.

    ``io`` is a range-coder writer or reader; ``rule(start, size)`` says which
    chunks the encoder halves (None on the decoder side).  One flag "any
    halved?" under ``split_model`` (default 15:1 against), then adaptive
    per-chunk flags in pre-order."""
    from bitsback.rcc.coder import categorical
    sizes = base_sizes(dims, chunks)
    if chunks == dims:
        return walk(sizes, lambda start, size: False)
    wanted = []
    if rule is not None:
        walk(sizes, lambda start, size: wanted.append(bool(rule(start, size))) or wanted[-1])
    if not io.code(int(any(wanted)), split_model or categorical([15.0, 1.0])):
        return walk(sizes, lambda start, size: False)
    flags = FlagCoder()

    def decide(start, size):
        bit = io.code(int(rule(start, size)) if rule else 0, categorical(flags.weights()))
        flags.update(bit)
        return bool(bit)
    return walk(sizes, decide)
