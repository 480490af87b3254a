"""The diffusion model seen as a Markov chain for the bits-back coder.

Latent k = 1..K of `bitsback` is z at chain time times[k-1] (t_0 < ... <
t_{K-1}): z_1 is the decoder level, z_K the top, whose prior is N(0, I).
Bit-Swap's inference model is the forward process q(z_k | z_{k-1}); the
generative conditionals are the network's p(z_k | z_{k+1}) and the decoder
p(x | z_1).  Every latent lives on a uniform grid whose bin width is a fixed
fraction of that step's noise scale (set before any latent is known, as
Bit-Swap requires): delta_k = grid_fraction * min(std q(z_k|z_{k-1}),
std p(z_k|z_{k+1})).

Network calls take float64 grid values, run in the model's dtype, and come
back as float64 means and scales; encoder and decoder make the same calls
with the same batch, which is what the determinism contract needs.

``exact=True`` (portable streams, format version 5): the network is the
model's :class:`~ddpm_codec.diffusion.exact_unet.ExactUNet`, the step maths
:class:`~ddpm_codec.codec.exact_steps.ExactSteps` and the symbol tables
bitsback's exact ones, so the conditionals are the same on every machine.
"""
from __future__ import annotations

import numpy as np
import torch

from ddpm_codec.codec.exact_steps import ExactSteps
from ddpm_codec.diffusion import process
from ddpm_codec.diffusion.model import DiffusionModel

F64 = torch.float64
# bin width / noise scale: finer costs in-flight bits, coarser costs rate. On the
# default model at T_eval 100, 1000 test images in one stream: net bits over the
# -VLB +0.114% +- 0.044% at 0.5, +0.007% +- 0.043% at 0.25 (1.0: +0.55%).
DEFAULT_GRID = 0.25


class DiffusionChain:
    def __init__(self, model: DiffusionModel, times: torch.Tensor, grid_fraction: float = DEFAULT_GRID,
                 device="cpu", exact: bool = False):
        self.model = model
        self.times = times.to(F64)
        self.exact = bool(exact)
        self.steps = ExactSteps(model, self.times.tolist()) if self.exact else None
        with torch.no_grad():
            self.gam = model.gamma(self.times).detach()
        self.device = device
        self.num_latents = int(self.times.numel())
        self.grid_fraction = float(grid_fraction)
        self.network_seconds = 0.0
        self.network_calls = 0
        self.bin_widths = [float(grid_fraction * min(self._q_std(k), self._p_std(k)))
                           for k in range(1, self.num_latents + 1)]

    # ---- fixed scales (no network) ------------------------------------
    def _q_std(self, k):
        if self.exact:
            return self.steps.sigma[0] if k == 1 else self.steps.trans_std[k - 1]
        if k == 1:
            return float(torch.sigmoid(self.gam[0]).sqrt())
        return float(process.transition(self.gam[k - 2], self.gam[k - 1])[1].sqrt())

    def _p_var(self, k):
        if k == self.num_latents:
            return torch.tensor(1.0, dtype=F64)
        return self.model.reverse_var(self.gam[k - 1], self.gam[k])

    def _p_std(self, k):
        if self.exact:
            return 1.0 if k == self.num_latents else self.steps.reverse_std_floor(k)
        return float(self._p_var(k).sqrt())

    def _net(self, z: np.ndarray, t) -> torch.Tensor:
        import time
        t0 = time.perf_counter()
        with torch.no_grad():
            eps = self._eps(z, t)
        self.network_seconds += time.perf_counter() - t0
        self.network_calls += 1
        return eps

    def _eps(self, z: np.ndarray, t) -> torch.Tensor:
        """The network's eps at latent z (float64 on the CPU); subclasses change what it sees."""
        return self.model.eps(torch.from_numpy(z).to(self.device), t, exact=self.exact).to("cpu", F64)

    # ---- the MarkovChain protocol of bitsback --------------------------
    def posterior(self, k, z_prev):
        if self.exact:
            return self.steps.posterior(k, np.asarray(z_prev, np.float64))
        z_prev = torch.from_numpy(np.asarray(z_prev, np.float64))
        if k == 1:
            a, s = process.alpha_sigma(self.gam[0])
            return (a * z_prev).numpy(), np.broadcast_to(s.numpy(), z_prev.shape)
        a, var = process.transition(self.gam[k - 2], self.gam[k - 1])
        return (a * z_prev).numpy(), np.broadcast_to(var.sqrt().numpy(), z_prev.shape)

    def prior(self, k, z_next):
        if k == self.num_latents:
            return np.float64(0.0), np.float64(1.0)
        eps = self._net(z_next, self.times[k])
        if self.exact:
            return self.steps.prior(k, np.asarray(z_next, np.float64), eps.numpy())
        z = torch.from_numpy(np.asarray(z_next, np.float64))
        mean, var = self.model.reverse(z, eps, self.gam[k - 1], self.gam[k])
        return mean.numpy(), var.sqrt().expand_as(mean).numpy()

    def likelihood(self, z1):
        eps = self._net(z1, self.times[0])
        if self.exact:
            return self.steps.likelihood(np.asarray(z1, np.float64), eps.numpy())
        mean, log_scale = process.decoder_params(torch.from_numpy(np.asarray(z1, np.float64)), eps, self.gam[0])
        return mean.numpy(), torch.exp(log_scale).numpy()

    def topdown_posterior(self, k, z_next, x):
        if self.exact:
            return self.steps.topdown_posterior(k, None if z_next is None else np.asarray(z_next, np.float64),
                                                np.asarray(x, np.float64))
        x = torch.from_numpy(np.asarray(x, np.float64))
        if k == self.num_latents:
            a, s = process.alpha_sigma(self.gam[-1])
            return (a * x).numpy(), np.broadcast_to(s.numpy(), x.shape)
        z = torch.from_numpy(np.asarray(z_next, np.float64))
        mean, var = process.posterior(z, x, self.gam[k - 1], self.gam[k])
        return mean.numpy(), var.sqrt().expand_as(mean).numpy()
