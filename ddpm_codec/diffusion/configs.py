"""Named model configs: a tiny one for tests, the shipped Fashion-MNIST model,
and DDPM's CIFAR-10 model (35.7M parameters) for those with the hardware."""
from __future__ import annotations

import copy

DDPM_LINEAR = {"type": "linear", "T": 1000, "beta_start": 1e-4, "beta_end": 0.02}

CONFIGS = {
    # a few thousand parameters: unit tests and CLI smoke tests
    "tiny": {
        "schedule": DDPM_LINEAR,
        "unet": {"in_channels": 1, "base_channels": 8, "channel_mults": [1, 2], "num_res_blocks": 1,
                 "attn_resolutions": [], "dropout": 0.0, "groups": 4, "fourier_n": [], "image_size": 28},
        "variance": "posterior",
    },
    "tiny-vdm": {
        "schedule": {"type": "linear_gamma", "gamma_min": -13.3, "gamma_max": 5.0, "learned": True},
        "unet": {"in_channels": 1, "base_channels": 8, "channel_mults": [1, 2], "num_res_blocks": 1,
                 "attn_resolutions": [], "dropout": 0.0, "groups": 4, "fourier_n": [7], "image_size": 28},
        "variance": "posterior",
    },
    # the shipped default: continuous-time VDM with a learned linear schedule
    # and Fourier features, sized for CPU training and coding
    "fmnist": {
        "schedule": {"type": "linear_gamma", "gamma_min": -13.3, "gamma_max": 5.0, "learned": True},
        "unet": {"in_channels": 1, "base_channels": 32, "channel_mults": [1, 2, 2], "num_res_blocks": 2,
                 "attn_resolutions": [7], "dropout": 0.0, "groups": 8, "fourier_n": [7, 8], "image_size": 28},
        "variance": "posterior",
    },
    # the same network on DDPM's discrete linear schedule (for the README's comparison)
    "fmnist-ddpm": {
        "schedule": DDPM_LINEAR,
        "unet": {"in_channels": 1, "base_channels": 32, "channel_mults": [1, 2, 2], "num_res_blocks": 2,
                 "attn_resolutions": [7], "dropout": 0.0, "groups": 8, "fourier_n": [], "image_size": 28},
        "variance": "posterior",
    },
    # DDPM appendix B, CIFAR-10: 35.7M parameters
    "cifar10-ddpm": {
        "schedule": DDPM_LINEAR,
        "unet": {"in_channels": 3, "base_channels": 128, "channel_mults": [1, 2, 2, 2], "num_res_blocks": 2,
                 "attn_resolutions": [16], "dropout": 0.1, "groups": 32, "fourier_n": [], "image_size": 32},
        "variance": "posterior",
    },
}


def get_config(name: str) -> dict:
    if name not in CONFIGS:
        raise KeyError(f"unknown config {name!r}; known: {', '.join(sorted(CONFIGS))}")
    return copy.deepcopy(CONFIGS[name])
