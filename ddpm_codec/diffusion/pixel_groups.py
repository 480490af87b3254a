"""One image as pixel groups, each coded given the groups decoded before it.

Why: bits-back must have bits in flight before its pushes pay back (about 8
bits/dim on the default chain), and one image alone has no other data to
take them from.  Cut into groups, it can fund itself: the decoder decodes
group 0 first, then group 1 given group 0, ...; the encoder codes them in
the reverse order, so the last group (small, and the best predicted, since
it knows every other pixel) goes first on a nearly empty stack, and each
later one pops the code of those before it.  The groups must grow no faster
than the stack does: decode-order sizes fall geometrically.

The model is a conditional net (`UNetConfig.cond_channels` = 3): the network
input z holds the latent on the target group, the known pixels scaled as
the forward process's mean (alpha_t x) and zero elsewhere; the conditioning
planes are the known pixels (zero elsewhere), the known mask and the target
mask.  The partition is a fixed pseudorandom order of the pixels cut into
`GROUP_FRACTIONS`, so the known pixels of every group spread evenly over
the image.
"""
from __future__ import annotations

import numpy as np
import torch

# decode order, largest first; each about 1.25 times the next (stack growth with
# ~2 bits per known pixel against ~8 bits per dim in flight), for 784 pixels:
# 173, 141, 113, 90, 72, 58, 46, 37, 30, 24
GROUP_FRACTIONS = (173, 141, 113, 90, 72, 58, 46, 37, 30, 24)
PERMUTATION_SEED = 20261206
COND_CHANNELS = 3


def group_sizes(n_pixels: int) -> list[int]:
    """Decode-order group sizes for an image of n_pixels (GROUP_FRACTIONS scaled)."""
    total = sum(GROUP_FRACTIONS)
    cuts = [round(n_pixels * c / total) for c in np.cumsum(GROUP_FRACTIONS)]
    sizes = list(np.diff([0, *cuts]).astype(int))
    return [int(s) for s in sizes if s > 0]


def group_index(height: int, width: int) -> np.ndarray:
    """(H, W) int array: each pixel's group in decode order."""
    n = height * width
    perm = np.random.default_rng(PERMUTATION_SEED).permutation(n)
    g = np.empty(n, np.int64)
    start = 0
    for k, s in enumerate(group_sizes(n)):
        g[perm[start:start + s]] = k
        start += s
    return g.reshape(height, width)


def masks(groups: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(known, target) boolean masks shaped like `groups` for per-image target
    group indices (`target` broadcastable to groups' leading dims)."""
    t = target.view(-1, *([1] * (groups.dim() - 1)))
    return groups < t, groups == t


def network_input(z: torch.Tensor, x: torch.Tensor, known: torch.Tensor, target: torch.Tensor,
                  alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(z canvas, conditioning planes) for the conditional net.

    z: latent (values off the target are ignored); x: the image in model units
    (values off the known pixels are ignored); masks (N, 1, H, W); alpha the
    forward process's alpha_t, broadcastable."""
    kf, tf = known.to(z.dtype), target.to(z.dtype)
    canvas = tf * z + kf * (alpha * x)
    cond = torch.cat([kf * x, kf, tf], dim=1)
    return canvas, cond
