"""Ancestral sampling (DDPM Algorithm 2) over any chain, with the progressive
x0_hat estimates of DDPM Fig. 6 recorded along the way."""
from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from ddpm_codec.diffusion import process
from ddpm_codec.diffusion.likelihood import model_to_pixels
from ddpm_codec.diffusion.model import DiffusionModel


@torch.no_grad()
def sample(model: DiffusionModel, n: int, steps: int, size: tuple[int, int] | None = None, seed: int = 0,
           snapshots: int = 8, progress: bool = True):
    """Returns (uint8 samples (n, C, H, W), uint8 progressive x0_hat (n, snapshots, C, H, W)).

    z_T ~ N(0, I); z_s ~ p(z_s | z_t) down the chain; the image is the mode
    of the discretized decoder, i.e. x0_hat(z_t0) rounded to the pixel grid."""
    g = torch.Generator().manual_seed(int(seed))
    h, w = size or (model.unet.cfg.image_size,) * 2
    times = model.schedule.chain(steps)
    gam = model.gamma(times)
    z = torch.randn((n, model.channels, h, w), generator=g, dtype=torch.float64)
    keep = set(np.linspace(times.numel() - 1, 0, snapshots).round().astype(int).tolist())
    frames = []
    for k in tqdm(range(times.numel() - 1, 0, -1), desc="sample", disable=not progress):
        eps_hat = model.eps(z, times[k]).double()
        if k in keep:
            frames.append(model_to_pixels(process.predict_x0(z, eps_hat, gam[k]).clamp(-1, 1)))
        mean, var = model.reverse(z, eps_hat, gam[k - 1], gam[k])
        z = mean + var.sqrt() * torch.randn(z.shape, generator=g, dtype=torch.float64)
    mean, _ = model.decoder_params(z, times[0])
    final = model_to_pixels(mean.clamp(-1, 1))
    frames.append(final)
    return final.numpy(), torch.stack(frames, 1).numpy()


def grid(images: np.ndarray, pad: int = 2) -> np.ndarray:
    """(rows, cols, C, H, W) uint8 -> one (H', W', C) image with padding."""
    r, c, ch, h, w = images.shape
    out = np.full((r * (h + pad) + pad, c * (w + pad) + pad, ch), 255, np.uint8)
    for i in range(r):
        for j in range(c):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            out[y:y + h, x:x + w] = images[i, j].transpose(1, 2, 0)
    return out
