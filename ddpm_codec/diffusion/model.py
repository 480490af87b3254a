"""A diffusion model = noise schedule + epsilon network + the choices that make
it a likelihood model (reverse variance, decoder).  Everything that turns it
into bits (VLB, codecs) asks it only for `eps` and for the conditionals below.
"""
from __future__ import annotations

import torch
from torch import nn

from ddpm_codec.diffusion import process
from ddpm_codec.diffusion.schedules import NoiseSchedule, build_schedule
from ddpm_codec.diffusion.unet import UNet, UNetConfig

F64 = torch.float64


def x0_bins(x0: torch.Tensor, bins: int) -> torch.Tensor:
    """Bin of each dim's predicted x0 (clamped to [-1, 1]) among ``bins`` equal
    bins: the rows of a binned eps-error table (``set_eps_error``)."""
    return ((x0.clamp(-1.0, 1.0) + 1.0) * (bins / 2.0)).floor().long().clamp(0, bins - 1)


def _posterior_var(gamma_s, gamma_t):
    """sigma_Q^2 of q(z_s | z_t, x), from the gammas alone (float64)."""
    return torch.sigmoid(gamma_s) * (-torch.expm1(gamma_s - gamma_t))


def _error_scale(gamma_s, gamma_t, e):
    """1 + r e, the Analytic-DPM factor on sigma_Q^2 for per-dim eps error e."""
    return 1.0 + torch.expm1(gamma_t - gamma_s) * e


class DiffusionModel(nn.Module):
    def __init__(self, schedule: NoiseSchedule, unet: UNet, variance: str = "posterior"):
        super().__init__()
        if variance not in ("posterior", "transition"):
            raise ValueError("variance must be 'posterior' or 'transition'")
        self.schedule = schedule
        self.unet = unet
        self.variance = variance

    # ---- construction -------------------------------------------------
    @classmethod
    def from_config(cls, cfg: dict) -> "DiffusionModel":
        model = cls(build_schedule(cfg["schedule"]), UNet(UNetConfig.from_dict(cfg["unet"])),
                    cfg.get("variance", "posterior"))
        if cfg.get("time_warp") is not None:
            model.schedule.set_time_warp(cfg["time_warp"])
        if cfg.get("eps_error") is not None:
            model.set_eps_error(cfg["eps_error"])
        return model

    def config(self) -> dict:
        cfg = {"schedule": self.schedule.config(), "unet": self.unet.cfg.to_dict(),
               "variance": self.variance}
        if self.schedule.time_warp is not None:
            cfg["time_warp"] = [float(v) for v in self.schedule.time_warp]
        if self.eps_error is not None:
            cfg["eps_error"] = self.eps_error.tolist()
        return cfg

    @property
    def channels(self) -> int:
        return self.unet.cfg.in_channels

    # ---- network ------------------------------------------------------
    _exact_unet = None

    def exact_unet(self):
        """The portable evaluation of this network (`ddpm_codec.diffusion.exact_unet`), made once."""
        if self._exact_unet is None:
            from ddpm_codec.diffusion.exact_unet import ExactUNet
            if not isinstance(self.unet, UNet):
                raise ValueError("portable coding needs a trained U-Net, not a closed-form denoiser")
            self._exact_unet = ExactUNet(self.unet)
        return self._exact_unet

    def eps(self, z: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None,
            exact: bool = False) -> torch.Tensor:
        """eps_hat(z_t, t); t is a scalar or a per-image vector of times in [0, 1];
        ``cond``: the conditioning planes of a conditional net (`ddpm_codec.diffusion.pixel_groups`);
        ``exact``: the portable evaluation (float64, the same bits on every machine)."""
        t = torch.as_tensor(t, device=z.device)
        if t.dim() == 0:
            t = t.expand(z.shape[0])
        if exact:
            return self.exact_unet()(z, t.to(F64), cond)
        p = next(self.unet.parameters(), None)
        dtype = p.dtype if p is not None else torch.float64   # parameter-free (closed-form) denoisers
        if cond is None:
            return self.unet(z.to(dtype), t.to(torch.float32))
        return self.unet(z.to(dtype), t.to(torch.float32), cond.to(dtype))

    def gamma(self, t, like: torch.Tensor | None = None) -> torch.Tensor:
        """gamma(t) as a float64 tensor, broadcastable to images if `like` is given."""
        g = self.schedule.gamma(torch.as_tensor(t, dtype=F64))
        if like is not None and g.dim() == 1:
            g = g.view(-1, *([1] * (like.dim() - 1)))
        return g

    # ---- the reverse variance --------------------------------------------
    # E|eps - eps_hat(z_t, t)|^2 per dim at t = 0, 1/G, ..., 1 (float64), or None:
    # shape (G + 1,), or (G + 1, B) for B bins of the predicted x0 in [-1, 1]
    eps_error = None
    _eps_gamma = None  # gamma at those t, computed on first use

    def set_eps_error(self, per_dim) -> None:
        """Use the KL-optimal variance of p(z_s | z_t) given the network's error
        (Analytic-DPM, Bao et al. 2022): sigma^2 = sigma_Q^2 (1 + expm1(gamma_t -
        gamma_s) e), e = E|eps - eps_hat(z_t, t)|^2 per dim tabulated at evenly
        spaced t (``ddpm_codec.bound.chain_times``). Why: with the posterior variance alone
        a step costs 0.5 D r with r = expm1(gamma_t - gamma_s) e; with this one
        0.5 D log(1 + r), which matters on short chains. A 2-D table (rows t,
        columns bins of x0_hat = (z_t - sigma_t eps_hat) / alpha_t over [-1, 1])
        makes e depend on what the network predicts at each dim: background
        pixels it gets right, edges it does not (0.5 sum_i log(1 + r_i) <=
        0.5 D log(1 + mean r)). ``None`` switches it off."""
        if per_dim is None:
            self.eps_error, self._eps_gamma = None, None
            return
        if self.variance != "posterior":
            raise ValueError("the eps-error variance correction builds on variance='posterior'")
        e = torch.as_tensor(per_dim, dtype=F64)
        if e.dim() not in (1, 2) or e.shape[0] < 2 or (e.dim() == 2 and e.shape[1] < 1) \
                or not bool(torch.all(torch.isfinite(e) & (e >= 0))):
            raise ValueError("eps error table: at least 2 rows (times) of finite values >= 0")
        self.eps_error, self._eps_gamma = e, None

    def _eps_error_at(self, gamma_t: torch.Tensor) -> torch.Tensor:
        """e(t) by linear interpolation in gamma (monotone in t): the shape of
        gamma_t, with the bins as a last axis for a 2-D table."""
        if self._eps_gamma is None:          # on the CPU, wherever the schedule lives
            tensors = [*self.schedule.parameters(), *self.schedule.buffers()]
            dev = tensors[0].device if tensors else torch.device("cpu")
            with torch.no_grad():
                grid = torch.linspace(0.0, 1.0, self.eps_error.shape[0], dtype=F64, device=dev)
                self._eps_gamma = self.gamma(grid).detach().cpu()
        gx, e = self._eps_gamma, self.eps_error
        g = gamma_t.detach().to("cpu", F64).reshape(-1).clamp(gx[0], gx[-1])
        j = torch.clamp(torch.searchsorted(gx, g, right=True) - 1, 0, gx.numel() - 2)
        w = (g - gx[j]) / (gx[j + 1] - gx[j])
        if e.dim() == 2:
            w = w[:, None]
        return (e[j] + w * (e[j + 1] - e[j])).reshape(tuple(gamma_t.shape) + tuple(e.shape[1:])).to(gamma_t.device)

    def reverse_var(self, gamma_s, gamma_t) -> torch.Tensor:
        """Variance of p(z_s | z_t) (float64, the shape of the gammas); with a
        binned eps-error table the smallest it takes at any dim (a scale known
        before the data: the lossless coder's grid)."""
        gamma_s, gamma_t = torch.as_tensor(gamma_s, dtype=F64), torch.as_tensor(gamma_t, dtype=F64)
        if self.variance == "transition":
            var = process.transition(gamma_s, gamma_t)[1]
        else:
            var = _posterior_var(gamma_s, gamma_t)
        if self.eps_error is not None:
            e = self._eps_error_at(gamma_t)
            var = var * _error_scale(gamma_s, gamma_t, e.amin(-1) if self.eps_error.dim() == 2 else e)
        return var

    def reverse(self, z_t, eps_hat, gamma_s, gamma_t):
        """p(z_s | z_t) = (mean, var): DDPM's mean with this model's variance choice."""
        mean, var = process.reverse(z_t, eps_hat, gamma_s, gamma_t, self.variance)
        if self.eps_error is None:
            return mean, var
        if self.eps_error.dim() == 1:
            return mean, self.reverse_var(gamma_s, gamma_t).to(var.dtype).expand_as(var)
        gamma_s = torch.as_tensor(gamma_s, dtype=F64, device=z_t.device)
        gamma_t = torch.as_tensor(gamma_t, dtype=F64, device=z_t.device)
        b = x0_bins(process.predict_x0(z_t.to(F64), eps_hat.to(F64), gamma_t), self.eps_error.shape[1])
        rows = self._eps_error_at(gamma_t)                       # gamma_t.shape + (B,)
        e = torch.gather(rows.expand(*b.shape, rows.shape[-1]), -1, b.unsqueeze(-1)).squeeze(-1)
        return mean, (_posterior_var(gamma_s, gamma_t) * _error_scale(gamma_s, gamma_t, e)).to(var.dtype)

    # ---- conditionals (float64, for coding and exact evaluation) -------
    @torch.no_grad()
    def reverse_conditional(self, z_t: torch.Tensor, t: float, s: float):
        """Mean and variance of p(z_s | z_t), float64."""
        z_t = z_t.to(F64)
        eps = self.eps(z_t, t).to(F64)
        return self.reverse(z_t, eps, self.gamma(s), self.gamma(t))

    @torch.no_grad()
    def decoder_params(self, z0: torch.Tensor, t0: float):
        """Mean and log-scale (model units) of the discretized decoder p(x | z_t0)
        (`diffusion.decoder_params`), float64."""
        z0 = z0.to(F64)
        return process.decoder_params(z0, self.eps(z0, t0).to(F64), self.gamma(t0))
