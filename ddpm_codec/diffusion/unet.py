"""The epsilon-prediction U-Net of DDPM appendix B.

Residual blocks with GroupNorm and a sinusoidal time embedding added in every
block, self-attention at chosen resolutions, dropout, and (VDM appendix C)
optional Fourier features sin/cos(2^n pi z) concatenated to the input so the
network sees the fine, per-pixel detail that governs likelihood.  Sizes are
chosen by named configs in `ddpm_codec.diffusion.configs`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class UNetConfig:
    in_channels: int = 1
    base_channels: int = 32
    channel_mults: tuple = (1, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: tuple = (7,)
    dropout: float = 0.1
    groups: int = 8
    fourier_n: tuple = ()          # e.g. (7, 8) as in VDM; () disables
    image_size: int = 28
    cond_channels: int = 0         # conditioning planes added after the input conv (pixel groups)

    def to_dict(self):
        d = asdict(self)
        if not d["cond_channels"]:     # absent for unconditional nets: their fingerprints stay as they were
            del d["cond_channels"]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d):
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown U-Net config keys: {sorted(unknown)}")
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**d)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of 1000 * t (t in [0, 1]), as DDPM's of step index."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = (1000.0 * t.float())[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


def fourier_features(z: torch.Tensor, ns) -> torch.Tensor:
    """VDM eq. 34: sin and cos of z * 2^n * pi for each n, per channel."""
    feats = [z]
    for n in ns:
        w = (2.0 ** n) * math.pi
        feats += [torch.sin(z * w), torch.cos(z * w)]
    return torch.cat(feats, dim=1)


class ResBlock(nn.Module):
    def __init__(self, c_in, c_out, t_dim, groups, dropout):
        super().__init__()
        self.norm1 = nn.GroupNorm(min(groups, c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.temb = nn.Linear(t_dim, c_out)
        self.norm2 = nn.GroupNorm(min(groups, c_out), c_out)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over spatial positions."""

    def __init__(self, c, groups):
        super().__init__()
        self.norm = nn.GroupNorm(min(groups, c), c)
        self.qkv = nn.Conv2d(c, 3 * c, 1)
        self.proj = nn.Conv2d(c, c, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x):
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, c, h * w).unbind(1)
        a = F.scaled_dot_product_attention(q.transpose(1, 2)[:, None], k.transpose(1, 2)[:, None],
                                           v.transpose(1, 2)[:, None])[:, 0]
        return x + self.proj(a.transpose(1, 2).reshape(n, c, h, w))


class UNet(nn.Module):
    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        ch = cfg.base_channels
        t_dim = 4 * ch
        self.t_mlp = nn.Sequential(nn.Linear(ch, t_dim), nn.SiLU(), nn.Linear(t_dim, t_dim))
        c_in = cfg.in_channels * (1 + 2 * len(cfg.fourier_n))
        self.conv_in = nn.Conv2d(c_in, ch, 3, padding=1)
        if cfg.cond_channels:
            # zero at init: a net fine-tuned from an unconditional one starts as that net
            self.cond_in = nn.Conv2d(cfg.cond_channels, ch, 3, padding=1)
            nn.init.zeros_(self.cond_in.weight)
            nn.init.zeros_(self.cond_in.bias)
        self.down = nn.ModuleList()
        skips = [ch]
        res = cfg.image_size
        cur = ch
        for level, mult in enumerate(cfg.channel_mults):
            for _ in range(cfg.num_res_blocks):
                blocks = [ResBlock(cur, ch * mult, t_dim, cfg.groups, cfg.dropout)]
                cur = ch * mult
                if res in cfg.attn_resolutions:
                    blocks.append(AttnBlock(cur, cfg.groups))
                self.down.append(nn.ModuleList(blocks))
                skips.append(cur)
            if level != len(cfg.channel_mults) - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(cur, cur, 3, stride=2, padding=1)]))
                skips.append(cur)
                res = (res + 1) // 2
        self.mid = nn.ModuleList([ResBlock(cur, cur, t_dim, cfg.groups, cfg.dropout), AttnBlock(cur, cfg.groups),
                                  ResBlock(cur, cur, t_dim, cfg.groups, cfg.dropout)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mults))):
            for i in range(cfg.num_res_blocks + 1):
                blocks = [ResBlock(cur + skips.pop(), ch * mult, t_dim, cfg.groups, cfg.dropout)]
                cur = ch * mult
                if res in cfg.attn_resolutions:
                    blocks.append(AttnBlock(cur, cfg.groups))
                if level != 0 and i == cfg.num_res_blocks:
                    blocks.append(nn.Upsample(scale_factor=2, mode="nearest"))
                    blocks.append(nn.Conv2d(cur, cur, 3, padding=1))
                    res *= 2
                self.up.append(nn.ModuleList(blocks))
        self.norm_out = nn.GroupNorm(min(cfg.groups, cur), cur)
        self.conv_out = nn.Conv2d(cur, cfg.in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    @property
    def multiple(self) -> int:
        """Spatial sizes must be a multiple of this (one halving per level)."""
        return 2 ** (len(self.cfg.channel_mults) - 1)

    def _run(self, blocks, h, temb):
        for b in blocks:
            h = b(h, temb) if isinstance(b, ResBlock) else b(h)
        return h

    def check_cond(self, z: torch.Tensor, cond: torch.Tensor | None) -> None:
        """A conditional net needs its planes, the size of z; an unconditional one none."""
        if self.cfg.cond_channels:
            if cond is None or cond.shape[1] != self.cfg.cond_channels or cond.shape[2:] != z.shape[2:]:
                raise ValueError(f"this network needs {self.cfg.cond_channels} conditioning planes the size of z")
        elif cond is not None:
            raise ValueError("this network takes no conditioning planes")

    def walk(self, h: torch.Tensor, run) -> torch.Tensor:
        """The U: ``run(blocks, h)`` down the levels keeping skips, the middle, then up with
        each skip concatenated (shared by this forward and the exact one)."""
        hs = [h]
        for blocks in self.down:
            h = run(blocks, h)
            hs.append(h)
        h = run(self.mid, h)
        for blocks in self.up:
            skip = hs.pop()
            h = run(blocks, torch.cat([h, skip], dim=1))
        return h

    def forward(self, z: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        self.check_cond(z, cond)
        temb = self.t_mlp(timestep_embedding(t, self.cfg.base_channels))
        h = self.conv_in(fourier_features(z, self.cfg.fourier_n))
        if self.cfg.cond_channels:
            h = h + self.cond_in(cond.to(h.dtype))
        h = self.walk(h, lambda blocks, x: self._run(blocks, x, temb))
        return self.conv_out(F.silu(self.norm_out(h)))
