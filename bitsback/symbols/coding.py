"""Steps shared by the Bit-Swap and BB-ANS coders (posterior pop/push with
encryption, pixel conversion); see :mod:`bitsback.chains.bitswap`."""
from contextlib import contextmanager

import numpy as np

from bitsback.errors import BitsBackError, DecodeMismatch, InsufficientInitialBits, OutOfWindow
from bitsback.symbols import gaussian

MAX_RESTARTS = 4


def model_units(x: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float64 model units, computed identically on both sides."""
    return x.astype(np.float64) / 127.5 - 1.0


def check_pixels(x) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != np.uint8 or x.ndim < 1 or x.shape[0] < 1 or x.size == 0:
        raise ValueError("x must be a non-empty uint8 array shaped (N, ...)")
    return x


def pop_posterior(msg, acc, k, mean, scale, delta, shape, seed, encrypt, exact=False):
    """Encoder: check the stack holds enough bits, XOR the bits the pop will
    read with keystream (seed, k), then pop z_k from the truncated window."""
    n = int(np.prod(shape))
    before = msg.num_bits()
    need = needed_bits(scale, delta, shape)
    if before < need:
        raise InsufficientInitialBits(
            f"latent {k}: the pop needs ~{need:.0f} bits, the stack holds {before}",
            need - before, k)
    if encrypt:
        msg.encrypt(seed, k, n)
    idx, bits = gaussian.pop(msg, mean, scale, delta, escape=False, shape=shape, exact=exact)
    acc.popped(k, bits, before, msg.num_bits())
    return idx


def needed_bits(scale, delta, shape) -> float:
    """Bits a pop may read: entropy estimate + 6 sigma of its fluctuation + 64."""
    n = int(np.prod(shape))
    h = gaussian.entropy_bits(np.broadcast_to(scale, shape), np.broadcast_to(delta, shape))
    return h + 6.0 * np.sqrt(n) + 64.0


def encode_with_restarts(encode_once, initial):
    """Run ``encode_once(extra_bits)``; with ``initial="auto"`` retry after a
    shortfall with ``extra += 2 * shortfall + 1024`` bits, up to MAX_RESTARTS
    times. Each retry repeats the chain's calls up to the short pop."""
    auto = initial is None or (isinstance(initial, str) and initial == "auto")
    extra, restarts = 0.0, 0
    while True:
        try:
            msg, stats = encode_once(extra)
            stats.restarts = restarts
            return msg, stats
        except InsufficientInitialBits as e:
            if not auto or restarts >= MAX_RESTARTS:
                raise
            restarts += 1
            extra += 2.0 * e.needed_bits + 1024.0


def push_posterior(msg, k, idx, mean, scale, delta, seed, encrypt, exact=False):
    """Decoder: push z_k back under the posterior, then undo keystream (seed, k)."""
    try:
        gaussian.push(msg, idx, mean, scale, delta, escape=False, exact=exact)
    except OutOfWindow as e:
        raise DecodeMismatch(f"latent {k}: {e}; the stream, keystream seed or "
                             "conditionals differ from the encoder's") from e
    if encrypt:
        msg.encrypt(seed, k, idx.size)


@contextmanager
def mismatch_guard():
    """Decoder: latents decoded with the wrong stream, keystream seed or
    conditionals are garbage, and they can push the next conditionals out of
    range (non-finite means, grid indices past 2**52) before any posterior
    push fails; report that as the mismatch it is, not as a ValueError."""
    try:
        yield
    except BitsBackError:
        raise
    except (ValueError, OverflowError, FloatingPointError) as e:
        raise DecodeMismatch(f"decoded values out of range ({e}); the stream, keystream seed "
                             "or conditionals differ from the encoder's") from e
