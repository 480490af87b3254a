"""A diffusion model = noise schedule + epsilon network + the choices that make
it a likelihood model (reverse variance, decoder).  Everything that turns it
into bits (VLB, codecs) asks it only for `eps` and for the conditionals below.
"""
from __future__ import annotations

import torch
from torch import nn

from . import diffusion as D
from .schedules import NoiseSchedule, build_schedule
from .unet import UNet, UNetConfig

F64 = torch.float64


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
        return model

    def config(self) -> dict:
        cfg = {"schedule": self.schedule.config(), "unet": self.unet.cfg.to_dict(),
               "variance": self.variance}
        if self.schedule.time_warp is not None:
            cfg["time_warp"] = [float(v) for v in self.schedule.time_warp]
        return cfg

    @property
    def channels(self) -> int:
        return self.unet.cfg.in_channels

    # ---- network ------------------------------------------------------
    def eps(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """eps_hat(z_t, t); t is a scalar or a per-image vector of times in [0, 1]."""
        t = torch.as_tensor(t, device=z.device)
        if t.dim() == 0:
            t = t.expand(z.shape[0])
        p = next(self.unet.parameters(), None)
        dtype = p.dtype if p is not None else torch.float64   # parameter-free (closed-form) denoisers
        return self.unet(z.to(dtype), t.to(torch.float32))

    def gamma(self, t, like: torch.Tensor | None = None) -> torch.Tensor:
        """gamma(t) as a float64 tensor, broadcastable to images if `like` is given."""
        g = self.schedule.gamma(torch.as_tensor(t, dtype=F64))
        if like is not None and g.dim() == 1:
            g = g.view(-1, *([1] * (like.dim() - 1)))
        return g

    # ---- conditionals (float64, for coding and exact evaluation) -------
    @torch.no_grad()
    def reverse_conditional(self, z_t: torch.Tensor, t: float, s: float):
        """Mean and variance of p(z_s | z_t), float64."""
        z_t = z_t.to(F64)
        eps = self.eps(z_t, t).to(F64)
        return D.reverse(z_t, eps, self.gamma(s), self.gamma(t), self.variance)

    @torch.no_grad()
    def decoder_params(self, z0: torch.Tensor, t0: float):
        """Mean and log-scale (model units) of the discretized decoder p(x | z_t0)
        (`diffusion.decoder_params`), float64."""
        z0 = z0.to(F64)
        return D.decoder_params(z0, self.eps(z0, t0).to(F64), self.gamma(t0))
