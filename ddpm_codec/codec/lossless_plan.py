"""The plan of a lossless stream, and the one codec it defines.

The encoder's trial and error (how many classical seed units, which unit
first, how large each Bit-Swap group, which coarse grids, where PRNG top-ups)
ends in a :class:`Plan`; the header stores exactly the plan.  `stream_codec`
turns a plan into one composite codec (:mod:`bitsback.ans.codecs`):

    serial([seed, group_0, ..., group_{n-1}])     group_n = bitswap, or
                                                  serial([top-up words, bitswap])

over the units in coding order.  The encoder's search calls the pushes of
exactly these codecs, in this order, and the decoder is the composite's pop:
nothing in the decoder mirrors the encoder by hand.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from bitsback.ans.codecs import base_words, known_words, serial, tap
from bitsback.ans.initial import seeded_words
from bitsback.chains import bitswap
from bitsback.errors import DecodeMismatch
from ddpm_codec.codec import classical_seed
from ddpm_codec.codec.units import coding_order, pick_first
from ddpm_codec.format import container
from ddpm_codec.format.compact import is_uint

# Grid fractions a one-unit group may fall back to while the stack is small
# (lossless.py says why); the header stores an index into this tuple.
COARSE_GRIDS = (0.5, 1.0, 2.0)
MAX_TOPUP_WORDS = 1 << 24
HEADER_MIN_GRID, HEADER_MAX_GRID = 1e-6, 1e3   # what a decoder accepts from a header


class SeedMode(str, enum.Enum):
    """What funds the first pops: classical codes of the first units, or PRNG words."""
    CLASSICAL = "classical"
    RANDOM = "random"


@dataclass(frozen=True)
class Step:
    """One Bit-Swap group: units order[start:start + size] on latent grid
    `grid`, over `topup` PRNG words pushed just before it."""
    start: int
    size: int
    grid: float
    topup: int = 0


@dataclass(frozen=True)
class Plan:
    seed_mode: SeedMode
    seed_pick: int                  # position in coding order of the unit coded first
    seed_codecs: tuple              # classical seed: one codec name per seed unit
    seed_words: int                 # random seed: PRNG words under the first group
    grid: float                     # the main latent grid (bin width / noise scale)
    steps: tuple                    # of Step, in coding order
    classical: tuple = ()           # units stored classically by choice (ascending): first in coding order

    def order(self, units) -> list[int]:
        """Units in coding order: the classical choices, then the rest by shape
        (`units.coding_order`) with position `seed_pick` of them moved first."""
        chosen = set(self.classical)
        rest = [i for i in coding_order(units) if i not in chosen]
        return [*self.classical, *pick_first(rest, self.seed_pick)]

    @property
    def seed_units(self) -> int:
        return len(self.seed_codecs) if self.seed_mode is SeedMode.CLASSICAL else 0

    def header_fields(self) -> dict:
        """The plan as header fields (the caller leaves out the defaults)."""
        h = {"seed_mode": self.seed_mode.value,
             "seed_codecs": [classical_seed.SEED_CODECS.index(c) for c in self.seed_codecs],
             "seed_pick": self.seed_pick, "groups": [s.size for s in self.steps],
             "classical": list(self.classical)}
        if self.steps:
            h["grid_fraction"] = self.grid
            h["coarse"] = [v for n, s in enumerate(self.steps) if s.grid != self.grid
                           for v in (n, COARSE_GRIDS.index(s.grid))]
            h["topups"] = [[n, s.topup] for n, s in enumerate(self.steps) if s.topup]
            if self.seed_mode is SeedMode.RANDOM:
                h["seed_words"] = int(self.seed_words)
        return h

    @classmethod
    def from_header(cls, h: dict, n_images: int, payload_bytes: int) -> "Plan":
        """The plan a header describes, every field's type and bound checked
        (StreamError otherwise); `h` holds the header defaults filled in."""
        F = container.field
        sizes = F(h, "groups", list)
        if len(sizes) > (1 << 24) or not all(is_uint(v) and v >= 1 for v in sizes):
            raise container.StreamError("corrupt stream: bad group list")
        try:
            mode = SeedMode(F(h, "seed_mode", str))
        except ValueError:
            raise container.StreamError("corrupt stream: unknown seed mode") from None
        codecs = F(h, "seed_codecs", list)
        if len(codecs) > n_images * 4 or not all(is_uint(c) and c < len(classical_seed.SEED_CODECS) for c in codecs):
            raise container.StreamError("corrupt stream: bad seed codec list")
        pick = F(h, "seed_pick", int, 0, classical_seed.PICK_AMONG - 1)
        names = tuple(classical_seed.SEED_CODECS[k] for k in codecs)
        chosen = F(h, "classical", list)
        if not all(is_uint(v) for v in chosen) or any(b <= a for a, b in zip(chosen, chosen[1:])) or \
                len(chosen) > len(names) or (chosen and mode is not SeedMode.CLASSICAL):
            raise container.StreamError("corrupt stream: bad classical unit list")
        chosen = tuple(chosen)
        if not sizes:
            if mode is not SeedMode.CLASSICAL:
                raise container.StreamError("corrupt stream: a PRNG-seeded stream without chain groups")
            return cls(mode, pick, names, 0, 0.0, (), chosen)
        seed_words = F(h, "seed_words", int, 0, 16 * (payload_bytes // 4) + 4096) if mode is SeedMode.RANDOM else 0
        grid = F(h, "grid_fraction", float, HEADER_MIN_GRID, HEADER_MAX_GRID)
        topups = F(h, "topups", list)
        if len(topups) > len(sizes) or not all(
                isinstance(t, list) and len(t) == 2 and is_uint(t[0]) and t[0] < len(sizes) and is_uint(t[1])
                and 1 <= t[1] <= MAX_TOPUP_WORDS for t in topups) or len({t[0] for t in topups}) != len(topups):
            raise container.StreamError("corrupt stream: bad top-up list")
        coarse = F(h, "coarse", list)     # flat: group, index into COARSE_GRIDS, ...
        if len(coarse) % 2 or len(coarse) > 2 * len(sizes) or not all(is_uint(v) for v in coarse) \
                or not all(g < len(sizes) and k < len(COARSE_GRIDS) for g, k in zip(coarse[::2], coarse[1::2])) \
                or len(set(coarse[::2])) != len(coarse) // 2:
            raise container.StreamError("corrupt stream: bad grid list")
        grid_of = {n: COARSE_GRIDS[k] for n, k in zip(coarse[::2], coarse[1::2])}
        topup_of = dict(map(tuple, topups))
        start = len(names) if mode is SeedMode.CLASSICAL else 0
        steps = []
        for n, size in enumerate(sizes):
            steps.append(Step(start, size, grid_of.get(n, grid), topup_of.get(n, 0)))
            start += size
        return cls(mode, pick, names, seed_words, grid, tuple(steps), chosen)

    def check_units(self, n_units: int) -> None:
        """The classical choices name units that exist; StreamError otherwise."""
        if self.classical and self.classical[-1] >= n_units:
            raise container.StreamError("corrupt stream: bad classical unit list")

    def check_shapes(self, shapes: list) -> None:
        """The seed and the groups tile the units (shapes in coding order)
        exactly, each group of one shape; StreamError otherwise."""
        expect = self.seed_units
        for s in self.steps:
            if s.start != expect or s.start + s.size > len(shapes) or \
                    len({shapes[s.start + j] for j in range(s.size)}) != 1:
                raise container.StreamError("corrupt stream: groups do not match the images")
            expect += s.size
        if expect != len(shapes):
            raise container.StreamError("corrupt stream: groups do not cover the images")


def topup_seed(seed: int, group: int) -> int:
    """PRNG seed of group `group`'s top-up words."""
    return (seed + 0x9E3779B97F4A7C15 * (group + 1)) % (1 << 63)


def seed_codec(plan: Plan, seed: int):
    """The bottom of the stack: the classical codes (x: list of bytes, one per
    seed unit) or, for a PRNG seed, its words (x: None)."""
    if plan.seed_mode is SeedMode.RANDOM:
        words = seeded_words(seed, plan.seed_words)

        def check(left):
            if not np.array_equal(left, words):
                raise DecodeMismatch("the seed bits did not come back (damaged stream or different conditionals)")
        return base_words(lambda _: words, check, "PRNG seed")
    m = plan.seed_units
    return base_words(classical_seed.seed_words, lambda w: classical_seed.unseed(w, m), "classical seed")


def group_codec(plan: Plan, n: int, unit_shape: tuple, chain_for, seed: int, encrypt: bool):
    """Step n of the plan: Bit-Swap over its units (x: (size, C, H, W) uint8),
    over its top-up words if it has any (x: [None, units])."""
    s = plan.steps[n]
    group = bitswap.Codec(chain_for(s.grid), (s.size, *unit_shape), seed=seed + n, encrypt=encrypt)
    if not s.topup:
        return group
    return serial([known_words(seeded_words(topup_seed(seed, n), s.topup), "top-up bits"), group])


def stream_codec(plan: Plan, shapes: list, chain_for, seed: int, encrypt: bool, progress=None):
    """The whole stream as one codec; x = [seed value, group 0 value, ...].
    ``progress(pixels)`` hears of each group as it is pushed or popped."""
    groups = [group_codec(plan, n, shapes[s.start], chain_for, seed, encrypt) for n, s in enumerate(plan.steps)]
    if progress is not None:
        groups = [tap(g, lambda x, n=s.size * int(np.prod(shapes[s.start])): progress(n))
                  for g, s in zip(groups, plan.steps)]
    return serial([seed_codec(plan, seed)] + groups)
