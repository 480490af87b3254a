"""Noise schedules behind one interface: gamma(t) = log(sigma_t^2 / alpha_t^2).

Every schedule answers gamma for a time t in [0, 1]; alpha_bar, sigma^2 and SNR
follow from it through sigmoid / exp, which stay accurate at both ends (VDM
appendix J).  Discrete DDPM schedules (T steps of beta) live on the grid
t = i / T; continuous VDM schedules answer any t.  Schedules are kept and
evaluated in float64 and cast late: alpha_bar rounds to 1 in float32 for the
first DDPM steps.

A *chain* is the list of latent times a coder or the exact VLB walks through
(`NoiseSchedule.chain`): the same list for `nll --steps`, the lossless codec
and the lossy codec.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

F64 = torch.float64


def alpha_bar(gamma: torch.Tensor) -> torch.Tensor:
    """alpha_t^2 = sigmoid(-gamma)."""
    return torch.sigmoid(-gamma)


def sigma2(gamma: torch.Tensor) -> torch.Tensor:
    """sigma_t^2 = sigmoid(gamma)."""
    return torch.sigmoid(gamma)


def snr(gamma: torch.Tensor) -> torch.Tensor:
    return torch.exp(-gamma)


class NoiseSchedule(nn.Module):
    """Base class: subclasses implement `gamma(t)` and `kind`."""

    kind: str = "abstract"
    #: number of discrete steps T, or None for a continuous-time schedule
    T: int | None = None

    def gamma(self, t: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def alpha_bar(self, t):
        return alpha_bar(self.gamma(t))

    def sigma2(self, t):
        return sigma2(self.gamma(t))

    def snr(self, t):
        return snr(self.gamma(t))

    @property
    def continuous(self) -> bool:
        return self.T is None

    time_warp = None  # continuous schedules: optional knots of the chain's time warp (see chain)

    def set_time_warp(self, knots) -> None:
        """Make chain(steps) put latent i at t = w(i / steps), w piecewise linear
        through ``knots`` at u = 0, 1/K, ..., 1 (``ddpm_codec.bound.chain_times`` fits
        them to the discrete VLB). ``None`` restores evenly spaced times."""
        if knots is None:
            self.time_warp = None
            return
        if self.T is not None:
            raise ValueError("a time warp applies to continuous-time schedules only")
        w = torch.as_tensor(knots, dtype=F64).reshape(-1)
        if w.numel() < 2 or w[0] != 0.0 or w[-1] != 1.0 or not bool(torch.all(w[1:] > w[:-1])):
            raise ValueError("time warp knots must rise strictly from 0 to 1")
        self.time_warp = w

    def chain(self, steps: int) -> torch.Tensor:
        """Latent times (float64, increasing) of a coding/evaluation chain.

        Discrete (T steps): `steps` latent levels t_1 < ... < t_K, evenly
        spaced integers from 1 to T (divided by T), so the first latent is
        always DDPM's x_1 and the decoder term is p(x | x_1); K = T gives
        DDPM's full chain.  Continuous: `steps` transitions, the latents at
        t = 0, 1/steps, ..., 1 (VDM's T), decoder p(x | z_0), or at
        w(0), w(1/steps), ..., w(1) when the model carries a time warp.
        """
        steps = int(steps)
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if self.T is None:
            if self.time_warp is None:
                return torch.linspace(0.0, 1.0, steps + 1, dtype=F64)
            return _warp(self.time_warp, steps)
        if steps > self.T:
            raise ValueError(f"steps={steps} exceeds the schedule's T={self.T}")
        if steps == 1:
            idx = torch.tensor([self.T], dtype=F64)
        else:
            idx = torch.round(torch.linspace(1.0, float(self.T), steps, dtype=F64))
        return idx / self.T

    def config(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError


def _warp(knots: torch.Tensor, steps: int) -> torch.Tensor:
    """knots (K+1, rising 0..1) interpolated at u = i / steps, i = 0..steps."""
    K = knots.numel() - 1
    num = torch.arange(steps + 1, dtype=torch.int64) * K      # u * K = num / steps, exactly
    j = torch.clamp(num // steps, max=K - 1)
    frac = (num - j * steps).to(F64) / steps
    t = knots[j] + frac * (knots[j + 1] - knots[j])
    t[0], t[-1] = 0.0, 1.0
    return t


class DiscreteSchedule(NoiseSchedule):
    """DDPM-style schedule from a beta sequence on t = i / T, i = 0..T.

    gamma_i = log(1 - abar_i) - log(abar_i) with log abar_i = sum log1p(-beta),
    computed with expm1 so small i keeps its precision; gamma_0 = -inf (x_0 is
    the data itself).
    """

    kind = "discrete"

    def __init__(self, betas: torch.Tensor, name: str, params: dict):
        super().__init__()
        betas = betas.to(F64)
        self.T = int(betas.numel())
        self.name = name
        self._params = dict(params)
        log_abar = torch.cumsum(torch.log1p(-betas), 0)
        gam = torch.log(-torch.expm1(log_abar)) - log_abar
        gam = torch.cat([torch.tensor([-math.inf], dtype=F64), gam])
        self.register_buffer("betas", betas, persistent=False)
        self.register_buffer("gammas", gam, persistent=False)

    def index(self, t: torch.Tensor) -> torch.Tensor:
        i = torch.round(torch.as_tensor(t, dtype=F64) * self.T)
        return i.clamp(0, self.T).long()

    def gamma(self, t):
        t = torch.as_tensor(t)
        g = self.gammas.to(t.device)[self.index(t)]
        return g if t.dtype == F64 else g.to(t.dtype if t.is_floating_point() else F64)

    def config(self):
        return {"type": self.name, **self._params}


def linear_betas(T=1000, beta_start=1e-4, beta_end=0.02) -> torch.Tensor:
    """DDPM's linear schedule."""
    return torch.linspace(beta_start, beta_end, T, dtype=F64)


def cosine_betas(T=1000, s=0.008, max_beta=0.999) -> torch.Tensor:
    """Nichol & Dhariwal's cosine schedule (betas clipped at max_beta)."""
    i = torch.arange(T + 1, dtype=F64)
    f = torch.cos((i / T + s) / (1 + s) * math.pi / 2) ** 2
    abar = f / f[0]
    return (1 - abar[1:] / abar[:-1]).clamp(max=max_beta)


class LinearGamma(NoiseSchedule):
    """VDM's linear gamma(t) = gamma_min + (gamma_max - gamma_min) t.

    With learned=True both endpoints are parameters trained on the VLB (only
    they change the continuous-time VLB: L_T and L_0 depend on them).
    """

    kind = "continuous"

    def __init__(self, gamma_min=-13.3, gamma_max=5.0, learned=False):
        super().__init__()
        self.learned = bool(learned)
        g0 = torch.tensor(float(gamma_min), dtype=torch.float32)
        g1 = torch.tensor(float(gamma_max), dtype=torch.float32)
        if self.learned:
            self.gamma_min = nn.Parameter(g0)
            self.gamma_max = nn.Parameter(g1)
        else:
            self.register_buffer("gamma_min", g0)
            self.register_buffer("gamma_max", g1)

    def gamma(self, t):
        t = torch.as_tensor(t)
        dt = t.dtype if t.is_floating_point() else F64
        g0 = self.gamma_min.to(dt)
        g1 = self.gamma_max.to(dt)
        return g0 + (g1 - g0) * t.to(dt)

    def config(self):
        return {"type": "linear_gamma", "gamma_min": float(self.gamma_min.detach()),
                "gamma_max": float(self.gamma_max.detach()), "learned": self.learned}


class _PositiveLinear(nn.Module):
    """Linear layer whose weights are kept positive (softplus), for monotonicity."""

    def __init__(self, n_in, n_out, init_scale=1.0):
        super().__init__()
        self.raw = nn.Parameter(torch.randn(n_out, n_in) * 0.1 + math.log(math.expm1(init_scale)))
        self.bias = nn.Parameter(torch.zeros(n_out))

    def forward(self, x):
        w = F.softplus(self.raw.to(x.dtype))
        return x @ w.t() + self.bias.to(x.dtype)


class MonotoneGamma(NoiseSchedule):
    """VDM appendix H: gamma~(t) = l1(t) + l3(sigmoid(l2(l1(t)))) with positive
    weights, rescaled (eq. 59) to interpolate gamma_min..gamma_max exactly.
    The endpoints are trained on the VLB, the shape on the loss variance."""

    kind = "continuous"

    def __init__(self, gamma_min=-13.3, gamma_max=5.0, hidden=1024):
        super().__init__()
        self.gamma_min = nn.Parameter(torch.tensor(float(gamma_min)))
        self.gamma_max = nn.Parameter(torch.tensor(float(gamma_max)))
        self.hidden = int(hidden)
        self.l1 = _PositiveLinear(1, 1)
        self.l2 = _PositiveLinear(1, self.hidden)
        self.l3 = _PositiveLinear(self.hidden, 1, init_scale=1.0 / self.hidden)

    def _raw(self, t):
        h = self.l1(t[..., None])
        return (h + self.l3(torch.sigmoid(self.l2(h))))[..., 0]

    def shape(self, t):
        """Normalized monotone shape in [0, 1]."""
        ends = self._raw(torch.tensor([0.0, 1.0], dtype=t.dtype, device=t.device))
        return (self._raw(t) - ends[0]) / (ends[1] - ends[0])

    def gamma(self, t):
        t = torch.as_tensor(t)
        dt = t.dtype if t.is_floating_point() else F64
        t = t.to(dt)
        g0, g1 = self.gamma_min.to(dt), self.gamma_max.to(dt)
        return g0 + (g1 - g0) * self.shape(t)

    def config(self):
        return {"type": "monotone_gamma", "gamma_min": float(self.gamma_min.detach()),
                "gamma_max": float(self.gamma_max.detach()), "hidden": self.hidden}


def build_schedule(cfg: dict) -> NoiseSchedule:
    """Schedule from its JSON config (see each class's `config`)."""
    cfg = dict(cfg)
    kind = cfg.pop("type")
    if kind == "linear":
        return DiscreteSchedule(linear_betas(**cfg), "linear", cfg)
    if kind == "cosine":
        return DiscreteSchedule(cosine_betas(**cfg), "cosine", cfg)
    if kind == "linear_gamma":
        return LinearGamma(**cfg)
    if kind == "monotone_gamma":
        return MonotoneGamma(**cfg)
    raise ValueError(f"unknown schedule type {kind!r} (linear, cosine, linear_gamma, monotone_gamma)")
