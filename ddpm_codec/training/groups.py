"""The pixel-group companion: a conditional net fine-tuned from an unconditional model.

    ddpm-codec train-groups --out DIR [--base default] [--steps N] ... [--export PATH]

The net starts as the base model (its conditioning conv is zero), keeps the
base's schedule, chain times and reverse-variance table, and learns the
objective the group codec pays: the sum over groups of each group's
continuous-time diffusion loss given the groups decoded before it (VDM eq.
17 restricted to the group's dims).  A group is drawn per image with
probability proportional to its size and its loss averaged over its dims, an
unbiased estimate of that sum per dim.  The loop, checkpoints and resume are
the trainer's (`TrainConfig.objective = "pixel_groups"`); this module holds
the objective, its evaluation and the export.
"""
from __future__ import annotations

import copy
import json
import math

import numpy as np
import torch

from ddpm_codec.diffusion import pixel_groups, process
from ddpm_codec.diffusion.likelihood import pixels_to_model
from ddpm_codec.diffusion.model import DiffusionModel
from ddpm_codec.io.checkpoint import save_model

LOG2 = math.log(2.0)
REFIT_IMAGES, REFIT_GRID = 128, 100      # export --refit-variance: train images, times 0, 1/grid, ..., 1


def conditional_from(base: DiffusionModel) -> DiffusionModel:
    """The base model with a zero conditioning conv: the same eps at init."""
    cfg = json.loads(json.dumps(base.config()))
    cfg["unet"]["cond_channels"] = pixel_groups.COND_CHANNELS
    model = DiffusionModel.from_config(cfg)
    missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("unet.cond_in") for k in missing), (missing, unexpected)
    return model


def group_loss(model: DiffusionModel, x: torch.Tensor, groups: torch.Tensor, target: torch.Tensor,
               t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Per-image diffusion loss (bits per target dim) of each image's target group."""
    sch = model.schedule
    t = t.detach().requires_grad_(True)
    g = sch.gamma(t)
    (dg,) = torch.autograd.grad(g.sum(), t, create_graph=False)
    g = g.detach().view(-1, 1, 1, 1).to(x.dtype)
    known, tgt = pixel_groups.masks(groups, target)
    alpha = torch.sigmoid(-g).sqrt()
    z = process.q_sample(x, g, eps)
    canvas, cond = pixel_groups.network_input(z, x, known, tgt, alpha)
    eps_hat = model.eps(canvas, t.detach(), cond)
    tf = tgt.to(x.dtype)
    mse = (((eps - eps_hat) ** 2) * tf).flatten(1).sum(1) / tf.flatten(1).sum(1)
    return 0.5 * dg.detach().to(x.dtype) * mse / LOG2


@torch.no_grad()
def group_eps_error(model: DiffusionModel, pixels: torch.Tensor, grid: int = 100, bins: int = 16,
                    seed: int = 0, progress=None) -> np.ndarray:
    """The reverse-variance table (`DiffusionModel.set_eps_error`) refitted for
    the group chains: per-dim E|eps - eps_hat|^2 on each group's own dims given
    the groups before it, pooled over the groups, per bin of the predicted x0,
    at t = 0, 1/grid, ..., 1 (common random numbers across t).  Why: the base
    model's table measures the joint net's error; given known pixels the error
    is smaller, and a variance sized for the larger error costs rate."""
    from ddpm_codec.bound.chain_times import per_dim_table
    from ddpm_codec.diffusion.model import x0_bins
    x = pixels_to_model(torch.as_tensor(pixels), torch.float32)
    groups = torch.from_numpy(pixel_groups.group_index(*x.shape[-2:])).view(1, 1, *x.shape[-2:])
    gen = torch.Generator().manual_seed(seed)
    eps = torch.randn(x.shape, generator=gen)
    K = int(groups.max()) + 1
    m, n = np.zeros((grid + 1, bins)), np.zeros((grid + 1, bins))
    for j, t in enumerate(np.linspace(0.0, 1.0, grid + 1)):
        tt = torch.tensor(float(t), dtype=torch.float64)
        g = model.gamma(tt).float()
        z = process.q_sample(x, g, eps)
        for k in range(K):
            known, tgt = pixel_groups.masks(groups, torch.full((x.shape[0],), k))
            canvas, cond = pixel_groups.network_input(z, x, known, tgt, torch.sigmoid(-g).sqrt())
            e = model.eps(canvas, tt, cond)
            sel = tgt.expand_as(x).flatten()
            sq = ((eps - e) ** 2).double().flatten()[sel]
            b = x0_bins(process.predict_x0(z.double(), e.double(), g.double()), bins).flatten()[sel]
            m[j] += torch.bincount(b, sq, bins).numpy()
            n[j] += torch.bincount(b, minlength=bins).double().numpy()
        if progress:
            progress(1)
    e = per_dim_table(m / x.shape[0], n / x.shape[0])
    return np.vectorize(lambda v: float(f"{v:.6g}"))(e)


def export(model: DiffusionModel, path, base_fingerprint: str, step: int, refit_pixels=None,
           grid: int = REFIT_GRID, extra: dict | None = None) -> str:
    """Write the companion PATH.{safetensors,json} (`checkpoint.load_companion`
    reads it beside its base, PATH = BASE_groups) from a run's EMA net, keeping
    the base model's reverse-variance table or, given `refit_pixels` (training
    images, uint8), with it refitted on them (`group_eps_error`; on the shipped
    net it cost 0.03 bits/dim on 4 test images alone, 2.784 against 2.753, so the
    shipped net keeps the base's); returns its fingerprint."""
    model = copy.deepcopy(model).cpu().eval()    # a refit changes the table: the caller's net stays as it is
    meta = {"ema": True, "step": step, "base_fingerprint": base_fingerprint,
            "note": "EMA weights, pixel-group conditional net (ddpm-codec train-groups)", **(extra or {})}
    if refit_pixels is not None:
        model.set_eps_error(group_eps_error(model, refit_pixels, grid=grid))
        meta["eps_error_fit"] = {"n_images": len(refit_pixels), "grid": grid}
    return save_model(model, path, meta)


def draw_targets(sizes: list[int], n: int, gen: torch.Generator) -> torch.Tensor:
    """n target groups, each drawn with probability proportional to its size."""
    p = torch.tensor(sizes, dtype=torch.float64)
    return torch.multinomial(p / p.sum(), n, replacement=True, generator=gen)


@torch.no_grad()
def evaluate(model, x, groups, sizes, seed=0) -> float:
    """Mean diffusion bits/dim over all groups of the images (fixed noise and
    times: comparable across checkpoints)."""
    gen = torch.Generator().manual_seed(seed)          # drawn on the CPU: the same figure on any device
    total = torch.zeros(x.shape[0], dtype=torch.float64)
    dims = sum(sizes)
    for k, s in enumerate(sizes):
        t = (torch.arange(x.shape[0]) + torch.rand(x.shape[0], generator=gen)) / x.shape[0]
        t = t[torch.randperm(x.shape[0], generator=gen)]
        eps = torch.randn(x.shape, generator=gen)
        with torch.enable_grad():
            b = group_loss(model, x, groups, torch.full((x.shape[0],), k, device=x.device), t.to(x.device),
                           eps.to(x.device))
        total += b.double().cpu() * s / dims
    return float(total.mean())
