"""One unit of the progressive lossy codec: the walk down the chain that
sends z_T, ..., z_s by reverse channel coding (encoder), and the decoder that
replays it frame by frame, yielding z_t and x0_hat after every frame.

The stream around it (header, many images, prefixes) is
:mod:`ddpm_codec.codec.lossy`; the symbols of one step are
:mod:`ddpm_codec.codec.lossy_steps`.
"""
from __future__ import annotations

import zlib

import numpy as np
import torch

from bitsback.ans.message import Message
from bitsback.errors import BitsBackError
from bitsback.rcc.coder import RCCError, Reader, Writer, encode_items
from bitsback.rcc.layout import gaussian_kl_bits
from bitsback.symbols import pixels as pixel_coder
from ddpm_codec.codec.lossy_steps import _STOP, _Ctx, _decode_step, _encode_step
from ddpm_codec.diffusion import process as D
from ddpm_codec.diffusion.model import DiffusionModel
from ddpm_codec.format import container as C
from ddpm_codec.format import varint

RCC_PARAMS = {"bits_per_chunk": 10.0, "margin_bits": 4.0, "max_candidates_log2": 20}
MIN_STEP_BITS = 12.0
FRAME_BITS = 128


class _Chain:
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
        a, s = D.alpha_sigma(self.gam[-1])
        return (a * x).numpy(), np.broadcast_to(s.numpy(), x.shape).copy()

    def p(self, z, eps, t, s):
        mean, var = self.model.reverse(torch.from_numpy(z), eps, self.gam[s], self.gam[t])
        return mean.numpy(), var.sqrt().expand_as(mean).numpy().copy()

    def q(self, z, x, t, s):
        mean, var = D.posterior(torch.from_numpy(z), x, self.gam[s], self.gam[t])
        return mean.numpy(), var.sqrt().expand_as(mean).numpy().copy()

    def x0_hat(self, z, eps, t):
        return D.predict_x0(torch.from_numpy(z), eps, self.gam[t]).numpy()

    def decoder(self, z, eps):
        mean, log_scale = D.decoder_params(torch.from_numpy(z), eps, self.gam[0])
        return mean.numpy(), torch.exp(log_scale).numpy()


def _to_pixels(x):
    return np.clip(np.round((np.clip(x, -1, 1) + 1) * 127.5), 0, 255).astype(np.uint8)


def _crc(px: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(px, dtype=np.uint8).tobytes())


def _pick_target(chain, z, x, eps, level, stop_level, min_step_bits):
    """First level s below `level` whose step KL reaches min_step_bits (or stop_level)."""
    for s in range(level - 1, stop_level - 1, -1):
        mq, sq = chain.q(z, x, level, s)
        mp, sp = chain.p(z, eps, level, s)
        if s == stop_level or float(np.sum(gaussian_kl_bits(mq, sq, mp, sp))) >= min_step_bits:
            return s, (mq, sq, mp, sp)


def encode_unit(chain: _Chain, pixels: np.ndarray, seed: int, params: dict | None = None,
                min_step_bits: float = MIN_STEP_BITS, frame_bits: int = FRAME_BITS, stop_level: int = 0,
                max_bits: float | None = None, lossless_tail: bool = False, keep_latents: bool = False):
    """Frames for one (C, H, W) uint8 unit.

    Returns (bytes, report): report["frames"] lists per frame its end level,
    levels, bits (length prefix included), cum_bits, end_byte, the sums of
    its steps' KL, log q/p, side and index bits, candidates and seconds, and
    the RMSE of x0_hat at its end; report["steps"] the same per step;
    "final_crc" the CRC of the last reconstruction. max_bits: the stream
    stops before a frame would take the unit past it."""
    params = dict(RCC_PARAMS, **(params or {}))
    x = torch.from_numpy(pixels.astype(np.float64) / 127.5 - 1.0)
    ref = pixels.astype(np.float64)
    K = chain.K
    stop_level = int(np.clip(stop_level, 0, K - 1))
    out, frames, steps, latents = bytearray(), [], [], []
    calls0 = chain.calls
    ctx = _Ctx(K)
    z, eps, level = None, None, None
    io, frame_steps = Writer(), []
    while True:
        saved = (len(io.items), z, eps, level, ctx.level, ctx.jump, ctx.c0)
        if level is None:
            target = K - 1
            mq, sq = chain.q_top(x)
            mp, sp = np.zeros(mq.shape), np.ones(mq.shape)
        else:
            target, (mq, sq, mp, sp) = _pick_target(chain, z, x, eps, level, stop_level, min_step_bits)
        z, info = _encode_step(io, ctx, mq, sq, mp, sp, seed, target, params)
        level = target
        eps = chain.eps(z, level)            # the next step's p and this level's x0_hat
        info["rmse"] = float(np.sqrt(np.mean((_to_pixels(chain.x0_hat(z, eps, level)) - ref) ** 2)))
        frame_steps.append(info)
        latents.append((level, z.copy()) if keep_latents else None)
        ends = level == 0 or sum(s["weight"] for s in frame_steps) >= frame_bits
        last = level <= stop_level
        if max_bits is not None:
            # would closing the frame here (with a stop flag if needed) pass the budget?
            items = io.items + ([] if ends else [(1, _STOP)])
            if 8 * (len(out) + len(_frame(encode_items(items)))) > max_bits:
                del io.items[saved[0]:]               # undo the step
                z, eps, level, ctx.level, ctx.jump, ctx.c0 = saved[1:]
                frame_steps.pop()
                latents.pop()
                if frame_steps:
                    io.items.pop()                    # and the "go on" flag before it
                last, ends = True, not frame_steps
        if not frame_steps:
            break
        if not ends:
            io.code(int(last), _STOP)
            ends = last
        if ends:
            data = _frame(io.payload())
            out += data
            fr = {"level": level, "levels": [s["level"] for s in frame_steps], "bits": 8 * len(data),
                  "cum_bits": 8 * len(out), "end_byte": len(out), "rmse": frame_steps[-1]["rmse"]}
            for k in ("kl_bits", "log_ratio_bits", "side_bits", "index_bits", "n_candidates", "seconds"):
                fr[k] = float(sum(s[k] for s in frame_steps))
            frames.append(fr)
            steps += frame_steps
            io, frame_steps = Writer(), []
            if last:
                break
    if lossless_tail:
        if level != 0:
            raise ValueError("the lossless tail needs the chain coded down to its first level")
        mean, scale = chain.decoder(z, eps)
        msg = Message.empty()
        pixel_coder.push(msg, pixels, mean, scale)
        out += _frame(msg.to_bytes())
        frames.append({"level": -1, "levels": [], "bits": 8 * (len(out) - frames[-1]["end_byte"]),
                       "cum_bits": 8 * len(out), "end_byte": len(out), "rmse": 0.0})
        final = pixels
    else:
        final = np.full(pixels.shape, 128, np.uint8) if z is None else _to_pixels(chain.x0_hat(z, eps, level))
    report = {"frames": frames, "steps": steps, "final_crc": _crc(final), "final_level": level,
              "network_calls": chain.calls - calls0}
    if keep_latents:
        report["latents"] = latents
    return bytes(out), report


def _frame(payload: bytes) -> bytes:
    return varint.encode(len(payload)) + payload


# ---- decoder ------------------------------------------------------------------
def iter_unit(chain: _Chain, data: bytes, shape, seed: int, params: dict, frame_bits: int,
              lossless_tail: bool = False, stop_level: int | None = None, latents: list | None = None):
    """Decode the complete frames of `data` (a prefix is fine), yielding after
    each one (kind, end_byte, level, z, eps): kind 'latent' with z at `level`
    and eps = eps(z, level); 'pixels' (z = the decoded pixels) for the lossless
    tail; 'stopped' where it stops early, mid-frame if need be, because
    level <= stop_level. latents, if a list, receives (level, z) of every step."""
    ctx = _Ctx(chain.K)
    pos, z, eps, done = 0, None, None, False
    while pos < len(data):
        if done:
            raise C.StreamError("corrupt stream: data after the stop flag")
        n, p2 = varint.decode(data, pos)
        if n is None or p2 + n > len(data):
            return                                  # an incomplete frame: the prefix ends here
        payload, pos = data[p2:p2 + n], p2 + n
        if ctx.level == 0:
            if not lossless_tail:
                raise C.StreamError("corrupt stream: data after the last level")
            mean, scale = chain.decoder(z, eps)
            try:
                px, _ = pixel_coder.pop(Message.from_bytes(payload), mean, scale, shape)
            except (BitsBackError, ValueError) as e:
                raise C.StreamError(f"corrupt stream: pixel tail does not decode ({type(e).__name__})")
            yield "pixels", pos, 0, px, None
            if pos < len(data):
                raise C.StreamError("corrupt stream: data after the pixel tail")
            return
        io, weight = Reader(payload), 0
        try:
            while True:
                z, w = _decode_step(io, ctx, chain, z, eps, seed, shape, params)
                eps = chain.eps(z, ctx.level)
                weight += w
                if latents is not None:
                    latents.append((ctx.level, z.copy()))
                if stop_level is not None and ctx.level <= stop_level:
                    yield "stopped", pos, ctx.level, z, eps
                    return
                if ctx.level == 0 or weight >= frame_bits:
                    break
                if io.code(0, _STOP):
                    done = True
                    break
            io.finish()
        except (RCCError, ValueError) as e:
            raise C.StreamError(f"corrupt stream: a frame does not decode ({type(e).__name__}: {e})")
        yield "latent", pos, ctx.level, z, eps


def _show(chain, kind, z, eps, level, shape):
    """The receiver's estimate x0_hat (eq. 15) from what it decoded."""
    if kind == "pixels":
        return z
    if z is None:
        return np.full(shape, 128, np.uint8)
    return _to_pixels(chain.x0_hat(z, eps, level))


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
    return _to_pixels(mean + scale * rng.standard_normal(shape))


def decode_unit(chain: _Chain, data: bytes, shape, seed: int, params: dict | None = None,
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
    shown = _show(chain, kind, z, eps, level, shape)
    px = shown
    if stochastic and kind != "pixels":
        px = _sample(chain, z, eps, level, shape, rng if rng is not None else np.random.default_rng(seed))
    return {"pixels": px, "x0_hat": shown, "level": level, "kind": kind,
            "complete": kind != "stopped" and end == len(data)}
