"""The Python API: arrays in, bytes out, and back.

    from ddpm_codec.api import Codec
    codec = Codec()                                  # the shipped default model
    data, report = codec.compress([img])             # img: (H, W) or (H, W, C) uint8
    [back] = codec.decompress_arrays(data)           # identical pixels

`compress` takes numpy arrays or `ddpm_codec.io.images.Image` records (name and mode
kept); `decompress` returns records with `.pixels` (H, W, C), `.name`,
`.mode`.  The CLI calls exactly these.
"""
from __future__ import annotations

import numpy as np
import torch

from ddpm_codec.codec.exact_steps import supports_portable
from ddpm_codec.codec.lossless import decode as lossless_decode
from ddpm_codec.codec.lossless import encode as lossless_encode
from ddpm_codec.codec.units import ImageRecord
from ddpm_codec.format import container
from ddpm_codec.io.checkpoint import CheckpointError, load_companion, load_model

DEFAULT_STEPS = 100
MODES_BY_CHANNELS = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
CLASSICAL_CHOICES = ("auto", "never")
FAST_STEPS = 25   # compress --fast: T_eval 25 costs ~8% more bits than 100 on the shipped model, 1/4 of the time


def _record(im, k) -> ImageRecord:
    if isinstance(im, np.ndarray):
        a = im
        if a.dtype != np.uint8:
            raise container.CodecError(f"image {k}: pixels must be uint8, got {a.dtype}")
        if a.ndim == 2:
            a = a[:, :, None]
        if a.ndim != 3 or a.shape[2] not in MODES_BY_CHANNELS or min(a.shape[:2]) < 1:
            raise container.CodecError(f"image {k}: expected (H, W) or (H, W, C) with C in 1..4, got {im.shape}")
        return ImageRecord(pixels=np.ascontiguousarray(a), name=f"image{k}.png", mode=MODES_BY_CHANNELS[a.shape[2]])
    pixels = im.pixels if im.pixels.ndim == 3 else im.pixels[:, :, None]
    return ImageRecord(pixels=np.ascontiguousarray(pixels), name=getattr(im, "name", f"image{k}.png"), mode=im.mode)


def stream_mode(data: bytes) -> str:
    """'lossless' or 'lossy' (raises StreamError for anything else)."""
    return container.parse(data, allow_truncated=True).mode


def stream_names(data: bytes) -> list[str]:
    """Names of the images in a stream, from its header alone."""
    c = container.parse(data, allow_truncated=True)
    imgs = c.header.get("images")
    if not isinstance(imgs, list) or not all(isinstance(r, list) and r and isinstance(r[0], str) for r in imgs):
        raise container.StreamError("corrupt stream: bad image list")
    return [r[0] for r in imgs]


class Codec:
    def __init__(self, model="default", device="cpu"):
        try:
            self.model, self.meta = load_model(model, device)
        except (RuntimeError, ArithmeticError) as e:   # a config torch cannot build (e.g. negative sizes)
            raise CheckpointError(f"model {model}: its config cannot be built ({type(e).__name__}: {e})") from e
        self.fingerprint = self.meta["fingerprint"]
        rs = self.meta.get("recommended_steps", DEFAULT_STEPS)
        if not isinstance(rs, int) or isinstance(rs, bool) or rs < 1:
            raise CheckpointError(f"model {model}: recommended_steps {rs!r} in its config is not a positive integer")
        self.default_steps = rs
        # the pixel-group net beside the model, if any: one image alone can then fund its own chain
        self.groups = load_companion(model, self.fingerprint, device)

    def fast_steps(self) -> int:
        """The chain of ``compress --fast``: FAST_STEPS, or the recommended one if shorter
        (the model's time warp places any number of steps)."""
        T = self.model.schedule.T
        return max(1, min(FAST_STEPS, self.default_steps, T if T is not None else FAST_STEPS))

    def _steps(self, steps):
        """The chain length asked for (None: the model's recommended one), checked."""
        steps = self.default_steps if steps is None else steps
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
            raise container.CodecError(f"--steps must be a whole number; got {steps!r}")
        T = self.model.schedule.T
        if steps < 1 or (T is not None and steps > T):
            bound = f"between 1 and {T}" if T is not None else "at least 1"
            raise container.CodecError(f"--steps must be {bound}; got {steps}")
        return int(steps)

    # ---- lossless ----------------------------------------------------
    def portable(self, choice="auto") -> bool:
        """Whether compress makes portable streams: "auto" when the model (and its
        companion) can be evaluated exactly, True insisting on it, False never."""
        can = supports_portable(self.model) and (self.groups is None or supports_portable(self.groups[0]))
        if choice == "auto":
            return can
        if choice and not can:
            raise container.CodecError("this model has no exact evaluation (it needs a U-Net, the linear-gamma "
                                       "schedule and the posterior variance): use --float")
        return bool(choice)

    def compress(self, images, steps=None, encrypt=True, progress=None, grid=None, tiles="auto", classical="auto",
                 announce_total=None, portable="auto"):
        """``grid``: latent bin width / noise scale (default ``coding_chain.DEFAULT_GRID``);
        ``tiles``: "auto", "always" or "never" cut images larger than the model's
        training size into tiles of that size (``lossless.choose_tile``);
        ``classical``: "auto" stores a unit classically where that is smaller than
        its estimated chain code, "never" codes every unit the chain can fund by it;
        ``portable``: exact conditionals that decode on any machine (`portable`);
        ``progress(pixels)`` hears of the work done, ``announce_total(pixels)`` of its total."""
        if classical not in CLASSICAL_CHOICES:
            raise container.CodecError(f"classical must be one of {CLASSICAL_CHOICES}; got {classical!r}")
        recs = [_record(im, k) for k, im in enumerate(images)]
        kw = {} if grid is None else {"grid_fraction": grid}
        with torch.no_grad():
            return lossless_encode(recs, self.model, self.fingerprint, steps=self._steps(steps),
                                   encrypt=encrypt, progress=progress, tiles=tiles, groups_model=self.groups,
                                   classical_choice=classical == "auto", announce_total=announce_total,
                                   portable=self.portable(portable), **kw)

    def decode_work(self, data: bytes) -> int:
        """Pixels the lossless decoder reports through ``progress`` (a bar's total)."""
        from ddpm_codec.codec.lossless import decode_work
        return decode_work(data, self.model)

    def decompress(self, data: bytes, progress=None) -> list[ImageRecord]:
        with torch.no_grad():
            return lossless_decode(data, self.model, self.fingerprint, progress=progress, groups_model=self.groups)

    def decompress_arrays(self, data: bytes) -> list[np.ndarray]:
        """Decoded pixels only: (H, W) for one channel, else (H, W, C)."""
        return [r.pixels[:, :, 0] if r.pixels.shape[2] == 1 else r.pixels for r in self.decompress(data)]

    # ---- lossy (progressive) ------------------------------------------
    def compress_lossy(self, images, steps=None, bpd=None, stop_at=None):
        from ddpm_codec.codec import lossy
        recs = [_record(im, k) for k, im in enumerate(images)]
        return lossy.encode(recs, self.model, self.fingerprint, steps=self._steps(steps), bpd=bpd,
                            stop_at=stop_at)

    def decompress_lossy(self, data: bytes, stop_at=None, max_bytes=None, stochastic=False):
        from ddpm_codec.codec import lossy
        return lossy.decode(data, self.model, self.fingerprint, stop_at=stop_at, max_bytes=max_bytes,
                            stochastic=stochastic)
