"""The frames of one unit of the progressive lossy codec: how its steps are
written (:class:`FrameCoder`, one description for both directions), the walk
down the chain that sends z_T, ..., z_s (:func:`encode_unit`) and the decoder
that replays it frame by frame, yielding z_t after every frame
(:func:`iter_unit`, :func:`decode_unit`).

A frame is one range-coded payload (:mod:`bitsback.rcc.coder`), prefixed by
its byte length, holding several steps.  Per step: the jump to the target
level (model peaked at the previous jump), then one
:class:`bitsback.rcc.step.GaussianStep` with this format's models: the chunk
count peaked at the previous step's, the chunks' index octaves a mixture
fitted to diffusion steps, the halving flag 63:1.  After a step the frame ends
at level 0 or once the octaves of its chunk indices add up to `frame_bits`,
else a stop flag says whether the unit ends here.  Symbol models use integer
weights so encoder and decoder build bit-identical tables.

The stream around the units (header, many images, prefixes) is
:mod:`ddpm_codec.codec.lossy`.
"""
from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
import torch

from bitsback.ans.message import Message
from bitsback.errors import BitsBackError
from bitsback.rcc.coder import Model, RCCError, Reader, Writer, categorical, encode_items, uniform
from bitsback.rcc.index import octave_weights
from bitsback.rcc.layout import gaussian_kl_bits
from bitsback.rcc.step import GaussianStep
from bitsback.symbols import pixels as pixel_coder
from ddpm_codec.diffusion import process
from ddpm_codec.diffusion.model import DiffusionModel
from ddpm_codec.format import container, varint

RCC_PARAMS = {"bits_per_chunk": 10.0, "margin_bits": 4.0, "max_candidates_log2": 20}
MIN_STEP_BITS = 12.0
FRAME_BITS = 128


class ChainConditionals:
    """Float64 conditionals along a chain, from one network call per level."""

    def __init__(self, model: DiffusionModel, times: torch.Tensor):
        self.model = model
        self.times = times.to(torch.float64)
        with torch.no_grad():
            self.gam = model.gamma(self.times).detach()
        self.K = self.times.numel()
        self.calls = 0

    def eps(self, z: np.ndarray, level: int) -> torch.Tensor:
        self.calls += 1
        with torch.no_grad():
            return self.model.eps(torch.from_numpy(z[None]), self.times[level]).to(torch.float64)[0]

    def q_top(self, x):
        a, s = process.alpha_sigma(self.gam[-1])
        return (a * x).numpy(), np.broadcast_to(s.numpy(), x.shape).copy()

    def p(self, z, eps, t, s):
        mean, var = self.model.reverse(torch.from_numpy(z), eps, self.gam[s], self.gam[t])
        return mean.numpy(), var.sqrt().expand_as(mean).numpy().copy()

    def q(self, z, x, t, s):
        mean, var = process.posterior(torch.from_numpy(z), x, self.gam[s], self.gam[t])
        return mean.numpy(), var.sqrt().expand_as(mean).numpy().copy()

    def x0_hat(self, z, eps, t):
        return process.predict_x0(torch.from_numpy(z), eps, self.gam[t]).numpy()

    def decoder(self, z, eps):
        mean, log_scale = process.decoder_params(torch.from_numpy(z), eps, self.gam[0])
        return mean.numpy(), torch.exp(log_scale).numpy()

    def prior(self, z, eps, level: int | None, target: int, shape):
        """p of the step level -> target: N(0, I) for the top latent (level None)."""
        if level is None:
            return np.zeros(shape), np.ones(shape)
        return self.p(z, eps, level, target)


def to_pixels(x):
    return np.clip(np.round((np.clip(x, -1, 1) + 1) * 127.5), 0, 255).astype(np.uint8)


def unit_crc(px: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(px, dtype=np.uint8).tobytes())


def shown_pixels(chain: ChainConditionals, kind, z, eps, level, shape):
    """The receiver's estimate x0_hat (eq. 15) from what it decoded (kind
    'pixels': z is the pixels themselves; nothing decoded: mid-grey)."""
    if kind == "pixels":
        return z
    if z is None:
        return np.full(shape, 128, np.uint8)
    return to_pixels(chain.x0_hat(z, eps, level))


def length_prefixed(payload: bytes) -> bytes:
    """A frame (or unit) as it is stored: varint(len) payload."""
    return varint.encode(len(payload)) + payload


def read_length_prefixed(data: bytes, pos: int):
    """(payload, end) of the piece at `pos`, or None where `data` ends inside it."""
    n, start = varint.decode(data, pos)
    if n is None or start + n > len(data):
        return None
    return data[start:start + n], start + n


# ---- symbol models (integer weights: last-bit float differences between
# machines cannot change them) ----------------------------------------------
STOP_FLAG = categorical([63.0, 1.0])
SPLIT_FLAG = categorical([63.0, 1.0])
_BIT_LENGTH = categorical([1.0] * 41)
_NODES = np.linspace(-2.5, 2.5, 11)
_NODE_W = np.exp(-0.5 * _NODES ** 2)
OCTAVE_SPREAD = 0.2


def _int_weights(w) -> np.ndarray:
    w = np.asarray(w, dtype=np.float64)
    return np.maximum(1.0, np.round(w / w.max() * 65536.0))


def _jump_model(level: int, prev):
    """Jump j = level - target in 1..level: 1/j for the first step, then peaked at
    the previous jump (jumps shrink as the steps' KL grows down the chain)."""
    j = np.arange(1, level + 1, dtype=np.float64)
    if prev is None:
        w = 1.0 / j
    else:
        d = np.minimum(np.abs(j - prev), 40.0)
        w = np.where(j < prev, 0.25 ** d, 0.1 ** d)
    return categorical(_int_weights(w))


def _count_models(pred: float, dims: int):
    """(model over c0 in 1..hi [+ escape], hi): two-sided geometric around pred."""
    pred = round(pred * 16.0) / 16.0
    hi = int(min(dims, np.floor(3.0 * pred) + 8))
    c = np.arange(1, hi + 1, dtype=np.float64)
    w = list(np.exp(-np.abs(c - pred) / (0.3 + 0.1 * pred)))
    if hi < dims:
        w.append(1e-4)                             # escape: c0 > hi, then uniform
    return categorical(_int_weights(w)), hi


def _code_big(io, v: int) -> int:
    """A non-negative integer below 2^40: bit length, then 16-bit digits (constriction's
    uniform models stay small)."""
    n = io.code(int(v).bit_length(), _BIT_LENGTH)
    out, shift = 0, 0
    while shift < n:
        w = min(16, n - shift)
        out |= io.code((int(v) >> shift) & ((1 << w) - 1), uniform(1 << w)) << shift
        shift += w
    return out


def _code_count(io, c0: int, pred: float, dims: int) -> int:
    """c0 under the model around pred (Writer: codes it; Reader: decodes it)."""
    model, hi = _count_models(pred, dims)
    s = io.code(min(c0, hi + 1) - 1, model)
    if s < hi:
        return s + 1
    return hi + 1 + _code_big(io, c0 - hi - 1)


@dataclass(frozen=True)
class PredictedCount:
    """The chunk count code of a frame's step (a GaussianStep count_code): c0
    around the count predicted from the previous step, C - c0 mostly 0."""
    pred: float

    def code_c0(self, io, c0: int, dims: int) -> int:
        return _code_count(io, c0, self.pred, dims)

    def extra_model(self, n: int) -> Model:
        """C - c0, the chunks added so that none overflows the search cap: mostly 0."""
        return categorical([32.0 * (n + 1)] + [1.0 / k for k in range(1, n + 1)])


@lru_cache(maxsize=256)
def _octave_model(c0: int, chunks: int, B: float, m: float, lmax: int) -> Model:
    """Model of every chunk's index octave in a step of c0 = ceil(KL / B) cut into
    `chunks` chunks: a mixture of :func:`bitsback.rcc.index.octave_weights` over
    chunk KLs uniform in the bin B (c0 - 1, c0] / chunks times a log-normal of
    s.d. OCTAVE_SPREAD (0.2: measured 0.196 on Fashion-MNIST chains; rcc's own
    prior uses 0.5 and costs ~0.15 bits/chunk more here). Integer weights."""
    if c0 >= 2:
        comps = [(B * (c0 - 1 + u) / chunks * np.exp(OCTAVE_SPREAD * x), w)
                 for u in (0.1, 0.3, 0.5, 0.7, 0.9) for x, w in zip(_NODES, _NODE_W)]
    else:
        comps = [(B / chunks * 2.0 ** (-x), 1.0) for x in np.linspace(0.0, 7.0, 15)]
    return categorical(octave_weights(comps, m, lmax))


# ---- the steps of one unit, both directions ---------------------------------------

class FrameCoder:
    """The symbols of a unit's frames, for a Writer (encode_step) or a Reader
    (decode_step), and what both sides know between steps: the level reached
    (None before the top latent), the previous jump and chunk count."""

    def __init__(self, levels: int, seed: int, params: dict, frame_bits: int):
        self.levels, self.seed, self.frame_bits = levels, seed, frame_bits
        self.gaussian = GaussianStep(params["bits_per_chunk"], params["margin_bits"],
                                     params["max_candidates_log2"], octave_model=_octave_model,
                                     split_model=SPLIT_FLAG)
        self.level, self.jump, self.c0 = None, None, None

    def encode_step(self, writer: Writer, target: int, q, p):
        """Append the step to `target`, sending a sample of q = (mean, sd) under
        p; returns (the sample, the step's report)."""
        start = len(writer.items)
        jump = self._code_jump(writer, 0 if self.level is None else self.level - target)
        z, sent = self._gaussian(jump).encode(writer, q, p, self.seed, target, side_from=start)
        self._advance(jump, sent.c0)
        return z, {"level": target, "jump": jump, "kl_bits": sent.kl_bits,
                   "log_ratio_bits": sum(sent.log_weights) / np.log(2.0), "side_bits": sent.side_bits,
                   "index_bits": sent.index_bits, "chunks": len(sent.leaves),
                   "n_candidates": sent.n_candidates, "weight": sum(sent.octaves)}

    def decode_step(self, reader: Reader, chain: ChainConditionals, z, eps, shape):
        """Read the next step after latent z (eps = eps(z)); returns (the sample,
        its weight towards frame_bits)."""
        jump = self._code_jump(reader)
        target = self.levels - 1 if self.level is None else self.level - jump
        if target < 0:
            raise RCCError("a step jumps below the chain")
        p = chain.prior(z, eps, self.level, target, shape)
        z, symbols = self._gaussian(jump).decode(reader, p, self.seed, target)
        self._advance(jump, symbols.c0)
        return z, sum(symbols.octaves)

    def frame_ends(self, weight: int) -> bool:
        """The frame ends after this step (no stop flag): level 0 or frame_bits reached."""
        return self.level == 0 or weight >= self.frame_bits

    @staticmethod
    def code_stop(io, stop: bool = False) -> bool:
        """The flag after a step that does not end its frame: does the unit end here?"""
        return bool(io.code(int(stop), STOP_FLAG))

    def state(self) -> tuple:
        return self.level, self.jump, self.c0

    def restore(self, state: tuple) -> None:
        self.level, self.jump, self.c0 = state

    def _code_jump(self, io, jump: int = 1) -> int:
        """The jump level - target (none before the top latent: 0)."""
        if self.level is None:
            return 0
        return io.code(jump - 1, _jump_model(self.level, self.jump)) + 1

    def _gaussian(self, jump: int) -> GaussianStep:
        """The RCC step codec with the count predicted for this jump: the previous
        count, scaled down where the chain goes back from merged steps to single
        ones (their KL is per level)."""
        if self.c0 is None:
            pred = 1.0
        elif jump == 1 and self.jump is not None and self.jump > 1:
            pred = max(1.0, self.c0 / self.jump)
        else:
            pred = float(self.c0)
        return replace(self.gaussian, count_code=PredictedCount(pred))

    def _advance(self, jump: int, c0: int) -> None:
        self.level = self.levels - 1 if self.level is None else self.level - jump
        if jump:
            self.jump = jump
        self.c0 = c0


# ---- encoder ------------------------------------------------------------------
def _pick_target(chain, z, x, eps, level, stop_level, min_step_bits):
    """The next step (target, q, p): the top latent first, then the first level s
    below `level` whose step KL reaches min_step_bits (or stop_level)."""
    if level is None:
        q = chain.q_top(x)
        return chain.K - 1, q, chain.prior(None, None, None, chain.K - 1, q[0].shape)
    for s in range(level - 1, stop_level - 1, -1):
        q, p = chain.q(z, x, level, s), chain.p(z, eps, level, s)
        if s == stop_level or float(np.sum(gaussian_kl_bits(*q, *p))) >= min_step_bits:
            return s, q, p


class _UnitEncoder:
    """The walk down the chain for one unit: steps into the open frame's Writer,
    frames into `out`, reports into `frames` and `steps`."""

    def __init__(self, chain, pixels, seed, params, frame_bits, keep_latents):
        self.chain, self.pixels, self.keep_latents = chain, pixels, keep_latents
        self.x = torch.from_numpy(pixels.astype(np.float64) / 127.5 - 1.0)
        self.coder = FrameCoder(chain.K, seed, params, frame_bits)
        self.z, self.eps = None, None
        self.writer, self.frame_steps = Writer(), []
        self.out, self.frames, self.steps, self.latents = bytearray(), [], [], []
        self.calls0 = chain.calls

    def walk(self, stop_level, min_step_bits, max_bits):
        """Frames down to stop_level, or until the next would pass max_bits."""
        while True:
            saved = (len(self.writer.items), self.z, self.eps, self.coder.state())
            self._step(stop_level, min_step_bits)
            ends = self.coder.frame_ends(sum(s["weight"] for s in self.frame_steps))
            last = self.coder.level <= stop_level
            if max_bits is not None and self._passes(max_bits, ends):
                self._undo(saved)
                last, ends = True, not self.frame_steps
            if not self.frame_steps:
                return
            if not ends:
                self.coder.code_stop(self.writer, last)
                ends = last
            if ends:
                self._close_frame()
                if last:
                    return

    def _step(self, stop_level, min_step_bits):
        chain, level = self.chain, self.coder.level
        target, q, p = _pick_target(chain, self.z, self.x, self.eps, level, stop_level, min_step_bits)
        t0 = time.perf_counter()
        self.z, info = self.coder.encode_step(self.writer, target, q, p)
        info["seconds"] = time.perf_counter() - t0
        self.eps = chain.eps(self.z, target)            # the next step's p and this level's x0_hat
        shown = to_pixels(chain.x0_hat(self.z, self.eps, target))
        info["rmse"] = float(np.sqrt(np.mean((shown - self.pixels.astype(np.float64)) ** 2)))
        self.frame_steps.append(info)
        self.latents.append((target, self.z.copy()) if self.keep_latents else None)

    def _passes(self, max_bits, ends) -> bool:
        """Would closing the frame here (with a stop flag if needed) pass max_bits?"""
        items = self.writer.items + ([] if ends else [(1, STOP_FLAG)])
        return 8 * (len(self.out) + len(length_prefixed(encode_items(items)))) > max_bits

    def _undo(self, saved):
        """Take the last step back, and the "go on" flag before it."""
        del self.writer.items[saved[0]:]
        self.z, self.eps = saved[1:3]
        self.coder.restore(saved[3])
        self.frame_steps.pop()
        self.latents.pop()
        if self.frame_steps:
            self.writer.items.pop()

    def _close_frame(self):
        data = length_prefixed(self.writer.payload())
        self.out += data
        steps = self.frame_steps
        frame = {"level": self.coder.level, "levels": [s["level"] for s in steps], "bits": 8 * len(data),
                 "cum_bits": 8 * len(self.out), "end_byte": len(self.out), "rmse": steps[-1]["rmse"]}
        for k in ("kl_bits", "log_ratio_bits", "side_bits", "index_bits", "n_candidates", "seconds"):
            frame[k] = float(sum(s[k] for s in steps))
        self.frames.append(frame)
        self.steps += steps
        self.writer, self.frame_steps = Writer(), []

    def lossless_tail(self):
        """One more frame: the pixels under the discretized decoder p(x | z_0) (ANS)."""
        if self.coder.level != 0:
            raise ValueError("the lossless tail needs the chain coded down to its first level")
        mean, scale = self.chain.decoder(self.z, self.eps)
        msg = Message.empty()
        pixel_coder.push(msg, self.pixels, mean, scale)
        self.out += length_prefixed(msg.to_bytes())
        self.frames.append({"level": -1, "levels": [], "bits": 8 * (len(self.out) - self.frames[-1]["end_byte"]),
                            "cum_bits": 8 * len(self.out), "end_byte": len(self.out), "rmse": 0.0})

    def report(self, final) -> dict:
        report = {"frames": self.frames, "steps": self.steps, "final_crc": unit_crc(final),
                  "final_level": self.coder.level, "network_calls": self.chain.calls - self.calls0}
        if self.keep_latents:
            report["latents"] = self.latents
        return report


def encode_unit(chain: ChainConditionals, pixels: np.ndarray, seed: int, params: dict | None = None,
                min_step_bits: float = MIN_STEP_BITS, frame_bits: int = FRAME_BITS, stop_level: int = 0,
                max_bits: float | None = None, lossless_tail: bool = False, keep_latents: bool = False):
    """Frames for one (C, H, W) uint8 unit.

    Returns (bytes, report): report["frames"] lists per frame its end level,
    levels, bits (length prefix included), cum_bits, end_byte, the sums of
    its steps' KL, log q/p, side and index bits, candidates and seconds, and
    the RMSE of x0_hat at its end; report["steps"] the same per step;
    "final_crc" the CRC of the last reconstruction. max_bits: the stream
    stops before a frame would take the unit past it."""
    encoder = _UnitEncoder(chain, pixels, seed, dict(RCC_PARAMS, **(params or {})), frame_bits, keep_latents)
    encoder.walk(int(np.clip(stop_level, 0, chain.K - 1)), min_step_bits, max_bits)
    if lossless_tail:
        encoder.lossless_tail()
        final = pixels
    else:
        final = shown_pixels(chain, "latent", encoder.z, encoder.eps, encoder.coder.level, pixels.shape)
    return bytes(encoder.out), encoder.report(final)


# ---- decoder ------------------------------------------------------------------
def _decode_pixel_tail(chain, payload, z, eps, shape):
    mean, scale = chain.decoder(z, eps)
    try:
        px, _ = pixel_coder.pop(Message.from_bytes(payload), mean, scale, shape)
    except (BitsBackError, ValueError) as e:
        raise container.StreamError(f"corrupt stream: pixel tail does not decode ({type(e).__name__})")
    return px


def _decode_frame(coder: FrameCoder, reader, chain, z, eps, shape, stop_level, latents):
    """The steps of one frame: (z, eps, stop flag set, stopped at stop_level)."""
    weight = 0
    while True:
        z, w = coder.decode_step(reader, chain, z, eps, shape)
        eps = chain.eps(z, coder.level)
        weight += w
        if latents is not None:
            latents.append((coder.level, z.copy()))
        if stop_level is not None and coder.level <= stop_level:
            return z, eps, False, True
        if coder.frame_ends(weight):
            break
        if coder.code_stop(reader):
            reader.finish()
            return z, eps, True, False
    reader.finish()
    return z, eps, False, False


def iter_unit(chain: ChainConditionals, data: bytes, shape, seed: int, params: dict, frame_bits: int,
              lossless_tail: bool = False, stop_level: int | None = None, latents: list | None = None):
    """Decode the complete frames of `data` (a prefix is fine), yielding after
    each one (kind, end_byte, level, z, eps): kind 'latent' with z at `level`
    and eps = eps(z, level); 'pixels' (z = the decoded pixels) for the lossless
    tail; 'stopped' where it stops early, mid-frame if need be, because
    level <= stop_level. latents, if a list, receives (level, z) of every step."""
    coder = FrameCoder(chain.K, seed, params, frame_bits)
    pos, z, eps, flagged = 0, None, None, False
    while pos < len(data):
        if flagged:
            raise container.StreamError("corrupt stream: data after the stop flag")
        piece = read_length_prefixed(data, pos)
        if piece is None:
            return                                  # an incomplete frame: the prefix ends here
        payload, pos = piece
        if coder.level == 0:
            if not lossless_tail:
                raise container.StreamError("corrupt stream: data after the last level")
            yield "pixels", pos, 0, _decode_pixel_tail(chain, payload, z, eps, shape), None
            if pos < len(data):
                raise container.StreamError("corrupt stream: data after the pixel tail")
            return
        try:
            z, eps, flagged, stopped = _decode_frame(coder, Reader(payload), chain, z, eps, shape, stop_level,
                                                     latents)
        except (RCCError, ValueError) as e:
            raise container.StreamError(f"corrupt stream: a frame does not decode ({type(e).__name__}: {e})")
        if stopped:
            yield "stopped", pos, coder.level, z, eps
            return
        yield "latent", pos, coder.level, z, eps


def _sample(chain, z, eps, level, shape, rng):
    """x ~ p(x | z_level) by ancestral sampling down the chain (DDPM Fig. 7)."""
    if z is None:                                   # nothing received: a sample of the model
        level = chain.K - 1
        z = rng.standard_normal(shape)
        eps = chain.eps(z, level)
    for t in range(level, 0, -1):
        mean, sd = chain.p(z, eps, t, t - 1)
        z = mean + sd * rng.standard_normal(shape)
        eps = chain.eps(z, t - 1)
    mean, scale = chain.decoder(z, eps)
    return to_pixels(mean + scale * rng.standard_normal(shape))


def decode_unit(chain: ChainConditionals, data: bytes, shape, seed: int, params: dict | None = None,
                frame_bits: int = FRAME_BITS, lossless_tail: bool = False, stop_level: int | None = None,
                stochastic: bool = False, rng=None, latents: list | None = None):
    """Decode the complete frames of `data`; returns a dict with 'pixels' (what
    the receiver shows: x0_hat, or a sample of p(x | z) if stochastic), 'x0_hat',
    'level' (chain index reached, K if nothing), 'kind' and 'complete' (every
    byte of `data` was used and no stop_level cut the decoding short)."""
    params = dict(RCC_PARAMS, **(params or {}))
    kind, z, eps, level, end = None, None, None, chain.K, 0
    for kind, end, level, z, eps in iter_unit(chain, data, shape, seed, params, frame_bits, lossless_tail,
                                              stop_level, latents):
        pass
    shown = shown_pixels(chain, kind, z, eps, level, shape)
    px = shown
    if stochastic and kind != "pixels":
        px = _sample(chain, z, eps, level, shape, rng if rng is not None else np.random.default_rng(seed))
    return {"pixels": px, "x0_hat": shown, "level": level, "kind": kind,
            "complete": kind != "stopped" and end == len(data)}
