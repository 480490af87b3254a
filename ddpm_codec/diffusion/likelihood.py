"""DDPM's discretized Gaussian decoder p(x | z) over the 256 pixel values (eq. 13).

Pixel v maps to x = v / 127.5 - 1; its bin is [x - 1/255, x + 1/255], the
first bin extends to -inf and the last to +inf so the 256 masses sum to one.
The log-mass of a bin is taken as a difference of log-CDFs on the side of
the mean where it does not cancel, so far tails stay finite.
"""
from __future__ import annotations

import math

import torch
from torch.special import log_ndtr

HALF_BIN = 1.0 / 255.0


def pixels_to_model(pixels: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """uint8 {0..255} -> [-1, 1]."""
    return pixels.to(dtype) / 127.5 - 1.0


def model_to_pixels(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> nearest uint8."""
    return ((x + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


def _log_diff_ndtr(lo, hi):
    """log(Phi(hi) - Phi(lo)) for lo < hi, accurate in both tails."""
    # Reflect so that the interval sits on the left tail, where log_ndtr is exact.
    flip = (lo + hi) > 0
    a = torch.where(flip, -hi, lo)
    b = torch.where(flip, -lo, hi)
    lb, la = log_ndtr(b), log_ndtr(a)
    return lb + torch.log1p(-torch.exp((la - lb).clamp(max=-1e-300 if la.dtype == torch.float64 else -1e-30)))


def discretized_gaussian_log_prob(x, mean, log_scale):
    """log p(x) for x in model units on the 256-value grid, elementwise (nats)."""
    inv = torch.exp(-log_scale)
    lo = (x - mean - HALF_BIN) * inv
    hi = (x - mean + HALF_BIN) * inv
    interior = _log_diff_ndtr(lo, hi)
    left = log_ndtr(hi)                 # bin 0: (-inf, x + 1/255]
    right = log_ndtr(-lo)               # bin 255: [x - 1/255, inf)
    edge = 1.0 - HALF_BIN
    return torch.where(x < -edge, left, torch.where(x > edge, right, interior))


def decoder_bits(x, mean, log_scale):
    """-log2 p(x | z) elementwise."""
    return -discretized_gaussian_log_prob(x, mean, log_scale) / math.log(2.0)
