"""The U-Net evaluated so that every machine gets the same bits (issue 18).

A float network's output depends on the order its sums are taken in, on FMA
and on the vector width, so the same stream decoded on an AVX2 laptop, an
ARM machine or a GPU rebuilds other probability tables and fails. Here the
network is the same function of the same weights, computed with integers
where order matters and with correctly rounded IEEE operations elsewhere:

* **Block floating point.** Before every linear operation an activation
  tensor is rounded, per image, to ``act_bits`` (24) significant bits
  relative to that image's largest value (:func:`quantize`: max, frexp,
  multiply by a power of two and round are all exact). Weights are rounded
  once, per output channel, to ``weight_bits`` (16). A product is then an
  integer times a power of two below 2^(24+16), and a convolution's or
  matmul's sum of K < 2^13 of them stays below 2^53 in those units: every
  partial sum is representable in float64, so the result is exact whatever
  the summation order, blocking, FMA or vector width (``_check_exact``
  refuses a layer that could break this). Convolutions run as float64
  im2col + GEMM (``F.conv2d`` with oneDNN and cuDNN off: torch's own
  ``slow_conv2d`` on CPU and CUDA), which only multiplies and adds.
* **Normalisation.** GroupNorm's mean and variance are sums of int64
  integers (exact in any order); the rest (one division, IEEE sqrt, scale
  and shift) is elementwise basic arithmetic, correctly rounded.
* **Nonlinearities.** SiLU's sigmoid, softmax's exp and the Fourier
  features' sin/cos are tables of correctly rounded doubles
  (:mod:`bitsback.exact`) read by linear interpolation: basic operations.
  The time embedding's sinusoids are decimal arithmetic, once per time.
* **Attention.** q and k are rounded to 20 bits before their product (sums of
  64 products of 20-bit integers: < 2^47), the exp weights to multiples of
  2^-30 before their sum and the probabilities to multiples of 2^-24 before
  they weight v (rounded to 20 bits: < 2^50 over 49 positions).

Elementwise operations are issued one at a time (no fused multiply-add, no
``alpha=``), each correctly rounded by IEEE 754. The precision is that of
float32 or better, so the codelength changes by noise only (issue 18's bench).
"""
from __future__ import annotations

import contextlib
import decimal
import math
import warnings

import torch
import torch.nn.functional as F

from bitsback import exact
from ddpm_codec.diffusion.unet import AttnBlock, ResBlock, UNet

F64 = torch.float64
ACT_BITS = 24
WEIGHT_BITS = 16
QK_BITS = 20
V_BITS = 20
EXP_UNIT = 2.0 ** -30
PROB_UNIT = 2.0 ** -24
CHUNK = 4          # images per forward pass (speed only; results do not depend on it)


def pow2(k: torch.Tensor) -> torch.Tensor:
    """2**k as float64, exactly, built from its bit pattern (k int64 in [-1022, 1023])."""
    return ((k.to(torch.int64) + 1023) << 52).view(F64)


def _block_scale(x: torch.Tensor, bits: int, dims) -> torch.Tensor:
    """Per-block power of two that puts the block's largest |value| in [2^(bits-1), 2^bits)."""
    amax = x.abs().amax(dim=dims, keepdim=True)
    e = torch.frexp(amax).exponent.to(torch.int64)
    return pow2((bits - e).clamp(-1000, 1000))


def quantize(x: torch.Tensor, bits: int = ACT_BITS) -> torch.Tensor:
    """x rounded per image (dim 0) to ``bits`` significant bits of its largest value."""
    dims = tuple(range(1, x.dim()))
    s = _block_scale(x, bits, dims)
    return torch.round(x * s) / s


def quantize_weight(w: torch.Tensor, bits: int = WEIGHT_BITS) -> torch.Tensor:
    """Float weights rounded per output channel (dim 0) to ``bits``-bit signed integers times
    a power of two; idempotent, so a model stored rounded loads unchanged."""
    w = w.detach().to(F64)
    return quantize(w, bits - 1)


class _Tables:
    """The interpolation tables on a device, made once."""

    def __init__(self, device):
        self.device = device
        self._t = {}

    def get(self, name):
        if name not in self._t:
            t = getattr(exact, f"{name}_table")()
            self._t[name] = (t.x0, float(t.per_unit), torch.tensor(t.values, dtype=F64, device=self.device),
                             torch.tensor(t.step, dtype=F64, device=self.device))
        return self._t[name]

    def interp(self, name, x):
        x0, per_unit, values, step = self.get(name)
        last = values.numel() - 1
        u = ((x - x0) * per_unit).clamp(0.0, float(last))
        i = torch.floor(u).clamp(max=last - 1)
        frac = u - i
        i = i.to(torch.int64).reshape(-1)
        return values.index_select(0, i).reshape(x.shape) + frac * step.index_select(0, i).reshape(x.shape)


class ExactUNet:
    """eps_hat(z, t[, cond]) of a trained :class:`UNet`, portable to the bit (module doc)."""

    def __init__(self, unet: UNet, act_bits: int = ACT_BITS, weight_bits: int = WEIGHT_BITS):
        self.unet, self.cfg = unet, unet.cfg
        self.act_bits, self.weight_bits = int(act_bits), int(weight_bits)
        self._w = {}
        self._tables = {}
        self._temb_cache = {}

    # ---- pieces ----------------------------------------------------------
    def _tab(self, device) -> _Tables:
        key = str(device)
        if key not in self._tables:
            self._tables[key] = _Tables(device)
        return self._tables[key]

    def _weight(self, mod):
        key = id(mod)
        if key not in self._w:
            w = quantize_weight(mod.weight, self.weight_bits)
            k = w[0].numel()
            if self.act_bits + self.weight_bits + math.ceil(math.log2(max(k, 2))) > 53:
                raise ValueError(f"a layer with {k} inputs per output cannot be summed exactly "
                                 f"at {self.act_bits}+{self.weight_bits} bits")
            b = mod.bias.detach().to(F64) if mod.bias is not None else None
            self._w[key] = (w, b)
        return self._w[key]

    def _conv(self, mod, x):
        w, b = self._weight(mod)
        w = w.to(x.device)
        y = F.conv2d(quantize(x, self.act_bits), w, None, mod.stride, mod.padding)   # inside _kernels()
        return y + b.to(x.device)[None, :, None, None]

    def _linear(self, mod, x):
        w, b = self._weight(mod)
        y = quantize(x, self.act_bits) @ w.to(x.device).t()
        return y + b.to(x.device)

    def _silu(self, x):
        return x * self._tab(x.device).interp("sigmoid", x)

    def _group_norm(self, mod, x):
        n_img, c = x.shape[:2]
        g = mod.num_groups
        xg = x.reshape(n_img, g, -1)
        n = xg.shape[-1]
        bits = min(self.act_bits, (60 - math.ceil(math.log2(max(n, 2)))) // 2)
        s = _block_scale(xg, bits, (1, 2))
        xi = torch.round(xg * s).to(torch.int64)
        total = xi.sum(-1, keepdim=True)
        m = torch.div(2 * total + n, 2 * n, rounding_mode="floor")   # round(total / n), exact
        d = xi - m
        var = (d * d).sum(-1, keepdim=True).to(F64) / n / (s * s)
        mean = m.to(F64) / s
        rstd = 1.0 / torch.sqrt(var + mod.eps)
        y = ((xg - mean) * rstd).reshape(x.shape)
        return y * mod.weight.detach().to(F64).to(x.device)[None, :, None, None] \
            + mod.bias.detach().to(F64).to(x.device)[None, :, None, None]

    def _resblock(self, blk: ResBlock, x, temb):
        h = self._conv(blk.conv1, self._silu(self._group_norm(blk.norm1, x)))
        h = h + self._linear(blk.temb, self._silu(temb))[:, :, None, None]
        h = self._conv(blk.conv2, self._silu(self._group_norm(blk.norm2, h)))
        skip = x if isinstance(blk.skip, torch.nn.Identity) else self._conv(blk.skip, x)
        return skip + h

    def _attention(self, blk: AttnBlock, x):
        n, c, hh, ww = x.shape
        qkv = self._conv(blk.qkv, self._group_norm(blk.norm, x)).reshape(n, 3, c, hh * ww)
        q, k, v = (qkv[:, i] for i in range(3))
        q, k = quantize(q, QK_BITS), quantize(k, QK_BITS)
        scores = (q.transpose(1, 2) @ k) * _inv_sqrt(c)             # (n, hw, hw): exact sums
        e = self._tab(x.device).interp("exp", scores - scores.amax(-1, keepdim=True))
        e = torch.round(e / EXP_UNIT) * EXP_UNIT
        p = torch.round(e / e.sum(-1, keepdim=True) / PROB_UNIT) * PROB_UNIT
        a = quantize(v, V_BITS) @ p.transpose(1, 2)                 # (n, c, hw): exact sums
        return x + self._conv(blk.proj, a.reshape(n, c, hh, ww))

    def _fourier(self, z):
        feats = [z]
        tab = self._tab(z.device)
        for n in self.cfg.fourier_n:
            u = z * (2.0 ** (n - 1))                  # turns of sin(2^n pi z); exact
            u = u - torch.floor(u)
            c = u + 0.25
            c = c - torch.floor(c)
            feats += [tab.interp("sin", u), tab.interp("sin", c)]
        return torch.cat(feats, dim=1)

    def _temb(self, t: torch.Tensor, device):
        """t_mlp(timestep_embedding(t)) for each image's t, each distinct t computed once."""
        keys = [float(v) for v in t.detach().to("cpu", F64).reshape(-1)]
        for key in set(keys):
            if key not in self._temb_cache:
                emb = torch.tensor(_sinusoids(key, self.cfg.base_channels), dtype=F64)[None]
                lin1, _, lin2 = self.unet.t_mlp
                h = self._linear(lin2, self._silu(self._linear(lin1, emb)))
                self._temb_cache[key] = h[0]
        return torch.stack([self._temb_cache[k] for k in keys]).to(device)

    # ---- the network -------------------------------------------------------
    @torch.no_grad()
    def __call__(self, z: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """eps_hat, CHUNK images at a time: each image's result does not depend on its batch
        (per-image scales, exact sums), and float64 im2col buffers of a few images stay in
        cache (96 images at once took 3.4x as long as in chunks of 4 on this CPU)."""
        z = z.to(F64)
        t = torch.as_tensor(t, dtype=F64)
        if t.dim() == 0:
            t = t.expand(z.shape[0])
        with _kernels():
            if z.shape[0] <= CHUNK:
                return self._forward(z, t, cond)
            return torch.cat([self._forward(z[i:i + CHUNK], t[i:i + CHUNK], None if cond is None else cond[i:i + CHUNK])
                              for i in range(0, z.shape[0], CHUNK)])

    def _forward(self, z, t, cond):
        net = self.unet
        net.check_cond(z, cond)
        temb = self._temb(t, z.device)
        h = self._conv(net.conv_in, self._fourier(z))
        if self.cfg.cond_channels:
            h = h + self._conv(net.cond_in, cond.to(F64))
        h = net.walk(h, lambda blocks, x: self._run(blocks, x, temb))
        return self._conv(net.conv_out, self._silu(self._group_norm(net.norm_out, h)))

    def _run(self, blocks, h, temb):
        for b in blocks:
            if isinstance(b, ResBlock):
                h = self._resblock(b, h, temb)
            elif isinstance(b, AttnBlock):
                h = self._attention(b, h)
            elif isinstance(b, torch.nn.Upsample):
                h = h.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
            else:
                h = self._conv(b, h)
        return h


@contextlib.contextmanager
def _kernels():
    """oneDNN and cuDNN off, so float64 convolutions are torch's own im2col + GEMM (only
    multiplies and adds: exact on integer-valued operands); quietly, since torch warns
    about TF32 whenever the oneDNN flags are set."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with torch.backends.mkldnn.flags(enabled=False), torch.backends.cudnn.flags(enabled=False):
            yield


def _inv_sqrt(c: int) -> float:
    return exact.sqrt(decimal.Decimal(1) / decimal.Decimal(c))


def _sinusoids(t: float, dim: int) -> list:
    """[sin(1000 t f_k)..., cos(1000 t f_k)...], f_k = 10000^(-k / half): the
    embedding of ``unet.timestep_embedding``, in decimal arithmetic."""
    half = dim // 2
    ctx = exact._CTX
    ln = ctx.ln(decimal.Decimal(10000))
    args = [ctx.multiply(ctx.multiply(decimal.Decimal(1000), exact.D(t)),
                         ctx.exp(ctx.divide(ctx.multiply(-ln, k), half))) for k in range(half)]
    return [exact.sin(a) for a in args] + [exact.cos(a) for a in args]
