"""Lossless coding of one image alone by pixel groups
(`ddpm_codec.diffusion.pixel_groups`).

The image's pixels are cut into groups; group k is coded by its own Bit-Swap
chain over its dims, with conditionals from a conditional net that sees the
groups decoded before it. The encoder codes the groups in reverse decode
order. The first one (the smallest, which knows every other pixel) has no
bits to pop, so it is coded directly, not by bits-back: a discretized
Gaussian per pixel around the weighted mean of its known neighbours, its
scale their spread times one of `DIRECT_FACTORS` (picked per group). Those
bits are real data, so they fund the next group's pops instead of PRNG words
that would be dead weight (~17 bits per pixel of the first group on the
coarsest grid, measured, against a few bits per pixel of direct-coding
excess). Every later group pops the code of those before it; one the stack
cannot fund on the main grid steps down to a coarser grid (to g = 4), and
one it cannot fund even there is coded directly too, so no stream carries
PRNG bits; a group whose direct code is smaller than its chain's is coded
directly as well. Keystream seed of the n-th group coded: stream seed + n.
"""
from __future__ import annotations

import numpy as np
import torch

from bitsback import exact as exact_math
from bitsback.ans.codecs import chained, tap
from bitsback.ans.message import Message
from bitsback.chains import bitswap
from bitsback.errors import InsufficientInitialBits
from bitsback.symbols import pixels as pixel_code
from ddpm_codec.codec.chain import DiffusionChain
from ddpm_codec.diffusion import pixel_groups
from ddpm_codec.diffusion.model import DiffusionModel

F64 = torch.float64
# grids a group falls back to while the stack is short: coarser than the unit codec's
# (0.5, 1, 2), since even a coarse chain codes a group for far less than its direct code
COARSE_GRIDS = (0.5, 1.0, 2.0, 4.0)
# a direct code's scale per pixel: sqrt(DIRECT_FLOOR^2 + (f * spread)^2), spread the
# known neighbours' (`GroupChain.direct_prediction`), f one of DIRECT_FACTORS picked per
# group (the header stores its index; with the grids: 16 codes, one nibble). Default
# model, 150 test images, last group: 2.84 bits/pixel (a scale 2^(j/2) levels added to
# the spread instead: 3.08; a floor of 0.5 levels: 2.93)
DIRECT_FLOOR = 0.25 / 127.5
DIRECT_FACTORS = tuple(2.0 ** ((j - 4) / 4) for j in range(11))
# the same factors for portable streams, from decimal arithmetic rather than libm's pow
EXACT_DIRECT_FACTORS = tuple(exact_math.exp(exact_math.D(exact_math.log(2.0)) * (j - 4) / 4) for j in range(11))


def supports(model: DiffusionModel | None, unit_shape) -> bool:
    """Whether `model` is a pixel-group net for a unit of this (C, H, W) shape."""
    if model is None or getattr(model.unet.cfg, "cond_channels", 0) != pixel_groups.COND_CHANNELS:
        return False
    side = model.unet.cfg.image_size
    return tuple(unit_shape) == (1, side, side)


class GroupChain(DiffusionChain):
    """The diffusion chain over one group's dims given the known pixels.

    Latents are (1, group size) arrays; each network call builds the
    full-size input (`pixel_groups.network_input`) and reads eps back at the
    group's dims."""

    def __init__(self, model, times, grid_fraction, groups: np.ndarray, k: int, pixels: np.ndarray,
                 exact: bool = False):
        super().__init__(model, times, grid_fraction, exact=exact)
        self.h, self.w = groups.shape
        self.flat = np.flatnonzero(groups.reshape(-1) == k)
        x = torch.from_numpy(pixels.reshape(1, 1, self.h, self.w).astype(np.float64) / 127.5 - 1.0)
        g = torch.from_numpy(groups).view(1, 1, self.h, self.w)
        self.known, self.target = pixel_groups.masks(g, torch.tensor([k]))
        self.x = torch.where(self.known, x, torch.zeros_like(x))

    def _eps(self, z: np.ndarray, t) -> torch.Tensor:
        z_full = torch.zeros(self.h * self.w, dtype=F64)
        z_full[torch.from_numpy(self.flat)] = torch.from_numpy(np.asarray(z, np.float64).reshape(-1))
        if self.exact:       # t is one of the chain's times: its exact alpha
            alpha = torch.tensor(self.steps.alpha[self.times.tolist().index(float(t))], dtype=F64)
        else:
            gam = self.model.gamma(torch.as_tensor(t, dtype=F64))
            alpha = torch.sigmoid(-gam).sqrt()
        canvas, cond = pixel_groups.network_input(z_full.view(1, 1, self.h, self.w), self.x, self.known, self.target, alpha)
        eps = self.model.eps(canvas, t, cond, exact=self.exact).to("cpu", F64)
        return eps.reshape(1, -1)[:, torch.from_numpy(self.flat)]

    def direct_prediction(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, spread) of each group pixel in model units, from its known 3 x 3
        neighbours: their Gaussian-weighted mean (weights exp(-d^2 / 0.5)) and
        weighted standard deviation (no known neighbour: the mean of all known
        pixels, spread 0).  Why not the net: its x0 guess from the top of the
        chain divides eps errors by alpha_1 (~0.08), and a group is coded
        directly only where nearly every pixel is known (default model,
        200 test images: 3.1 bits/pixel for the last group against ~7 for the
        net's guess)."""
        v = (self.x[0, 0].numpy() + 1.0) * 127.5
        if self.exact:       # whole pixel values: the sums below are exact in any order
            v = np.rint(v)
        k = self.known[0, 0].numpy().astype(np.float64)
        vk, pv, pk = v * k, np.pad(v * k, 1), np.pad(k, 1)
        pv2 = np.pad(vk * v, 1)
        num, num2, den = np.zeros_like(v), np.zeros_like(v), np.zeros_like(v)
        h, w = v.shape
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                wt = _neighbour_weight(dy * dy + dx * dx, self.exact)
                sl = (slice(1 + dy, 1 + dy + h), slice(1 + dx, 1 + dx + w))
                num += wt * pv[sl]
                num2 += wt * pv2[sl]
                den += wt * pk[sl]
        fallback = float(vk.sum() / k.sum()) if k.sum() else 0.0
        has = den > 0
        mean = np.where(has, num / np.where(has, den, 1.0), fallback)
        var = np.where(has, num2 / np.where(has, den, 1.0) - mean * mean, 0.0)
        flat = self.flat
        return (mean.reshape(-1)[flat] / 127.5 - 1.0).reshape(1, -1), \
            (np.sqrt(np.maximum(var, 0.0)).reshape(-1)[flat] / 127.5).reshape(1, -1)

    def direct_scales(self, j: int, spread: np.ndarray) -> np.ndarray:
        if self.exact:
            f = EXACT_DIRECT_FACTORS[j] * spread
            return np.sqrt(DIRECT_FLOOR * DIRECT_FLOOR + f * f)
        return np.sqrt(DIRECT_FLOOR ** 2 + (DIRECT_FACTORS[j] * spread) ** 2)


def _neighbour_weight(d2: int, exact: bool) -> float:
    """exp(-d2 / 0.5): libm's (the float streams') or the portable one."""
    return exact_math.exp(-2 * d2) if exact else float(np.exp(-d2 / 0.5))


class GroupResult:
    def __init__(self):
        self.words = None            # stack words, bottom first
        self.direct = []             # [n-th coded group, index into DIRECT_FACTORS] of groups coded directly
        self.direct_bits = 0         # bits of those direct codes
        self.coarse = []             # [n-th coded group, grid]
        self.ideal_net_bits = 0.0
        self.network_s = 0.0


class DirectCodec:
    """One group's pixels (1, size) under discretized Gaussians around their
    known neighbours' mean (`GroupChain.direct_prediction`), scale index j."""

    def __init__(self, chain: GroupChain, j: int):
        self.mean, spread = chain.direct_prediction()
        self.scale = chain.direct_scales(j, spread)
        self.shape = self.mean.shape
        self.exact = chain.exact

    def push(self, msg: Message, x) -> Message:
        out = msg.copy()
        pixel_code.push(out, x, self.mean, self.scale, self.exact)
        return out

    def pop(self, msg: Message):
        out = msg.copy()
        x, _ = pixel_code.pop(out, self.mean, self.scale, self.shape, self.exact)
        return out, x


class GroupCoding:
    """The pieces shared by the encoder and the decoder of one unit: its group
    map, the codec of each group given the groups decoded before it, and the
    stream codec (`bitsback.ans.codecs.chained`) of a set of choices."""

    def __init__(self, model, times, grid: float, seed: int, encrypt: bool, hw, exact: bool = False):
        self.model, self.times, self.grid, self.seed, self.encrypt = model, times, grid, seed, encrypt
        self.exact = exact
        self.groups = pixel_groups.group_index(*hw)
        self.K = int(self.groups.max()) + 1
        self.flat = [np.flatnonzero(self.groups.reshape(-1) == k) for k in range(self.K)]

    def known_pixels(self, before: list) -> np.ndarray:
        """The (H, W) canvas with the groups decoded so far filled in."""
        px = np.zeros(self.groups.shape, np.uint8)
        for k, x in enumerate(before):
            px.reshape(-1)[self.flat[k]] = np.asarray(x).reshape(-1)
        return px

    def chain(self, k: int, before: list, grid: float) -> GroupChain:
        return GroupChain(self.model, self.times, grid, self.groups, k, self.known_pixels(before), self.exact)

    def codec(self, k: int, before: list, grid: float | None, direct: int | None):
        """Group k (decode order; the n = K-1-k th coded) as a codec:
        Bit-Swap on `grid`, or directly with scale index `direct`."""
        if direct is not None:
            return DirectCodec(self.chain(k, before, self.grid), direct)
        return bitswap.Codec(self.chain(k, before, grid), (1, self.flat[k].size),
                             seed=self.seed + self.K - 1 - k, encrypt=self.encrypt)

    def stream_codec(self, coarse: dict, direct: dict, progress=None):
        """All groups, from the header's choices ({n: grid}, {n: scale index});
        ``progress(pixels)`` hears of each group coded."""
        def make(k, before):
            n = self.K - 1 - k
            codec = self.codec(k, before, coarse.get(n, self.grid), direct.get(n))
            return codec if progress is None else tap(codec, lambda x: progress(x.size))
        return chained(make, self.K)


def _best_direct(coding: GroupCoding, k: int, before: list, msg: Message, x):
    """(message, scale index) of group k's smallest direct code."""
    best = None
    for j in range(len(DIRECT_FACTORS)):
        m = coding.codec(k, before, None, j).push(msg, x)
        if best is None or m.num_bits() < best[0].num_bits():
            best = (m, j)
    return best


def _chained(coding: GroupCoding, k: int, before: list, msg: Message, x, first: bool, res: GroupResult):
    """(message, stats, grid) of group k by Bit-Swap on the finest grid the stack
    funds, or None (never for the first group coded: nothing to pop yet)."""
    if first:
        return None
    for g in (coding.grid, *[c for c in COARSE_GRIDS if c > coding.grid]):
        codec = coding.codec(k, before, g, None)
        try:
            return codec.push(msg, x), codec.stats, g
        except InsufficientInitialBits:
            continue
        finally:
            res.network_s += codec.chain.network_seconds
    return None


def encode(unit: np.ndarray, model: DiffusionModel, times, grid: float, seed: int, encrypt: bool,
           progress=None, exact: bool = False) -> GroupResult:
    """Code a (1, H, W) uint8 unit; the groups in reverse decode order.  Each
    group takes the cheaper of its chain (on the finest grid the stack funds)
    and its direct code; one the stack cannot fund even on the coarsest grid
    (the first one always) is coded directly.  Every push is that of the codec
    `GroupCoding.stream_codec` builds from the choices, so `decode` is its pop."""
    pixels = unit.reshape(unit.shape[-2:])
    coding = GroupCoding(model, times, grid, seed, encrypt, pixels.shape, exact)
    xs = [pixels.reshape(1, -1)[:, f] for f in coding.flat]
    res, msg = GroupResult(), Message.empty()
    for n, k in enumerate(range(coding.K - 1, -1, -1)):
        before = xs[:k]
        chained_code = _chained(coding, k, before, msg, xs[k], n == 0, res)
        direct, j = _best_direct(coding, k, before, msg, xs[k])
        if chained_code is not None and chained_code[0].num_bits() <= direct.num_bits():
            new, st, g = chained_code
            if g != grid:
                res.coarse.append([n, g])
            res.ideal_net_bits += st.ideal_net_bits
        else:
            new = direct
            res.direct.append([n, j])
            res.direct_bits += direct.num_bits() - msg.num_bits()
            res.ideal_net_bits += direct.num_bits() - msg.num_bits()
        msg = new
        if progress:
            progress(xs[k].size)
    res.words = msg.words()
    return res


def group_codes(res: GroupResult, n_groups: int, grids) -> str:
    """The header's record of how each group was coded, one nibble per group in
    coding order (hex): 0 the main grid, 1 + i coarse grid i, 1 + len(grids) + j
    directly with DIRECT_FACTORS[j]."""
    codes = [0] * n_groups
    for n, g in res.coarse:
        codes[n] = 1 + grids.index(g)
    for n, j in res.direct:
        codes[n] = 1 + len(grids) + j
    return "".join("%x" % v for v in codes) + ("0" if n_groups % 2 else "")


def read_group_codes(packed, n_groups: int, grids) -> tuple[dict, dict]:
    """Inverse of `group_codes`: ({n: grid}, {n: scale index}); ValueError if malformed."""
    if not isinstance(packed, str) or len(packed) != n_groups + n_groups % 2 or \
            any(ch not in "0123456789abcdef" for ch in packed) or packed[n_groups:] not in ("", "0"):
        raise ValueError("bad pixel-group codes")
    codes = [int(ch, 16) for ch in packed[:n_groups]]
    if not all(v < 1 + len(grids) + len(DIRECT_FACTORS) for v in codes) or codes[0] <= len(grids):
        raise ValueError("bad pixel-group codes")
    coarse = {n: grids[v - 1] for n, v in enumerate(codes) if 1 <= v <= len(grids)}
    direct = {n: v - 1 - len(grids) for n, v in enumerate(codes) if v > len(grids)}
    return coarse, direct


def decode(words: np.ndarray, model: DiffusionModel, times, grid: float, seed: int, encrypt: bool,
           shape, coarse: dict, direct: dict, progress=None, exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The pop of the stream codec of the header's choices: (unit (1, H, W)
    uint8, the words left: none in a sound stream)."""
    coding = GroupCoding(model, times, grid, seed, encrypt, shape[-2:], exact)
    msg, xs = coding.stream_codec(coarse, direct, progress).pop(Message.from_words(words))
    return coding.known_pixels(xs).reshape(1, *shape[-2:]), msg.words()


def count(unit_shape) -> int:
    return len(pixel_groups.group_sizes(int(np.prod(unit_shape[-2:]))))

