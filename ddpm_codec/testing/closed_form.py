"""The exact denoiser for a finite set of K images (DESIGN.md, "Testing
without a trained network").

For data uniform on {x^1..x^K}, E[x0 | z_t] = sum_k w_k x^k with
w = softmax(-|z_t - alpha_t x^k|^2 / (2 sigma_t^2)); eps follows.  As a
`DiffusionModel` it gives codec and VLB tests an honest, network-free
target: coding one of the K images costs about log2(K) bits plus what the
decoder and coder add.
"""
from __future__ import annotations

import torch
from torch import nn

from ddpm_codec.diffusion.model import DiffusionModel
from ddpm_codec.diffusion.schedules import NoiseSchedule, build_schedule


class _Cfg:
    def __init__(self, images):
        self.in_channels = images.shape[1]
        self.image_size = images.shape[2]
        self.channel_mults = (1,)

    def to_dict(self):
        return {"closed_form": True, "in_channels": self.in_channels, "image_size": self.image_size}


class ClosedFormDenoiser(nn.Module):
    def __init__(self, images_uint8: torch.Tensor, schedule: NoiseSchedule):
        super().__init__()
        x = images_uint8.to(torch.float64) / 127.5 - 1.0
        self.register_buffer("data", x)
        self.schedule = schedule
        self.cfg = _Cfg(x)

    @property
    def multiple(self):
        return 1

    def forward(self, z, t):
        z = z.to(torch.float64)
        g = self.schedule.gamma(t.to(torch.float64)).view(-1, 1)
        a, s2 = torch.sigmoid(-g).sqrt(), torch.sigmoid(g)
        zf = z.flatten(1)                                   # (N, D)
        xf = self.data.flatten(1)                           # (K, D)
        d2 = (zf ** 2).sum(1, keepdim=True) - 2 * a * (zf @ xf.t()) + a ** 2 * (xf ** 2).sum(1)[None]
        w = torch.softmax(-d2 / (2 * s2), dim=1)
        x0 = (w @ xf).view_as(z)
        return (z - a.view(-1, 1, 1, 1) * x0) / s2.sqrt().view(-1, 1, 1, 1)


def closed_form_model(images_uint8, schedule_cfg: dict | None = None, variance="posterior") -> DiffusionModel:
    schedule = build_schedule(schedule_cfg or {"type": "linear", "T": 1000, "beta_start": 1e-4, "beta_end": 0.02})
    images = torch.as_tensor(images_uint8)
    return DiffusionModel(schedule, ClosedFormDenoiser(images, schedule), variance).eval()
