"""The chain's conditionals, computed the same way on every machine (issue 18).

:class:`~ddpm_codec.codec.chain.DiffusionChain` turns the network's eps into
the means and scales the coder tables are built from. Its float path takes
sigmoid, sqrt and expm1 of the gammas from torch, whose kernels differ between
CPUs; here every per-step scalar (alpha_s, sigma_s, alpha_{t|s},
expm1(gamma_t - gamma_s), the reverse variance, the decoder's scale) is
decimal arithmetic turned into the nearest double (:mod:`bitsback.exact`),
and every per-dimension value is numpy's elementwise + - * / and sqrt in a
fixed order, each correctly rounded by IEEE 754. With the exact network
(:mod:`ddpm_codec.diffusion.exact_unet`) and the exact symbol tables, a
stream's every probability is then a pure function of the stream.

Only the linear-gamma schedule (VDM's, the shipped models') has an exact
gamma(t) = gamma_min + (gamma_max - gamma_min) t; other schedules are refused.
"""
from __future__ import annotations

import decimal

import numpy as np

from bitsback import exact
from ddpm_codec.diffusion.unet import UNet

Dec = decimal.Decimal


def supports_portable(model) -> bool:
    """Whether this module and the exact U-Net can evaluate the model: a U-Net, the
    linear-gamma schedule, the posterior variance (what `ExactSteps` and
    `DiffusionModel.exact_unet` otherwise refuse)."""
    return isinstance(model.unet, UNet) and model.schedule.config().get("type") == "linear_gamma" \
        and model.variance == "posterior"


def linear_gammas(schedule, times) -> list[float]:
    """gamma(t) = g0 + (g1 - g0) t in doubles, one rounding per operation."""
    cfg = schedule.config()
    if cfg.get("type") != "linear_gamma":
        raise ValueError(f"portable coding needs a linear_gamma schedule, not {cfg.get('type')!r}")
    g0, g1 = float(cfg["gamma_min"]), float(cfg["gamma_max"])
    return [g0 + (g1 - g0) * float(t) for t in times]


class ExactSteps:
    """Per-step scalars of a chain at ``times`` and the elementwise maths on them."""

    def __init__(self, model, times):
        self.model = model
        self.times = [float(t) for t in times]
        self.gam = linear_gammas(model.schedule, self.times)
        self.K = len(self.times)
        g = [Dec(v) for v in self.gam]
        c = exact._CTX
        self.alpha = [float(c.sqrt(exact.dec_sigmoid(-v))) for v in g]
        self.sigma = [float(c.sqrt(exact.dec_sigmoid(v))) for v in g]
        self.decoder_scale = float(c.exp(c.divide(g[0], 2)))
        self.trans_a, self.trans_std, self.steps = [None], [None], [None]
        for k in range(1, self.K):
            s, t = g[k - 1], g[k]
            frac = c.minus(exact.dec_expm1(c.subtract(s, t)))                  # sigma_{t|s}^2 / sigma_t^2
            a_ts = c.sqrt(c.divide(exact.dec_sigmoid(-t), exact.dec_sigmoid(-s)))
            self.trans_a.append(float(a_ts))
            self.trans_std.append(float(c.sqrt(c.multiply(exact.dec_sigmoid(t), frac))))
            post_var = c.multiply(exact.dec_sigmoid(s), frac)
            self.steps.append({
                "c_z": float(c.divide(c.multiply(a_ts, exact.dec_sigmoid(s)), exact.dec_sigmoid(t))),
                "c_x": float(c.multiply(c.sqrt(exact.dec_sigmoid(-s)), frac)),
                "post_var": float(post_var), "post_std": float(c.sqrt(post_var)),
                "r": float(exact.dec_expm1(c.subtract(t, s))),
            })
        self._table = self._eps_error_grid()

    # ---- the reverse variance ----------------------------------------------
    def _eps_error_grid(self):
        e = self.model.eps_error
        if e is None:
            return None
        if self.model.variance != "posterior":
            raise ValueError("portable coding supports the posterior variance only")
        e = np.asarray(e.numpy(), np.float64)
        rows = e.shape[0]
        gx = np.array(linear_gammas(self.model.schedule, [j / (rows - 1) for j in range(rows)]))
        return gx, (e if e.ndim == 2 else e[:, None])

    def _error_row(self, gamma_t: float) -> np.ndarray:
        """e(gamma_t) per x0 bin: linear between the table's rows (basic operations)."""
        gx, e = self._table
        g = min(max(gamma_t, gx[0]), gx[-1])
        j = int(min(max(np.searchsorted(gx, g, side="right") - 1, 0), gx.size - 2))
        w = (g - gx[j]) / (gx[j + 1] - gx[j])
        return e[j] + w * (e[j + 1] - e[j])

    def reverse_std_floor(self, k: int) -> float:
        """The smallest std p(z_k | z_{k+1}) takes (the grid's scale), k < K."""
        st = self.steps[k]
        if self._table is None:
            return st["post_std"]
        row = self._error_row(self.gam[k])
        return float(np.sqrt(st["post_var"] * (1.0 + st["r"] * row.min())))

    # ---- conditionals ---------------------------------------------------------
    def x0_hat(self, k0: int, z, eps):
        """(z - sigma eps) / alpha at latent index k0 (0-based)."""
        return (z - self.sigma[k0] * eps) / self.alpha[k0]

    def prior(self, k: int, z, eps):
        """p(z_k | z_{k+1}) given eps_hat at z_{k+1} (k 1-based, k < K)."""
        st = self.steps[k]
        x0 = self.x0_hat(k, z, eps)
        mean = st["c_z"] * z + st["c_x"] * x0
        if self._table is None:
            return mean, np.full(mean.shape, st["post_std"])
        row = self._error_row(self.gam[k])
        bins = row.size
        b = np.clip(np.floor((np.clip(x0, -1.0, 1.0) + 1.0) * (bins / 2.0)), 0, bins - 1).astype(np.int64)
        var = st["post_var"] * (1.0 + st["r"] * row[b])
        return mean, np.sqrt(var)

    def posterior(self, k: int, z_prev):
        if k == 1:
            return self.alpha[0] * z_prev, np.full(np.shape(z_prev), self.sigma[0])
        return self.trans_a[k - 1] * z_prev, np.full(np.shape(z_prev), self.trans_std[k - 1])

    def topdown_posterior(self, k: int, z_next, x):
        if k == self.K:
            return self.alpha[-1] * x, np.full(np.shape(x), self.sigma[-1])
        st = self.steps[k]
        return st["c_z"] * z_next + st["c_x"] * x, np.full(np.shape(x), st["post_std"])

    def likelihood(self, z1, eps):
        mean = self.x0_hat(0, z1, eps)
        return mean, np.full(mean.shape, self.decoder_scale)
