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
# A unit goes classical only when its classical code is below this share of its
# estimated chain code: 4 transitions leave a few percent of noise per unit, and a
# marginal unit coded either way costs about the same (default model, 84x84 mosaic of
# test images in 28-pixel tiles at T_eval 25: one tile went classical at a 1.00 share,
# +2.4% on the stream; none at 0.95)
CLASSICAL_SHARE = 0.95
# ... and a unit between these shares of its 4-transition estimate is measured again
# with REFINE_SAMPLES more before it is decided: on the first 1000 test images, 4 units
# passed the cheap test, and 3 of them cost 15-32% more classically by a 50-transition
# estimate (the stream lost 0.03%); below the lower share the classical code wins by far
# (real photographs: 0.3-0.7), so those need no second look.
REFINE_SHARES = (0.7, CLASSICAL_SHARE)
REFINE_SAMPLES = 32


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


class UnitCosts:
    """Per unit of one layout: the best classical code and the estimated chain
    bits, computed once and shared by the layout choice and the encoder."""

    def __init__(self, units, model, times, seed: int):
        self.codes = [classical_seed.classical_best(u.pixels) for u in units]
        self.classical_bits = np.array([8.0 * len(c[1]) for c in self.codes])
        self.chain_bits = chain_bits(units, model, times, seed)
        self._refine(units, model, times, seed)

    def _refine(self, units, model, times, seed):
        """Measure the marginal units again (`REFINE_SHARES`) and pool the two estimates."""
        share = self.classical_bits / self.chain_bits
        marginal = [i for i in range(len(units)) if REFINE_SHARES[0] <= share[i] < REFINE_SHARES[1]]
        if not marginal:
            return
        again = chain_bits([units[i] for i in marginal], model, times, seed + 1, REFINE_SAMPLES)
        w = ESTIMATE_SAMPLES / (ESTIMATE_SAMPLES + REFINE_SAMPLES)
        self.chain_bits[marginal] = w * self.chain_bits[marginal] + (1 - w) * again

    def cheaper_classically(self) -> dict:
        """{unit index: (codec, bytes)} of the units whose classical code is smaller."""
        return {i: self.codes[i] for i in range(len(self.codes))
                if self.classical_bits[i] < CLASSICAL_SHARE * self.chain_bits[i]}

    def predicted_bits(self) -> float:
        """The stream's predicted payload: each unit's cheaper code, plus, when no
        unit is classical, one seed unit's classical excess over its chain code
        (the first chain group's pops must read real data; so one unit alone is
        predicted at its classical code)."""
        c, e = self.classical_bits, self.chain_bits
        classical = c < CLASSICAL_SHARE * e
        total = float(np.where(classical, c, e).sum())
        if not classical.any():
            total += float((c - e).min())
        return total
