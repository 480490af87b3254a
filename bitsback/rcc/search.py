"""Capped Poisson functional representation (PFR) search over one chunk.

Candidates x_i = mu_p + s_p z_i, z_i ~ N(0, I) from shared randomness, arrive
at times T_i (a unit-rate Poisson process); the encoder sends the index of
argmin_i log T_i - log w_i with w = q/p. Over an unbounded search the winner
is an exact sample of q; capped at 2^L candidates it is approximate (see
:mod:`bitsback.rcc.step`). The decoder regenerates only the winning candidate.
"""
import numpy as np

from bitsback.rcc.shared_random import arrival_increments, batch_rows, candidate_normals


def log_weight_coefs(mu_q, s_q, mu_p, s_p):
    """Per-dimension (a, b, c): log q(x)/p(x) = sum_j a_j z_j^2 + b_j z_j + c_j
    at x = mu_p + s_p z. With rho = s_p/s_q and delta = (mu_p - mu_q)/s_q:
    a = (1 - rho^2)/2, b = -rho delta, c = log rho - delta^2/2."""
    rho = s_p / s_q
    delta = (mu_p - mu_q) / s_q
    a = 0.5 * (1.0 - rho) * (1.0 + rho)
    b = -rho * delta
    c = np.log(rho) - 0.5 * delta * delta
    return a, b, c


def pfr_search(a, b, c, L: int, key: tuple):
    """Search 2^L candidates of chunk ``key`` = (seed, step, chunk) whose
    log-weight coefficients are (a, b, c) (:func:`log_weight_coefs`).

    Returns (index, z of the winner, log w of the winner in nats)."""
    dims = a.shape[0]
    c = float(np.sum(c))
    rows = batch_rows(dims)
    total = 1 << L
    quadratic = bool(np.any(a != 0.0))
    best_score, best = np.inf, None
    t0 = 0.0
    for batch, start in enumerate(range(0, total, rows)):
        n = min(rows, total - start)
        z = candidate_normals(*key, batch, n, dims)
        lw = z @ b
        if quadratic:
            lw += (z * z) @ a
        lw += c
        t = t0 + np.cumsum(arrival_increments(*key, batch, n))
        t0 = float(t[-1])
        score = np.log(t) - lw
        j = int(np.argmin(score))
        if score[j] < best_score:
            best_score, best = float(score[j]), (start + j, z[j].copy(), float(lw[j]))
    return best


def regenerate(index: int, dims: int, key: tuple) -> np.ndarray:
    """The z of candidate ``index`` of chunk ``key``, as the encoder drew it."""
    rows = batch_rows(dims)
    batch, r = divmod(int(index), rows)
    return candidate_normals(*key, batch, r + 1, dims)[r]
