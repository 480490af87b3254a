"""Exponential moving average of weights; evaluation and shipping use it."""
from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, decay: float = 0.999):
        self.decay = float(decay)
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int):
        # warm-up (as in many DDPM ports): the effective decay grows with the
        # step so early averages are not dominated by the random init
        d = min(self.decay, (1 + step) / (10 + step))
        # frozen parameters (the companion's schedule) are copied: averaging a
        # constant with itself drifts by rounding, and the chain must stay the base's
        frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
        for (name, e), p in zip(self.model.state_dict().items(), model.state_dict().values()):
            if e.dtype.is_floating_point and name not in frozen:
                e.mul_(d).add_(p.detach(), alpha=1 - d)
            else:
                e.copy_(p)
