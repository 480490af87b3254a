"""Training defaults in one torch-free place: TrainConfig and the named
recipes as overrides of it (the CLI's option defaults are read from here, so
`ddpm-codec --help` does not import torch)."""
from __future__ import annotations

from dataclasses import dataclass

OBJECTIVES = ("vlb", "simple", "pixel_groups")


@dataclass
class TrainConfig:
    model: str = "fmnist"               # named config (ddpm_codec.diffusion.configs); unused with `base`
    data: str = "fashion_mnist"
    out: str = "runs/fmnist"
    steps: int = 20000
    batch_size: int = 64                # global batch (all ranks together)
    lr: float = 2e-4
    warmup: int = 200
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    flips: bool = False
    objective: str = "vlb"              # vlb | simple | pixel_groups (the companion of `base`)
    base: str | None = None             # start from this model file ("default": the shipped one)
    time_sampler: str = "importance"    # importance | uniform (discrete); continuous uses low-discrepancy
    seed: int = 0
    eval_every: int = 1000
    eval_n: int = 500
    ckpt_every: int = 500
    ckpt_minutes: float = 10.0
    amp: bool = False                   # bf16 autocast (GPU only)
    lr_decay_to: float = 1.0            # cosine decay to lr * lr_decay_to at `steps`


# The shipped pixel-group companion (ddpm_codec/weights/default_groups.*,
# benchmarks/train_groups.sh) as overrides of TrainConfig: the shipped model
# fine-tuned on the group objective for 5000 steps, cosine to zero, its test
# figure every 500 steps on 256 images; batch 64, lr 2e-4 after 200 warmup
# steps, EMA 0.999 and clip 1 are TrainConfig's own.
PIXEL_GROUPS_RECIPE = {"objective": "pixel_groups", "base": "default", "out": "runs/groups", "steps": 5000,
                       "lr_decay_to": 0.0, "eval_every": 500, "eval_n": 256}
