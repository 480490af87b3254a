"""Training: Adam, EMA, gradient clipping, flips, periodic test bits/dim,
atomic checkpoints and exact resume; data-parallel under torchrun.

One loop for every objective (`TrainConfig.objective`, the loss chosen in
`LossModule`): the VLB or L_simple for a model trained from its config or
fine-tuned from `base`, and "pixel_groups", the companion of `base` for the
pixel-group codec (`groups.conditional_from(base)`, schedule frozen, the group
objective of `groups.group_loss`, evaluated as the group diffusion bits/dim).

Randomness is drawn for the *global* batch from one generator on every rank
(times, noise, flips, data order), and each rank takes its slice, so N ranks
compute the same update as one process with the same global batch, and a run
can resume on a different number of ranks.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from ddpm_codec.bound.losses import training_loss
from ddpm_codec.bound.vlb import sampled_chain_terms
from ddpm_codec.diffusion import pixel_groups
from ddpm_codec.diffusion.configs import get_config
from ddpm_codec.diffusion.likelihood import pixels_to_model
from ddpm_codec.diffusion.model import DiffusionModel
from ddpm_codec.io.checkpoint import CheckpointError, load_model, save_model
from ddpm_codec.training import distributed as dist
from ddpm_codec.training import groups
from ddpm_codec.training.ema import EMA
from ddpm_codec.training.time_samplers import make_sampler

EVAL_STRATA = 20          # transitions per test image in the discrete-time evaluation
from ddpm_codec.training.config import OBJECTIVES, PIXEL_GROUPS_RECIPE, TrainConfig  # noqa: E402,F401


class LossModule(nn.Module):
    """Wraps the model so DistributedDataParallel sees one forward per step;
    the one place the objective picks the loss.  Returns (reported bits/dim,
    surrogate, times, per-sample term), per image."""

    def __init__(self, model: DiffusionModel, objective: str, group_index: torch.Tensor | None = None):
        super().__init__()
        self.model, self.objective, self.group_index = model, objective, group_index

    def forward(self, x, times, weights, eps, eps0, target=None):
        if self.objective == "pixel_groups":
            # each image's drawn group (p ~ size), averaged over its dims: unbiased for the sum per dim
            bpd = groups.group_loss(self.model, x, self.group_index, target, times.float(), eps)
            return bpd.detach(), bpd, times, bpd.detach()
        return training_loss(self.model, x, times, weights, eps, eps0, self.objective)


def initial_model(cfg: TrainConfig, model_config: dict | None = None) -> tuple[DiffusionModel, str | None]:
    """(model to train, fingerprint of `cfg.base` or None): a fresh model from its
    config, the base model itself, or for "pixel_groups" the base's conditional
    net with the schedule frozen (the chain stays the base's)."""
    if cfg.objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, not {cfg.objective!r}")
    if cfg.base is None:
        if cfg.objective == "pixel_groups":
            raise ValueError("objective 'pixel_groups' fine-tunes a base model: set base")
        return DiffusionModel.from_config(model_config or get_config(cfg.model)), None
    if model_config is not None:
        raise ValueError("give a base model or a model config, not both")
    model, meta = load_model(cfg.base)
    if cfg.objective == "pixel_groups":
        if not model.schedule.continuous:
            raise ValueError(f"pixel groups need a continuous-time base model; {cfg.base} has a discrete schedule")
        model = groups.conditional_from(model)
        for p in model.schedule.parameters():
            p.requires_grad_(False)
    return model.train(), meta["fingerprint"]


def _optim_to_tensors(opt: torch.optim.Optimizer):
    sd = opt.state_dict()
    tensors = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            tensors[f"state.{idx}.{k}"] = torch.as_tensor(v).clone()
    return tensors, sd["param_groups"]


def _optim_from_tensors(opt, tensors, param_groups):
    state = {}
    for key, v in tensors.items():
        _, idx, k = key.split(".", 2)
        state.setdefault(int(idx), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": param_groups})


class Trainer:
    def __init__(self, cfg: TrainConfig, train_data: np.ndarray, test_data: np.ndarray | None,
                 model_config: dict | None = None, device="cpu"):
        self.cfg = cfg
        self.device = torch.device(device)
        self.rank, self.world = dist.rank(), dist.world_size()
        if cfg.batch_size % self.world:
            raise ValueError(f"global batch {cfg.batch_size} is not divisible by {self.world} ranks")
        if len(train_data) < cfg.batch_size:       # else a ZeroDivisionError at the first step
            from ddpm_codec.data.datasets import DataError
            raise DataError(f"{len(train_data)} training images, fewer than the global batch {cfg.batch_size}")
        torch.manual_seed(cfg.seed)
        model, self.base_fingerprint = initial_model(cfg, model_config)
        self.model = model.to(self.device)
        self.ema = EMA(self.model, cfg.ema_decay)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.sampler = make_sampler(self.model.schedule, cfg.time_sampler, self.gen)
        self.group_index, self.group_sizes = None, None
        if cfg.objective == "pixel_groups":
            h, w = train_data.shape[-2:]
            self.group_index = torch.from_numpy(pixel_groups.group_index(h, w)).view(1, 1, h, w).to(self.device)
            self.group_sizes = pixel_groups.group_sizes(h * w)
        # what the reported figure is (log keys): the -VLB, or the group codec's diffusion bits/dim
        self.metric, self.eval_key = (("group_bpd", "test_group_bpd") if cfg.objective == "pixel_groups"
                                      else ("vlb_bpd", "test_vlb_bpd_mc"))
        self.loss = dist.wrap(LossModule(self.model, cfg.objective, self.group_index), self.device)
        self.train_data, self.test_data = train_data, test_data
        self.step = 0
        self.out = Path(cfg.out)
        self.log_path = self.out / "log.jsonl"

    # ---- data --------------------------------------------------------
    def _global_batch_indices(self, step):
        n = len(self.train_data)
        per_epoch = n // self.cfg.batch_size
        epoch, k = divmod(step, per_epoch)
        perm = np.random.default_rng([self.cfg.seed, epoch]).permutation(n)
        return perm[k * self.cfg.batch_size:(k + 1) * self.cfg.batch_size]

    def _draw(self, b_global, shape):
        """Times, weights, noise, flips and (pixel groups) target groups for the
        global batch (same on every rank)."""
        times, weights = self.sampler.sample(b_global)
        eps = torch.randn((b_global, *shape), generator=self.gen)
        eps0 = torch.randn((b_global, *shape), generator=self.gen)
        flips = torch.rand(b_global, generator=self.gen) < 0.5
        target = groups.draw_targets(self.group_sizes, b_global, self.gen) if self.group_sizes else None
        return times, weights, eps, eps0, flips, target

    def _lr(self, step):
        c = self.cfg
        warm = min(1.0, (step + 1) / max(1, c.warmup))
        frac = min(1.0, step / max(1, c.steps))
        decay = c.lr_decay_to + (1 - c.lr_decay_to) * 0.5 * (1 + math.cos(math.pi * frac))
        return c.lr * warm * decay

    def train_step(self):
        c = self.cfg
        idx = self._global_batch_indices(self.step)
        shape = self.train_data.shape[1:]
        times, weights, eps, eps0, flips, target = self._draw(len(idx), shape)
        lo, hi = dist.slice_bounds(len(idx), self.rank, self.world)
        x = torch.from_numpy(self.train_data[idx[lo:hi]])
        x = pixels_to_model(x)
        if c.flips:
            f = flips[lo:hi]
            x[f] = x[f].flip(-1)
        def sl(a):
            return a[lo:hi].to(self.device)
        for g in self.opt.param_groups:
            g["lr"] = self._lr(self.step)
        self.model.train()
        with dist.autocast(self.device, c.amp):
            vlb, surrogate, t_used, term = self.loss(x.to(self.device), sl(times), sl(weights), sl(eps), sl(eps0),
                                                     None if target is None else sl(target))
        # mean over the *global* batch: DDP averages gradients over ranks
        loss = surrogate.float().mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
        self.opt.step()
        self.step += 1
        self.ema.update(self.model, self.step)
        all_t, all_term, all_vlb = dist.gather_cat([t_used.cpu().double(), term.cpu().double(), vlb.cpu().double()])
        self.sampler.update(all_t, all_term)
        return float(all_vlb.mean()), float(gnorm)

    # ---- evaluation ---------------------------------------------------
    @torch.no_grad()
    def evaluate(self, n=None, batch=250):
        """Test -VLB (bits/dim) with the EMA weights and fixed randomness; for
        "pixel_groups" the group diffusion bits/dim (`groups.evaluate`, one batch).

        Continuous time: the VDM MC estimate (one t per image; its variance is
        low).  Discrete time: one uniform t per image is far too noisy (the
        terms near t = 1 are orders of magnitude above the rest: a 2000-step
        DDPM run read 5.78 where the full chain gives 3.18), so the T-step chain
        is evaluated with a stratified sample of EVAL_STRATA transitions per
        image (:func:`vlb.sampled_chain_terms`, unbiased), L_T and L_0 exact."""
        if self.test_data is None:
            return None
        n = min(n or self.cfg.eval_n, len(self.test_data))
        model = self.ema.model
        if self.cfg.objective == "pixel_groups":
            x = pixels_to_model(torch.from_numpy(np.ascontiguousarray(self.test_data[:n])))
            return groups.evaluate(model, x.to(self.device), self.group_index, self.group_sizes)
        if not model.schedule.continuous:
            times = model.schedule.chain(model.schedule.T)
            dims = int(np.prod(self.test_data.shape[1:]))
            bits = []
            for a in range(0, n, batch):
                px = torch.from_numpy(np.ascontiguousarray(self.test_data[a:a + min(batch, n - a)]))
                gens = [torch.Generator().manual_seed(12345 + a + j) for j in range(len(px))]
                bits.append(sampled_chain_terms(model, px.to(self.device), times, EVAL_STRATA, gens).total)
            return float(torch.cat(bits).mean()) / dims
        g = torch.Generator().manual_seed(12345)
        sampler = make_sampler(model.schedule, "uniform", g)
        vals = []
        for a in range(0, n, batch):
            x = pixels_to_model(torch.from_numpy(np.ascontiguousarray(self.test_data[a:a + min(batch, n - a)])))
            b = x.shape[0]
            times, weights = sampler.sample(b)
            eps, eps0 = torch.randn(x.shape, generator=g), torch.randn(x.shape, generator=g)
            with torch.enable_grad():
                vlb, *_ = training_loss(model, x.to(self.device), times.to(self.device), weights.to(self.device),
                                        eps.to(self.device), eps0.to(self.device))
            vals.append(vlb.cpu())
        return float(torch.cat(vals).mean())

    # ---- checkpoints --------------------------------------------------
    def save(self):
        """Atomic: write into a fresh folder, then swap it in for `last`."""
        if self.rank != 0:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = self.out / f".tmp-{self.step}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        base = {"base_fingerprint": self.base_fingerprint} if self.base_fingerprint else {}
        save_model(self.ema.model, tmp / "model", {"ema": True, "step": self.step, "train": asdict(self.cfg),
                                                  "note": "weights are the EMA of training weights", **base})
        save_file({k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()},
                  str(tmp / "raw.safetensors"))
        otensors, param_groups = _optim_to_tensors(self.opt)
        otensors["rng.torch"] = self.gen.get_state()
        otensors["rng.global"] = torch.get_rng_state()          # dropout draws from the global generator
        if self.device.type == "cuda":
            otensors["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        save_file(otensors, str(tmp / "optim.safetensors"))
        state = {"step": self.step, "param_groups": param_groups, "sampler": self.sampler.state_dict(),
                 "train": asdict(self.cfg), "world_size": self.world, **base}
        (tmp / "state.json").write_text(json.dumps(state))
        last, old = self.out / "last", self.out / "last.old"
        if old.exists() and not last.exists():      # a save was killed between its renames
            os.replace(old, last)
        if old.exists():
            shutil.rmtree(old)
        for stray in self.out.glob(".tmp-*"):        # folders of saves killed mid-write
            if stray != tmp:
                shutil.rmtree(stray, ignore_errors=True)
        if last.exists():
            os.replace(last, old)
        os.replace(tmp, last)
        if old.exists():
            shutil.rmtree(old)

    def resume(self, path=None) -> bool:
        """Restore weights, EMA, optimizer, sampler history, step and RNG."""
        base = Path(path) if path else self.out
        for cand in (base / "last", base / "last.old", base):
            if (cand / "state.json").exists():
                break
        else:
            if path:
                raise CheckpointError(f"no training checkpoint under {base}")
            return False
        try:
            state = json.loads((cand / "state.json").read_text())
        except Exception as e:  # noqa: BLE001 - any damage is reported the same way
            raise CheckpointError(f"training checkpoint {cand} is damaged: {e}")
        if state.get("base_fingerprint") != self.base_fingerprint:
            theirs, ours = state.get("base_fingerprint"), self.base_fingerprint
            raise CheckpointError(f"training checkpoint {cand} started from "
                                  f"{f'base model {theirs[:16]}' if theirs else 'a fresh model'}, this run from "
                                  f"{f'base model {ours[:16]}' if ours else 'a fresh model'}")
        try:
            raw = load_file(str(cand / "raw.safetensors"))
            otensors = load_file(str(cand / "optim.safetensors"))
            ema = load_file(str(cand / "model.safetensors"))
            self.model.load_state_dict(raw)
            self.ema.model.load_state_dict(ema)
            self.gen.set_state(otensors.pop("rng.torch"))
        except Exception as e:  # noqa: BLE001 - any damage is reported the same way
            raise CheckpointError(f"training checkpoint {cand} is damaged: {e}")
        if "rng.global" in otensors:                              # absent in older checkpoints
            torch.set_rng_state(otensors.pop("rng.global"))
        if "rng.cuda" in otensors:
            cuda_state = otensors.pop("rng.cuda")
            if self.device.type == "cuda":
                torch.cuda.set_rng_state(cuda_state, self.device)
        _optim_from_tensors(self.opt, otensors, state["param_groups"])
        self.sampler.load_state_dict(state.get("sampler"))
        self.step = int(state["step"])
        return True

    def describe(self, ev: float) -> str:
        n = min(self.cfg.eval_n, len(self.test_data))
        if self.metric == "group_bpd":
            return f"test group diffusion {ev:.4f} bits/dim (EMA, {n} images, fixed times and noise)"
        return f"test -VLB {ev:.4f} bits/dim (MC estimate, EMA, {n} images, D = C*H*W)"

    def log(self, rec):
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "a") as f:
                f.write(json.dumps(rec) + "\n")

    def fit(self, progress=True):
        c = self.cfg
        last_ckpt = time.time()
        t0 = time.time()
        start = self.step
        bar = tqdm(total=c.steps, initial=self.step, disable=not progress or self.rank != 0,
                   desc="train", dynamic_ncols=True)
        run = None
        while self.step < c.steps:
            vlb, gnorm = self.train_step()
            run = vlb if run is None else 0.98 * run + 0.02 * vlb
            bar.update(1)
            bar.set_postfix({self.metric: f"{run:.3f}"})
            if self.step % 50 == 0:
                self.log({"step": self.step, f"train_{self.metric}": run, "grad_norm": gnorm,
                          "lr": self._lr(self.step), "elapsed_s": time.time() - t0,
                          "steps_per_s": (self.step - start) / (time.time() - t0)})
            if c.eval_every and self.step % c.eval_every == 0 and self.rank == 0:
                ev = self.evaluate()
                if ev is not None:
                    self.log({"step": self.step, self.eval_key: ev, "eval_n": c.eval_n, "ema": True})
                    bar.write(f"step {self.step}: {self.describe(ev)}")
            if self.step % c.ckpt_every == 0 or time.time() - last_ckpt > 60 * c.ckpt_minutes:
                self.save()
                last_ckpt = time.time()
        self.save()
        bar.close()
        return self.step
