"""Lossless codec: Bit-Swap over the diffusion chain, many images per stream.

Images become *units* the model can code: with a one-channel model each
colour plane is a unit; otherwise the image is one unit.  Units are padded
(edge replication) to a multiple of what the U-Net needs, and units of one
padded shape are coded together, in *groups*.

Why groups: a bits-back pop reads bits before any are pushed.  Bit-Swap
over a diffusion chain reads about (first pop + drain) bits per dim before
it has pushed its own, several times the model's -VLB, so one batch of all
units would need that much initial data.  The encoder instead grows groups
geometrically: each group is as large as the bits already on the stack
fund (found by trying, halving on a shortfall), so earlier images pay the
initial bits of later ones and only the first group needs a seed.
The seed (:mod:`ddpm_codec.codec.classical_seed`) is real data: the first units
coded with a classical lossless codec, as few as the first group needs (a
coarser latent grid for that one group before one more seed unit).  With
seed_mode "random" it is a documented PRNG word sequence instead
(`bitsback.ans.initial`), and the part of it no pop touched is left out of the
file (the decoder regenerates it).

Determinism: the decoder must reproduce every conditional bit for bit.  The
header records the torch version, thread count, dtype and device the
encoder used; the decoder runs with the same thread count, and checks the
pixel checksum (and the seed it gets back) after decoding.
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from bitsback.ans.initial import seeded_words
from bitsback.ans.message import Message
from bitsback.chains import bitswap
from bitsback.errors import BitsBackError, InsufficientInitialBits
from ddpm_codec.codec import classical_seed, estimate, pixel_group_codec
from ddpm_codec.codec.chain import DEFAULT_GRID, DiffusionChain
from ddpm_codec.codec.exact_steps import supports_portable
from ddpm_codec.codec.lossless_plan import (
    COARSE_GRIDS,
    HEADER_MAX_GRID,
    HEADER_MIN_GRID,
    Plan,
    SeedMode,
    Step,
    group_codec,
    seed_codec,
    stream_codec,
    topup_seed,
)
from ddpm_codec.codec.units import (
    MAX_TILED_PIXELS,
    MAX_UNIT_PIXELS,
    ImageRecord,
    check_image_list,
    count_units,
    pixel_checksum,
    place_unit,
)
from ddpm_codec.codec.units import coding_order as _coding_order
from ddpm_codec.codec.units import times_hash as _times_hash
from ddpm_codec.codec.units import to_units as _units
from ddpm_codec.diffusion.model import DiffusionModel
from ddpm_codec.format import container
from ddpm_codec.format.compact import is_uint

CODEC = "bitswap"
# Decoding work (chain steps x padded dims, plus a per-group charge) that a
# header may ask for: this floor, or this much per payload bit (legit streams
# carry >= ~1 bit/dim, so they stay orders of magnitude below it).
MIN_WORK = 1 << 24
WORK_PER_PAYLOAD_BIT = 1 << 14
WORK_PER_GROUP = 1024
# Header fields left out when they hold these values (most streams; ~30 bytes, 0.1% of
# a 100-image stream). Changing a value here changes the format: bump container.VERSION.
# The encryption flag lives in the container's flags.
HEADER_DEFAULTS = {"codec": CODEC, "seed_mode": "classical", "seed_codecs": [], "seed_pick": 0, "classical": [], "whole": [],
                   "seed_words_omitted": 0, "topups": [], "coarse": [], "groups": [],
                   "grid_fraction": DEFAULT_GRID, "tile": 0}


@dataclass
class EncodeReport:
    file_bytes: int = 0
    dims: int = 0                  # sum of H*W*C of the original images
    seed_bits_consumed: int = 0    # PRNG seed bits a pop touched (stored in the file)
    seed_words_added: int = 0
    seed_units: int = 0            # units coded classically as the seed
    seed_images: list = field(default_factory=list)   # indices of the images those units belong to
    seed_bits: int = 0             # bits of those classical codes
    chain_dims: int = 0            # dims coded by the chain (net_bits is theirs)
    topup_bits: int = 0            # PRNG words added mid-stream for an unfunded unit
    net_bits: int = 0              # stream bits minus the seed bits
    ideal_net_bits: float = 0.0
    ideal_bits_by_image: dict = field(default_factory=dict)   # image index -> ideal net bits (chain units)
    groups: list = field(default_factory=list)   # [first position in coding order, size]
    coarse: list = field(default_factory=list)   # [group, grid fraction] off the main grid
    network_s: float = 0.0
    total_s: float = 0.0
    rejected_bytes: int = 0        # size of the smallest stream tried and not kept (seed mode, tiles)
    tile: int = 0                  # tile side (0: whole planes)
    units: int = 0                 # planes or tiles coded
    pixel_groups: int = 0          # one unit coded as this many pixel groups (0: not)

    @property
    def file_bpd(self):
        return 8 * self.file_bytes / self.dims

    @property
    def net_bpd(self):
        """Chain bits per chain dim (stream bits minus the seed)."""
        return self.net_bits / max(self.chain_dims, 1)


def _stream_key(checksum: str) -> int:
    """Keystream and PRNG seed: the pixel checksum's first 63 bits, so the
    header stores it once (as the checksum)."""
    return int.from_bytes(bytes.fromhex(checksum)[:8], "little") >> 1


# ---- encode -------------------------------------------------------------
# Grid fractions a one-unit group falls back to while the stack is too small for
# the main grid, before the encoder pays for one more classical seed unit (first
# group) or PRNG top-up words (later): a coarser latent grid lowers what the pops
# read (~2 bits/dim less per doubling) for a small rate cost on that one group
# (default model, T_eval 100: +0.9% at 1.0, +2% at 1.5, ~0 at 0.5 and 0.25), so
# the finest affordable step down is tried first.
# (COARSE_GRIDS: lossless_plan, where the header's index into it is read)
# A first group still short on the coarsest grid takes PRNG top-up words (pure dead
# weight) when they cost less than this share of the next unit's classical code,
# else that unit becomes one more seed unit, whose cost is its excess over the model:
# 25-30% of a WebP code on Fashion-MNIST (4.03 vs -VLB 2.7-3.0 bits/dim).
SEED_EXCESS_SHARE = 0.25
MIN_GRID, MAX_GRID = 0.05, 2.0   # main grid fractions the encoder accepts

GROUP_STEPS = 100     # T_eval a pixel-group stream leaves out of its header (the default model's)
TILE_CHOICES = ("auto", "always", "never")
# "auto": a stream with this many whole-plane units or more keeps whole planes; a
# smaller one (one image, say) tries every layout below and keeps the smallest stream.
# Why: a stream of a few units pays a whole unit's classical seed (~1 bit/dim over the
# model on that unit), and one unit alone cannot use the chain at all, while tiles lose
# the context across their borders. Which layout wins depends on the content (default
# model, -VLB of 98x98 crops of test mosaics, cut through the garments: 3.69 / 3.56 /
# 3.60 bits/dim as 28-pixel tiles / 56-pixel tiles / one plane; of 84x84 mosaics, aligned
# with them: 2.88 / 3.24 / 3.18).
TILE_BELOW_UNITS = 8
# ... and only while the model-size tiles number at most this many (each layout tried
# is a whole encode; a larger image gets model-size tiles alone).
TRY_LAYOUTS_UP_TO = 64


def tile_options(images: list[ImageRecord], model: DiffusionModel, tiles: str = "auto") -> list[int]:
    """Tile sides the encoder tries, first the one it shows progress for (0: whole planes)."""
    if tiles not in TILE_CHOICES:
        raise ValueError(f"tiles must be one of {TILE_CHOICES}")
    side = getattr(model.unet.cfg, "image_size", 0)
    if tiles == "never" or not is_uint(side) or side < 1 or \
            not any(max(im.pixels.shape[:2]) > side for im in images):
        return [0]                        # tiles would change nothing
    if tiles == "always":
        return [side]
    whole_ok = all(im.pixels.shape[0] * im.pixels.shape[1] <= MAX_UNIT_PIXELS for im in images)
    if whole_ok and count_units(images, model.channels) >= TILE_BELOW_UNITS:
        return [0]
    if count_units(images, model.channels, side) > TRY_LAYOUTS_UP_TO:
        return [side]
    larger = [2 * side] if any(max(im.pixels.shape[:2]) > 2 * side for im in images) else []
    return [side, *larger, *([0] if whole_ok else [])]


def trials(images, model, tiles="auto", seed_mode="classical", groups_model=None,
           layouts=None) -> list[tuple[int, str]]:
    """The whole encodes `encode` makes, as (tile side, kind): kind "classical" or
    "random" (the seed of a unit chain) or "pixel_groups"; the smallest is kept.
    A stream of one unit tries its classical seed, and pixel groups where the
    companion supports the unit, else a PRNG-seeded chain (rarely smaller).
    `layouts`: the tile sides to try (default: every `tile_options` one)."""
    out = []
    for tile in tile_options(images, model, tiles) if layouts is None else layouts:
        if seed_mode == "classical" and count_units(images, model.channels, tile) == 1:
            shape = _units(images, model.channels, model.unet.multiple, tile)[0].pixels.shape
            groups_ok = groups_model is not None and pixel_group_codec.supports(groups_model[0], shape)
            out += [(tile, "classical"), (tile, "pixel_groups" if groups_ok else "random")]
        else:
            out.append((tile, seed_mode))
    return out


def work(images, model, planned) -> int:
    """Pixels the encoder codes over the trials `planned` (its progress total)."""
    return sum(sum(u.pixels.size for u in _units(images, model.channels, model.unet.multiple, tile))
               for tile, _ in planned)


def choose_layout(images, model, steps, seed, layouts) -> tuple[list[int], dict]:
    """Decide between layouts (tile sides) from predicted sizes, so that only one
    is encoded: ([the chosen side], {side: UnitCosts}).  The prediction is each
    unit's cheaper code (`estimate.UnitCosts.predicted_bits`)."""
    times = model.schedule.chain(steps)
    costs = {t: estimate.UnitCosts(_units(images, model.channels, model.unet.multiple, t), model, times, seed)
             for t in layouts}
    best = min(layouts, key=lambda t: costs[t].predicted_bits())
    return [best], costs


def encode(images: list[ImageRecord], model: DiffusionModel, fingerprint: str, steps: int = 100,
           grid_fraction: float = DEFAULT_GRID, encrypt: bool = True, max_group: int = 64,
           progress=None, seed_mode: str = "classical", tiles: str = "auto",
           groups_model=None, classical_choice: bool = True, announce_total=None,
           portable: bool = False) -> tuple[bytes, EncodeReport]:
    """seed_mode "classical": the first units are coded with the best classical
    lossless codec and those bits are the initial bits of the first pops (real
    data, not dead weight); as few units as the first group needs, each early
    group on the finest grid in (grid_fraction, *COARSE_GRIDS) the stack funds.  With a single
    unit the smaller of "classical only" and a PRNG-seeded chain wins.
    seed_mode "random": PRNG seed words (the literature's initial bits).
    tiles: "auto", "always" or "never" cut images into tiles of the model's
    training size (`tile_options`; "auto" keeps the smaller stream).
    groups_model: (conditional net, fingerprint) of the model's pixel-group
    companion, or None; a stream of one unit of its size is then also tried as
    pixel groups (`ddpm_codec.codec.pixel_group_codec`) and the smallest stream kept.
    classical_choice: store a unit classically when its classical code is
    smaller than its estimated chain code (`estimate.UnitCosts`); off,
    every unit the chain can fund goes through it (measurements of the chain).
    With tiles "auto" and more than one layout, the layout is chosen from
    predicted sizes (`choose_layout`) and only it is encoded.
    announce_total(pixels): told the progress total once the trials are known.
    portable: exact conditionals (`ddpm_codec.codec.exact_steps`), a stream that
    decodes on any machine; otherwise float ones, for the machine that wrote it."""
    if seed_mode not in ("classical", "random"):
        raise ValueError("seed_mode must be 'classical' or 'random'")
    if not MIN_GRID <= float(grid_fraction) <= MAX_GRID:
        raise container.CodecError(f"grid fraction {grid_fraction} is outside {MIN_GRID}..{MAX_GRID:g} "
                           "(bin width / noise scale)")
    layouts, costs = tile_options(images, model, tiles), {}
    if len(layouts) > 1 and classical_choice and seed_mode == "classical":
        layouts, costs = choose_layout(images, model, steps, _stream_key(pixel_checksum(images)), layouts)
    planned = trials(images, model, tiles, seed_mode, groups_model, layouts)
    if announce_total is not None:
        announce_total(work(images, model, planned))
    tried = []
    for tile, kind in planned:
        if kind == "pixel_groups":
            tried.append(_encode_pixel_groups(images, *groups_model, steps, float(grid_fraction), encrypt, tile,
                                              progress, portable))
        else:
            tried.append(_Encoder(images, model, fingerprint, steps, float(grid_fraction), encrypt, max_group, tile,
                                  progress, kind, classical_choice, costs.get(tile), portable).run())
    keep = min(tried, key=lambda r: len(r[0]))
    keep[1].rejected_bytes = min((len(d) for d, _ in tried if d is not keep[0]), default=0)
    return keep


class _Encoder:
    """Searches the plan of one stream (classical seed units, then Bit-Swap
    groups that grow as fast as the stack funds them; see the module doc),
    pushing each accepted piece with the codec the plan defines
    (`lossless_plan.group_codec`), so the message it ends with is the plan's
    `stream_codec` pushed over the units."""

    def __init__(self, images, model, fingerprint, steps, grid_fraction, encrypt, max_group, tile, progress,
                 seed_mode, classical_choice=True, costs=None, exact=False):
        if not images:
            raise container.CodecError("nothing to compress: no images given")
        self.images, self.model, self.fingerprint = images, model, fingerprint
        self.steps, self.grid, self.encrypt, self.max_group = steps, grid_fraction, encrypt, max_group
        self.progress, self.seed_mode = progress, SeedMode(seed_mode)
        self.classical_choice, self.costs = classical_choice, costs
        self.exact = bool(exact)
        self._codes = {}
        self.tile = tile
        self.units = _units(images, model.channels, model.unet.multiple, tile)
        self.checksum = pixel_checksum(images)
        self.seed = _stream_key(self.checksum)
        self.times = model.schedule.chain(steps)
        self._chains = {}
        # grids a group may fall back to while the stack is small (never for the
        # PRNG-seeded first group, which gets whatever initial bits it needs)
        self.grids = [self.grid] + [g for g in COARSE_GRIDS if g > self.grid]

    def chain(self, g: float) -> DiffusionChain:
        if g not in self._chains:
            self._chains[g] = DiffusionChain(self.model, self.times, g, exact=self.exact)
        return self._chains[g]

    def _plan(self, steps, seed_words=0) -> Plan:
        return Plan(self.seed_mode, self.pick, tuple(c for c, _ in self.seed_codes), seed_words, self.grid,
                    tuple(steps), self.classical)

    def code_of(self, k: int):
        """Unit k's best classical code (computed once per encoder)."""
        if k not in self._codes:
            self._codes[k] = classical_seed.classical_best(self.units[k].pixels)
        return self._codes[k]

    def _whole_images(self, costs, chosen: dict) -> dict:
        """Images of several units (colour planes, tiles) that one classical code
        of the whole picture stores for less than their units' cheaper codes: they
        become one unit each (`units.to_units(whole=...)`), stored classically.
        Returns the classical choices re-indexed over the new units."""
        spent, count = {}, {}
        for k, u in enumerate(self.units):
            bits = costs.classical_bits[k] if k in chosen else costs.chain_bits[k]
            spent[u.image] = spent.get(u.image, 0.0) + bits
            count[u.image] = count.get(u.image, 0) + 1
        whole = {}
        for i, im in enumerate(self.images):
            if count.get(i, 0) > 1:
                code = classical_seed.classical_best(np.ascontiguousarray(im.pixels.transpose(2, 0, 1)))
                if code is not None and 8 * len(code[1]) < spent[i]:
                    whole[i] = code
        if not whole:
            return chosen
        key = {(u.image, u.plane, u.origin): k for k, u in enumerate(self.units)}
        self.whole = tuple(sorted(whole))
        self.units = _units(self.images, self.model.channels, self.model.unet.multiple, self.tile, set(self.whole))
        return {k: whole[u.image] if u.image in whole else chosen[key[(u.image, u.plane, u.origin)]]
                for k, u in enumerate(self.units)
                if u.image in whole or key.get((u.image, u.plane, u.origin)) in chosen}

    def _start(self):
        """The units stored classically by choice (`estimate.UnitCosts`), the
        coding order, and the message their codes start.  One unit alone that
        is cheaper classically is stored so at once (no PRNG top-ups tried)."""
        chosen, self.whole = {}, ()
        if self.classical_choice and self.seed_mode is SeedMode.CLASSICAL:
            costs = self.costs or estimate.UnitCosts(self.units, self.model, self.times, self.seed)
            chosen = self._whole_images(costs, costs.cheaper_classically())
            if not self.whole:                 # the units are the costed ones: keep their codes
                self._codes = dict(enumerate(costs.codes))
        if len(chosen) == len(self.units):     # all classical: the seed alone, no list needed
            self.classical, self.pick = (), 0
            self.order = _coding_order(self.units)
            self.seed_codes = [chosen[i] for i in self.order]
        else:
            self.classical = tuple(sorted(chosen))
            self.seed_codes = [chosen[i] for i in self.classical]
            rest = [i for i in _coding_order(self.units) if i not in chosen]
            self.pick = classical_seed.pick_first_seed(self.units, rest, self.code_of) \
                if self.seed_mode is SeedMode.CLASSICAL else 0
            self.order = self._plan([]).order(self.units)
        if not self.seed_codes:
            return Message.empty()
        self._tick(sum(self.units[k].pixels.size for k in self.order[:len(self.seed_codes)]))
        return seed_codec(self._plan([]), self.seed).push(Message.empty(), [c for _, c in self.seed_codes])

    def _push(self, steps, msg, x):
        """Push the last step of `steps` with its plan codec: (message, Stats)."""
        codec = group_codec(self._plan(steps), len(steps) - 1, x.shape[1:], self.chain, self.seed, self.encrypt)
        new = codec.push(msg, [None, x] if steps[-1].topup else x)
        return new, (codec.parts[-1] if steps[-1].topup else codec).stats

    def _topped_up(self, steps, step, msg, x, short_bits, budget_bits):
        """(message, stats, words) of `step` over the fewest PRNG top-up words that
        fund it (grown from the shortfall a failed try reported), or None if they
        would cost more than ``budget_bits``."""
        words = math.ceil((short_bits + 64) / 32)
        while 32 * words <= budget_bits:
            try:
                return (*self._push(steps + [replace(step, topup=words)], msg, x), words)
            except InsufficientInitialBits as e:
                words += max(1, math.ceil((e.needed_bits + 64) / 32))
        return None

    def _auto_topup(self, steps, step, msg, x):
        """`step` over as many top-up words as bitswap's "auto" finds it needs."""
        _, st = bitswap.encode(x, self.chain(step.grid), msg, seed=self.seed + len(steps), encrypt=self.encrypt,
                               initial="auto", initial_seed=topup_seed(self.seed, len(steps)))
        words = int(st.added_initial_words)
        return (*self._push(steps + [replace(step, topup=words)], msg, x), words)

    def _tick(self, n):
        if self.progress:
            self.progress(n)

    def _group_size(self, pos, msg, gi, need_per_unit) -> int:
        """Units of one shape from `pos` that the stack is expected to fund."""
        order, units = self.order, self.units
        shape = units[order[pos]].pixels.shape
        run = 1
        while pos + run < len(order) and units[order[pos + run]].pixels.shape == shape:
            run += 1
        if need_per_unit and gi == 0:
            return max(1, min(self.max_group, run, int(msg.num_bits() / need_per_unit)))
        return 1

    def _add_seed_unit(self, code, pixels):
        self.seed_codes.append(code)
        self._tick(pixels)
        return seed_codec(self._plan([]), self.seed).push(Message.empty(), [c for _, c in self.seed_codes])

    def search(self):
        """(plan, final message, stats per step) by trial and error."""
        self.topup_bits = 0
        msg = self._start()
        steps, stats = [], []
        seed_words, gi, need_per_unit, pos = 0, 0, None, len(self.seed_codes)
        while pos < len(self.order):
            size = self._group_size(pos, msg, gi, need_per_unit)
            first, step = not steps, Step(pos, size, self.grids[gi])
            x = np.stack([self.units[self.order[pos + j]].pixels for j in range(size)])
            try:
                if first and self.seed_mode is SeedMode.RANDOM:
                    # the PRNG seed as bitswap's "auto" sizes it: the same message as
                    # seed_codec(plan).push followed by the group's push (tests/test_codec_law.py)
                    new, st = bitswap.encode(x, self.chain(step.grid), None, seed=self.seed, encrypt=self.encrypt,
                                             initial="auto", initial_seed=self.seed)
                    seed_words = int(st.added_initial_words)
                else:
                    new, st = self._push(steps + [step], msg, x)
            except InsufficientInitialBits as short:
                if size > 1:
                    need_per_unit *= 1.5
                    continue
                if gi + 1 < len(self.grids):          # one unit on a coarser grid
                    gi += 1
                    continue
                tried = None
                if first:
                    # the stack cannot fund the first chain group yet: PRNG words for the
                    # shortfall if they cost clearly less than one more classical unit's excess
                    code = self.code_of(self.order[pos])
                    tried = self._topped_up(steps, step, msg, x, short.needed_bits, SEED_EXCESS_SHARE * 8 * len(code[1]))
                    if tried is None:
                        msg, pos, gi = self._add_seed_unit(code, x.size), pos + 1, 0
                        continue
                # a unit larger than the stack funds even on the coarsest grid (rare:
                # sizes descend), or a first group a little short: top the stack up
                new, st, words = tried or self._auto_topup(steps, step, msg, x)
                step = replace(step, topup=words)
                self.topup_bits += 32 * words
            if need_per_unit is None and not step.topup:
                # what a unit on the main grid draws: the first pop reads ~1 bit/dim more per
                # halving of the grid, on two latents at once (Bit-Swap's peak)
                extra = 2 * x[0].size * np.log2(step.grid / self.grid)
                need_per_unit = 1.15 * (max(st.initial_bits_used, 1) / size + extra)
            msg = new
            steps.append(step)
            stats.append(st)
            pos += size
            gi = 0
            self._tick(x.size)
        return self._plan(steps, seed_words), msg, stats

    def run(self) -> tuple[bytes, EncodeReport]:
        t_start = time.perf_counter()
        plan, msg, stats = self.search()
        words = msg.words()
        n_common = 0
        if plan.seed_mode is SeedMode.RANDOM:
            base = seeded_words(self.seed, plan.seed_words)
            lim = min(base.size, words.size)
            while n_common < lim and words[n_common] == base[n_common]:
                n_common += 1
        payload = words[n_common:].astype("<u4").tobytes()
        p = plan.header_fields()
        header = {"codec": CODEC,
                  **{k: p[k] for k in ("seed_mode", "seed_codecs", "seed_pick", "groups", "classical")},
                  "images": [[im.name, im.mode, *map(int, im.pixels.shape)] for im in self.images],
                  "pixels_sha256": self.checksum, "tile": self.tile, "whole": list(self.whole)}
        if plan.steps:      # what the chain's decoder needs (a classical-only stream has no chain)
            header.update({
                "steps": int(self.steps), "times_sha": _times_hash(self.times), "grid_fraction": p["grid_fraction"],
                "coarse": p["coarse"], "seed_words_omitted": int(n_common), "topups": p["topups"],
                **({"portable": True} if self.exact else
                   {"torch": torch.__version__, "threads": torch.get_num_threads()})})
            if plan.seed_mode is SeedMode.RANDOM:      # a classical seed's length is what the chain leaves
                header["seed_words"] = p["seed_words"]
        header = {k: v for k, v in header.items() if k not in HEADER_DEFAULTS or v != HEADER_DEFAULTS[k]}
        data = container.pack(container.Container("lossless", self.fingerprint, header, payload, self.encrypt))
        rep = self._report(plan, msg, stats, n_common)
        rep.file_bytes = len(data)
        rep.total_s = time.perf_counter() - t_start
        return data, rep

    def _report(self, plan, msg, stats, n_common) -> EncodeReport:
        units, order, m = self.units, self.order, plan.seed_units
        rep = EncodeReport(dims=int(sum(im.pixels.size for im in self.images)), tile=self.tile, units=len(units))
        random_seed = plan.seed_mode is SeedMode.RANDOM
        rep.seed_words_added = plan.seed_words
        rep.seed_bits_consumed = 32 * (plan.seed_words - n_common) if random_seed else 0
        rep.seed_units = m
        rep.seed_images = sorted({units[order[n]].image for n in range(m)})
        rep.seed_bits = 32 * int(classical_seed.seed_words([c for _, c in self.seed_codes]).size)
        rep.topup_bits = self.topup_bits
        rep.net_bits = msg.num_bits() - (32 * plan.seed_words if random_seed else rep.seed_bits) - rep.topup_bits
        rep.chain_dims = int(sum(units[order[n]].pixels.size for n in range(m, len(order))))
        rep.groups = [[s.start, s.size] for s in plan.steps]
        rep.coarse = [[n, s.grid] for n, s in enumerate(plan.steps) if s.grid != self.grid]
        for s, st in zip(plan.steps, stats):
            rep.ideal_net_bits += st.ideal_net_bits
            for j in range(s.size):
                i = units[order[s.start + j]].image
                rep.ideal_bits_by_image[i] = rep.ideal_bits_by_image.get(i, 0.0) + float(st.per_image_bits[j])
        rep.network_s = sum(c.network_seconds for c in self._chains.values())
        return rep


@contextmanager
def _torch_threads(n: int | None):
    """Run with n torch threads (None: as they are), restored afterwards."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _checked_checksum(h: dict) -> str:
    """The header's pixel checksum: 16 lowercase hex digits (also the stream seed)."""
    checksum = container.field(h, "pixels_sha256", str)
    if len(checksum) != 16 or any(ch not in "0123456789abcdef" for ch in checksum):
        raise container.StreamError("corrupt stream: bad pixel checksum")
    return checksum


def torch_digest() -> str:
    """16 bits of the torch version's SHA-256: what a one-image stream records of it."""
    import hashlib
    return hashlib.sha256(torch.__version__.encode()).hexdigest()[:4]


def _encode_pixel_groups(images, gmodel, gfp, steps, grid, encrypt, tile, progress=None,
                         exact=False) -> tuple[bytes, EncodeReport]:
    """One unit as pixel groups, each given those decoded before it; the
    stream records the conditional net's fingerprint, and its header only what
    the decoder needs (every byte is 0.01 bits/dim of a 28 x 28 image)."""
    t_start = time.perf_counter()
    (unit,) = _units(images, gmodel.channels, gmodel.unet.multiple, tile)
    checksum = pixel_checksum(images)
    seed = _stream_key(checksum)
    times = gmodel.schedule.chain(steps)
    with _torch_threads(1):    # always one thread: batch-1 calls gain little from more, and the header need not say
        res = pixel_group_codec.encode(unit.pixels, gmodel, times, grid, seed, encrypt, progress, exact)
    header = {
        "pixel_groups": pixel_group_codec.group_codes(res, pixel_group_codec.count(unit.pixels.shape), pixel_group_codec.COARSE_GRIDS),
        "images": [[im.name, im.mode, *map(int, im.pixels.shape)] for im in images],
        "pixels_sha256": checksum, "tile": tile, "steps": int(steps), "grid_fraction": grid,
        **({"portable": True} if exact else {"determinism": torch_digest()})}
    header = {k: v for k, v in header.items() if (k not in HEADER_DEFAULTS or v != HEADER_DEFAULTS[k])
              and not (k == "steps" and v == GROUP_STEPS)}
    data = container.pack(container.Container("lossless", gfp, header, res.words.astype("<u4").tobytes(), encrypt))
    rep = EncodeReport(file_bytes=len(data), dims=int(sum(im.pixels.size for im in images)), tile=tile, units=1)
    rep.seed_bits = res.direct_bits           # the groups coded directly (the first one at least)
    rep.net_bits = 32 * int(res.words.size)
    rep.chain_dims = int(unit.pixels.size)
    rep.ideal_net_bits = res.ideal_net_bits
    rep.ideal_bits_by_image = {unit.image: rep.ideal_net_bits}
    rep.pixel_groups = pixel_group_codec.count(unit.pixels.shape)
    rep.coarse = res.coarse
    rep.network_s = res.network_s
    rep.total_s = time.perf_counter() - t_start
    return data, rep


def _decode_pixel_groups(c, h, gmodel, progress) -> list[ImageRecord]:
    F = container.field
    tile = F(h, "tile", int, 0, 1 << 16)
    check_image_list(h, len(c.payload), MAX_TILED_PIXELS if tile else MAX_UNIT_PIXELS)
    checksum = _checked_checksum(h)
    if F(h, "groups", list) or F(h, "seed_codecs", list):
        raise container.StreamError("corrupt stream: pixel groups with unit groups or a classical seed")
    if len(c.payload) % 4:
        raise container.StreamError("corrupt stream: payload is not whole words")
    steps = F({"steps": GROUP_STEPS, **h}, "steps", int, 1, 100000)
    grid = F(h, "grid_fraction", float, HEADER_MIN_GRID, HEADER_MAX_GRID)
    images = [ImageRecord(pixels=np.zeros((hh, ww, cc), np.uint8), name=name, mode=mode) for name, mode, hh, ww, cc in h["images"]]
    try:
        units = _units(images, gmodel.channels, gmodel.unet.multiple, tile)
    except container.CodecError as e:
        raise container.StreamError(f"corrupt stream: {e}")
    if len(units) != 1 or not pixel_group_codec.supports(gmodel, units[0].pixels.shape):
        raise container.StreamError("corrupt stream: pixel groups do not match the image")
    try:
        coarse, direct = pixel_group_codec.read_group_codes(F(h, "pixel_groups", str), pixel_group_codec.count(units[0].pixels.shape),
                                             pixel_group_codec.COARSE_GRIDS)
    except ValueError as e:
        raise container.StreamError(f"corrupt stream: {e}")
    work = steps * pixel_group_codec.count(units[0].pixels.shape) * (units[0].pixels.size + WORK_PER_GROUP)
    if work > max(MIN_WORK, WORK_PER_PAYLOAD_BIT * 8 * len(c.payload)):
        raise container.StreamError("corrupt stream: the header asks for more decoding work than its payload justifies")
    try:
        times = gmodel.schedule.chain(steps)
    except ValueError as e:
        raise container.StreamError(f"corrupt stream: its chain does not fit this model ({e})")
    seed = _stream_key(checksum)
    words = np.frombuffer(c.payload, dtype="<u4").astype(np.uint32)
    try:
        with _torch_threads(1):
            px, left = pixel_group_codec.decode(words, gmodel, times, grid, seed, c.encrypted,
                                                units[0].pixels.shape, coarse, direct, progress,
                                                portable_flag(h, gmodel))
    except (BitsBackError, ValueError, ArithmeticError) as e:
        raise container.StreamError(f"decoding failed ({type(e).__name__}): the stream is damaged or was made "
                            f"under different conditionals (see the determinism contract)")
    if left.size:
        raise container.StreamError("decoding failed: bits are left over (damaged stream or conditionals that "
                            "differ from the encoder's)")
    place_unit(images[units[0].image], units[0], px)
    if pixel_checksum(images) != checksum:
        raise container.StreamError("decoded pixels fail the checksum (damaged stream or different conditionals)")
    return images


# ---- decode -------------------------------------------------------------
def _check_header(h: dict, payload_bytes: int) -> Plan:
    """The plan, and the types and bounds of every framing field; a stream
    without chain groups (the classical seed alone) carries no chain fields."""
    F = container.field
    if F(h, "codec", str) != CODEC:
        raise container.StreamError(f"unknown lossless codec {h.get('codec')!r}")
    tile = F(h, "tile", int, 0, 1 << 16)
    imgs = check_image_list(h, payload_bytes, MAX_TILED_PIXELS if tile else MAX_UNIT_PIXELS)
    _checked_checksum(h)
    plan = Plan.from_header(h, len(imgs), payload_bytes)
    if plan.steps:
        F(h, "steps", int, 1, 100000)
        F(h, "seed_words_omitted", int, 0, plan.seed_words)
    return plan


def _checked_whole(h: dict, n_images: int) -> set:
    """The images stored as one classical picture: ascending indices."""
    whole = container.field(h, "whole", list)
    if not all(is_uint(v) and v < n_images for v in whole) or any(b <= a for a, b in zip(whole, whole[1:])):
        raise container.StreamError("corrupt stream: bad whole-image list")
    return set(whole)


def portable_flag(h: dict, model) -> bool:
    """The header's portable flag, checked: a portable stream needs a model the
    exact path can evaluate (`supports_portable`)."""
    flag = container.field(h, "portable", bool) if "portable" in h else False
    if flag and not supports_portable(model):
        raise container.ModelMismatch("a portable stream, but this model has no exact evaluation")
    return flag


def _chain_times(model, h, plan):
    """The chain's times the header asks for (None without chain groups)."""
    if not plan.steps:
        return None
    try:
        times = model.schedule.chain(h["steps"])
    except ValueError as e:
        raise container.StreamError(f"corrupt stream: its chain does not fit this model ({e})")
    if _times_hash(times) != h.get("times_sha"):
        raise container.ModelMismatch("stream's chain times differ from this model's chain")
    return times


def _stream_message(c, h, plan, seed) -> Message:
    """The ANS message of the payload, with the PRNG seed words it left out."""
    if len(c.payload) % 4:
        raise container.StreamError("corrupt stream: payload is not whole words")
    words = np.frombuffer(c.payload, dtype="<u4").astype(np.uint32)
    if plan.seed_mode is SeedMode.RANDOM:
        words = np.concatenate([seeded_words(seed, h["seed_words_omitted"]), words])
    return Message.from_words(words)


def decode_work(data: bytes, model: DiffusionModel) -> int:
    """Pixels `decode` reports to its progress callback (its units, padded);
    0 for a stream whose header does not say."""
    c = container.parse(data)
    h = {**HEADER_DEFAULTS, **c.header}
    try:
        images = [ImageRecord(pixels=np.zeros((hh, ww, cc), np.uint8), name=name, mode=mode)
                  for name, mode, hh, ww, cc in check_image_list(h, len(c.payload), MAX_TILED_PIXELS)]
        channels = 1 if "pixel_groups" in c.header else model.channels
        whole = _checked_whole(h, len(images))
        return sum(u.pixels.size for u in _units(images, channels, model.unet.multiple, h["tile"], whole))
    except (container.CodecError, TypeError, ValueError):
        return 0


def decode(data: bytes, model: DiffusionModel, fingerprint: str, progress=None,
           groups_model=None) -> list[ImageRecord]:
    """The plan from the header, then the pop of its stream codec
    (`lossless_plan.stream_codec`). groups_model: (conditional net,
    fingerprint) of the model's pixel-group companion, which a stream of one
    image coded by pixel groups needs."""
    c = container.parse(data)
    if c.mode != "lossless":
        raise container.StreamError("not a lossless stream")
    h = {**HEADER_DEFAULTS, **c.header}
    if "pixel_groups" in c.header:
        if groups_model is None:
            raise container.ModelMismatch("stream was coded by pixel groups with a conditional net, and the model "
                                  "given has none (its *_groups.json companion); pass the right --model")
        container.check_model(c, groups_model[1])
        return _decode_pixel_groups(c, h, groups_model[0], progress)
    container.check_model(c, fingerprint)
    plan = _check_header(h, len(c.payload))
    times = _chain_times(model, h, plan)
    images = [ImageRecord(pixels=np.zeros((hh, ww, cc), np.uint8), name=name, mode=mode) for name, mode, hh, ww, cc in h["images"]]
    whole = _checked_whole(h, len(images))
    try:
        units = _units(images, model.channels, model.unet.multiple, h["tile"], whole)
    except container.CodecError as e:
        raise container.StreamError(f"corrupt stream: {e}")
    if plan.steps and not {k for k, u in enumerate(units) if u.image in whole} <= set(plan.classical):
        raise container.StreamError("corrupt stream: a whole-image unit outside the classical ones")
    if plan.seed_pick >= len(units):
        raise container.StreamError("corrupt stream: bad seed pick")
    plan.check_units(len(units))
    order = plan.order(units)
    shapes = [units[k].pixels.shape for k in order]
    plan.check_shapes(shapes)
    work = h.get("steps", 0) * (sum(u.pixels.size for u in units) + WORK_PER_GROUP * len(plan.steps))
    if work > max(MIN_WORK, WORK_PER_PAYLOAD_BIT * 8 * len(c.payload)):
        raise container.StreamError("corrupt stream: the header asks for more decoding work than its payload justifies")
    seed = _stream_key(h["pixels_sha256"])
    msg = _stream_message(c, h, plan, seed)
    exact = portable_flag(h, model)
    chains = {g: DiffusionChain(model, times, g, exact=exact) for g in {s.grid for s in plan.steps}}
    codec = stream_codec(plan, shapes, chains.__getitem__, seed, c.encrypted, progress)
    want = h.get("threads")
    try:
        with _torch_threads(want if not exact and is_uint(want) and 1 <= want <= 1024 else None):
            msg, values = codec.pop(msg)
    except (BitsBackError, ValueError, ArithmeticError) as e:     # garbage latents: escapes, non-finite values
        raise container.StreamError(f"decoding failed ({type(e).__name__}): the stream is damaged or was made "
                            f"under different conditionals (see the determinism contract)")
    for s, x in zip(plan.steps, values[1:]):
        for j, k in enumerate(order[s.start:s.start + s.size]):
            units[k].pixels[...] = x[-1][j] if s.topup else x[j]
    for n, (name, code) in enumerate(zip(plan.seed_codecs, values[0] or [])):
        classical_seed.decode_unit(name, code, units[order[n]].pixels)
    for u in units:
        place_unit(images[u.image], u)
    if progress:
        progress(sum(units[k].pixels.size for k in order[:plan.seed_units]))
    if pixel_checksum(images) != h["pixels_sha256"]:
        raise container.StreamError("decoded pixels fail the checksum (damaged stream or different conditionals)")
    return images
