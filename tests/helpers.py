"""Shared builders for tests (importable as `helpers`: pytest puts tests/ on sys.path)."""
import torch

from ddpm_codec.diffusion.configs import get_config
from ddpm_codec.diffusion.model import DiffusionModel


def random_model(config="tiny", seed=0, scale=0.02) -> DiffusionModel:
    """A model from a config name (or dict) with every parameter moved by
    N(0, scale^2) noise from torch seed `seed`: a non-trivial eps network
    (conv_out starts at zero), in eval mode."""
    torch.manual_seed(seed)
    m = DiffusionModel.from_config(get_config(config) if isinstance(config, str) else config)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * scale)
    return m.eval()
