"""Where to put the T_eval latents of a continuous-time model's chain.

Why: a continuous-time model's VLB does not depend on the schedule between
its end points, but the T-step chain that `nll --steps` evaluates and the
codec codes does (VDM appendix, eq. 9-10): with the posterior variance the
step from s to t costs

    L(s, t) = 0.5 * expm1(gamma(t) - gamma(s)) * E||eps - eps_hat(z_t, t)||^2

and with the KL-optimal isotropic variance for that error (Analytic-DPM,
``DiffusionModel.set_eps_error``, from the same table) 0.5 D log(1 + r) with
r = expm1(gamma(t) - gamma(s)) E||eps - eps_hat||^2 / D. Either way the T-step
-VLB is a sum of pair costs over the chosen times, and the times that
minimize it are a shortest path with T edges through a fine grid of
candidate times (Watson et al. 2021 did this for DDPM's discrete steps).
The network's error is tabulated once on training images, with the same
images and noise at every candidate time so the table is smooth in t; the
dynamic programme then costs O(T * G^2) for G candidates, no network calls.

The variance can also depend on what the network predicts: with the error
tabulated per bin of x0_hat (``bins``), each dim gets sigma_Q^2 (1 + r e_b)
for its bin b, and a step costs 0.5 sum_b n_b log(1 + r e_b), below the
isotropic 0.5 D log(1 + r mean e) (background pixels are predicted almost
exactly, edges are not).

The result is a monotone warp w: chain(steps) puts latent i at w(i / steps),
linear between the fitted times (`NoiseSchedule.set_time_warp`), and the
table itself for the reverse variance; both are part of the model's config,
so they change the fingerprint and both sides of a stream agree on them.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ddpm_codec.diffusion import process
from ddpm_codec.diffusion.likelihood import pixels_to_model
from ddpm_codec.diffusion.model import DiffusionModel, x0_bins


@torch.no_grad()
def eps_error_table(model: DiffusionModel, pixels: torch.Tensor, grid: int = 1000, seed: int = 0,
                    batch: int = 64, progress=None, bins: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(t, m, n): t = 0, 1/grid, ..., 1; m[j, b] = E sum |eps - eps_hat(z_t, t)|^2 over
    the dims whose predicted x0 falls in bin b (``model.x0_bins``) and
    n[j, b] = E number of those dims (means over ``pixels``; one bin: every dim),
    with common random numbers across t."""
    if not model.schedule.continuous:
        raise ValueError("chain times are fitted for continuous-time schedules only")
    x = pixels_to_model(torch.as_tensor(pixels))
    gen = torch.Generator().manual_seed(seed)
    eps = torch.randn(x.shape, generator=gen, dtype=x.dtype)
    ts = np.linspace(0.0, 1.0, grid + 1)
    m, n = np.zeros((grid + 1, bins)), np.zeros((grid + 1, bins))
    for j, t in enumerate(ts):
        tt = torch.tensor(float(t), dtype=torch.float64)
        g = model.gamma(tt).to(x.dtype)
        for a in range(0, x.shape[0], batch):
            xb, eb = x[a:a + batch], eps[a:a + batch]
            z = process.q_sample(xb, g, eb)
            e = model.eps(z, tt).to(eb.dtype)
            sq = ((eb - e) ** 2).double().flatten()
            if bins == 1:
                m[j, 0] += float(sq.sum())
                n[j, 0] += sq.numel()
                continue
            k = x0_bins(process.predict_x0(z.double(), e.double(), g.double()), bins).flatten()
            m[j] += torch.bincount(k, sq, bins).numpy()
            n[j] += torch.bincount(k, minlength=bins).double().numpy()
        if progress:
            progress(1)
    return ts, m / x.shape[0], n / x.shape[0]


def per_dim_table(m: np.ndarray, n: np.ndarray, prior_dims: float = 64.0) -> np.ndarray:
    """Per-dim error of each bin, shrunk towards the row's overall mean by
    ``prior_dims`` pseudo-dims so a rarely visited bin gets a sane value."""
    overall = m.sum(1, keepdims=True) / n.sum(1, keepdims=True)
    if m.shape[1] == 1:
        return overall
    return (m + prior_dims * overall) / (n + prior_dims)


def pair_costs(gamma: np.ndarray, m: np.ndarray, n: np.ndarray | None = None,
               e: np.ndarray | None = None) -> np.ndarray:
    """C[a, b] = L(t_a, t_b) in nats per image for a < b (inf elsewhere). m, n: the
    table of :func:`eps_error_table` (1-D m: one bin). Without ``e``: the posterior
    variance; with ``e`` (per-dim error per bin, :func:`per_dim_table`) the reverse
    variance sigma_Q^2 (1 + r e) of ``DiffusionModel.set_eps_error``, whose exact
    expected KL is 0.5 sum_b [n_b log(1 + r e_b) + (n_b + r m_b) / (1 + r e_b) - n_b]."""
    m = m.reshape(m.shape[0], -1)
    with np.errstate(invalid="ignore", over="ignore"):
        r = np.expm1(gamma[None, :] - gamma[:, None])
        if e is None:
            c = 0.5 * r * m.sum(1)[None, :]
        else:
            n = n.reshape(m.shape)
            c = np.zeros_like(r)
            for b in range(m.shape[1]):
                v = 1.0 + r * e[None, :, b]
                c += 0.5 * (n[None, :, b] * np.log(v) + (n[None, :, b] + r * m[None, :, b]) / v - n[None, :, b])
    c[np.tril_indices(gamma.size)] = np.inf
    return c


def best_path(costs: np.ndarray, steps: int) -> tuple[float, list[int]]:
    """Cheapest path 0 -> G with exactly ``steps`` edges: (cost, grid indices)."""
    G = costs.shape[0] - 1
    if not 1 <= steps <= G:
        raise ValueError(f"steps must be in 1..{G} (the candidate grid)")
    f = np.full(G + 1, np.inf)
    f[0] = 0.0
    back = np.zeros((steps + 1, G + 1), np.int64)
    for k in range(1, steps + 1):
        tot = f[:, None] + costs
        back[k] = tot.argmin(0)
        f = tot[back[k], np.arange(G + 1)]
    path = [G]
    for k in range(steps, 0, -1):
        path.append(int(back[k][path[-1]]))
    return float(f[G]), path[::-1]


def path_cost(costs: np.ndarray, path) -> float:
    return float(sum(costs[a, b] for a, b in zip(path[:-1], path[1:])))


def fit_chain(model: DiffusionModel, pixels: torch.Tensor, steps: int = 100, grid: int = 1000,
              seed: int = 0, variance: bool = True, progress=None, bins: int = 16) -> dict:
    """Fit the chain's times for ``steps`` transitions (and, with ``variance``, the
    eps-error table of the reverse variance, per ``bins`` bins of the predicted x0).
    Returns the knots, the per-dim eps error, and the diffusion term (bits/dim, on
    ``pixels``) of even times with the posterior variance ("even_bpd"), of the
    fitted chain ("fitted_bpd") and of each change alone ("times_only_bpd",
    "variance_only_bpd")."""
    ts, m, n = eps_error_table(model, pixels, grid, seed, progress=progress, bins=bins if variance else 1)
    with torch.no_grad():
        gamma = model.gamma(torch.from_numpy(ts)).detach().numpy().astype(np.float64)
    dims = int(np.prod(pixels.shape[1:]))
    e = per_dim_table(m, n)
    plain, corrected = pair_costs(gamma, m), pair_costs(gamma, m, n, e)
    even = np.round(np.linspace(0, grid, steps + 1)).astype(int).tolist()
    times_only = best_path(plain, steps)
    best, path = best_path(corrected, steps) if variance else times_only
    to_bpd = 1.0 / (dims * math.log(2.0))
    # 6 significant digits: the model JSON stays small, the fit is unchanged
    table = np.vectorize(lambda v: float(f"{v:.6g}"))(e[:, 0] if bins == 1 else e).tolist() if variance else None
    return {"knots": [float(ts[i]) for i in path], "eps_error": table, "bins": int(bins) if variance else 0,
            "steps": int(steps), "grid": int(grid), "n_images": int(pixels.shape[0]),
            "even_bpd": path_cost(plain, even) * to_bpd, "fitted_bpd": best * to_bpd,
            "times_only_bpd": times_only[0] * to_bpd,
            "variance_only_bpd": path_cost(corrected, even) * to_bpd}
