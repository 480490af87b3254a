"""The Markov chain that the coders turn into bits: the protocol and helpers.

A chain ``z_0 = x -> z_1 -> ... -> z_K`` has Gaussian conditionals that the
caller supplies as callables returning ``(mean, scale)`` arrays (float64,
value units, broadcastable to the shape of ``x``, one batched call per step).
Latent values handed to the callables are ``grid index * delta_k`` as float64
arrays shaped like ``x``; ``x`` itself is given in model units
(``pixel / 127.5 - 1``). Both coders call each callable exactly once per
step and the decoder makes the very same calls (same arguments) as the
encoder, in mirrored order -- this is what the determinism contract rests on.

Members (``k`` runs over 1..K):

* ``num_latents`` -- K >= 1.
* ``bin_widths`` -- sequence of K bin widths ``delta_1..delta_K`` (scalars or
  arrays broadcastable to ``x``), the grid of each latent, known to both sides.
* ``posterior(k, z_prev)`` -- q(z_k | z_{k-1}), ``z_prev = x`` for k = 1
  (Bit-Swap).
* ``prior(k, z_next)`` -- p(z_k | z_{k+1}) for k < K; ``prior(K, None)`` is the
  top prior p(z_K).
* ``likelihood(z_1)`` -- p(x | z_1): mean and scale in model units of the
  discretized Gaussian of DDPM eq. 13 (see :mod:`bitsback.symbols.pixels`).
* ``topdown_posterior(k, z_next, x)`` -- q(z_k | z_{k+1}, x), and
  ``topdown_posterior(K, None, x)`` = q(z_K | x) (standard BB-ANS only).
"""
import time
from typing import Optional, Protocol, Sequence, Tuple, runtime_checkable

import numpy as np

Conditional = Tuple[np.ndarray, np.ndarray]


@runtime_checkable
class MarkovChain(Protocol):
    num_latents: int
    bin_widths: Sequence

    def posterior(self, k: int, z_prev: np.ndarray) -> Conditional: ...

    def prior(self, k: int, z_next: Optional[np.ndarray]) -> Conditional: ...

    def likelihood(self, z1: np.ndarray) -> Conditional: ...

    def topdown_posterior(self, k: int, z_next: Optional[np.ndarray],
                          x: np.ndarray) -> Conditional: ...


def bin_width(chain, k: int):
    """delta_k (1-based ``k``) as float64."""
    return np.asarray(chain.bin_widths[k - 1], np.float64)


def validate(chain) -> int:
    """Return K after checking the members every coder needs."""
    K = int(chain.num_latents)
    if K < 1 or len(chain.bin_widths) != K:
        raise ValueError(f"chain needs num_latents >= 1 and {K} bin widths")
    for k in range(1, K + 1):
        if not np.all(bin_width(chain, k) > 0):
            raise ValueError(f"bin width of latent {k} must be positive")
    return K


class Timed:
    """Calls a chain's callables and adds the time they take to ``seconds``."""

    def __init__(self, chain):
        self.chain, self.seconds = chain, 0.0

    def __call__(self, name: str, *args) -> Conditional:
        t0 = time.perf_counter()
        mean, scale = getattr(self.chain, name)(*args)
        self.seconds += time.perf_counter() - t0
        return np.asarray(mean, np.float64), np.asarray(scale, np.float64)
