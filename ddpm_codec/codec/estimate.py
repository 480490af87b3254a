"""Predicted sizes, so that the encoder chooses before it encodes.

A unit's chain code costs about the model's -VLB for it (bits-back: the net
rate), and its classical code costs its classical bytes; a unit the model does
not know (a photo under a Fashion-MNIST model) is cheaper classically.  The
-VLB is estimated with a stratified few transitions of the coding chain
(`bound.vlb.sampled_chain_terms`: unbiased, L_T and L_0 exact), i.e. `samples`
+ 1 network calls per unit against the chain's T_eval + 1 of a real encode.
The choice is recorded in the header, so the decoder never repeats it (and it
may use any floats it likes).
"""
from __future__ import annotations

import numpy as np
import torch

from ddpm_codec.bound.vlb import sampled_chain_terms
from ddpm_codec.codec import classical_seed
from ddpm_codec.codec.units import shape_groups

ESTIMATE_SAMPLES = 4          # transitions per unit (4 of T_eval 100: the estimate is ~5% of an encode)
ESTIMATE_BATCH = 64           # units per network call


def chain_bits(units, model, times, seed: int, samples: int = ESTIMATE_SAMPLES) -> np.ndarray:
    """Estimated -VLB in bits of each unit (padded pixels) on the chain `times`."""
    out = np.zeros(len(units))
    for idx in shape_groups(units):
        for lo in range(0, len(idx), ESTIMATE_BATCH):
            part = idx[lo:lo + ESTIMATE_BATCH]
            x = torch.from_numpy(np.stack([units[i].pixels for i in part]))
            gens = [torch.Generator().manual_seed((seed + 7919 * i) % (1 << 63)) for i in part]
            with torch.no_grad():
                terms = sampled_chain_terms(model, x, times, samples, gens)
            out[part] = terms.total.numpy()
    return out


def classical_units(units, model, times, seed: int) -> dict:
    """{unit index: (codec, bytes)} of the units whose best classical code is
    smaller than their estimated chain code."""
    codes = [classical_seed.classical_best(u.pixels) for u in units]
    est = chain_bits(units, model, times, seed)
    return {i: codes[i] for i in range(len(units)) if 8 * len(codes[i][1]) < est[i]}
