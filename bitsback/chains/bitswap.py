"""Bit-Swap: bits-back over a Markov chain, one latent at a time.

Encoder (z_0 = x):  pop z_1 ~ q(z_1|x); push x ~ p(x|z_1);
                    for k = 2..K: pop z_k ~ q(z_k|z_{k-1}); push z_{k-1} ~ p(z_{k-1}|z_k);
                    push z_K ~ p(z_K).
Decoder mirrors it: pop z_K; for k = K..2: pop z_{k-1}, push z_k back under
q(z_k|z_{k-1}); pop x; push z_1 under q(z_1|x). Each pop from a posterior is
preceded by a keystream XOR (seed, k) of the bits it will read; the decoder
repeats the XOR after its matching push (:mod:`bitsback.ans.keystream`).

Why this order: a pop needs bits only for one latent at a time, and the
push before it has just put some back, so Bit-Swap needs initial bits for
about the first pop plus the chain's drain, where standard BB-ANS
(:mod:`bitsback.chains.bbans`) needs them for the whole latent path. The drain:
a step whose posterior is wider than its prior pops more than it later
pushes (closed-form DDPM on Fashion-MNIST: first pop 4.3 bits/dim, drain
1.5 bits/dim at 20 steps, 3.4 at 100). ``initial="auto"`` provides twice
the first pop's need and retries with more after a shortfall;
``stats.initial_bits_used`` says what a run drew on.

Expected net bits: E[-log2 p(x|z_1) - sum_k log2 p(z_k|z_{k+1}) - log2 p(z_K)
+ sum_k log2 q(z_k|z_{k-1})], the chain's -VLB (bin widths cancel: every
latent is popped and pushed on the same grid).

Per-step stats: step 0 is the push of x, step k (1..K) the pop of z_k under
its posterior and its push under its prior.

Call order (determinism contract): encoder posterior(1, x), likelihood(z_1),
then for k = 2..K posterior(k, z_{k-1}), prior(k-1, z_k); finally prior(K).
The decoder makes the same calls with the same arguments in mirrored order.
A retry of ``initial="auto"`` repeats the encoder's calls up to the short pop
(pass ``initial=<words>``, e.g. sized from ``stats.initial_bits_used`` of an
earlier run, to rule retries out).
"""

import numpy as np

from bitsback.ans import initial as initial_bits
from bitsback.chains.chain import Timed, bin_width, validate
from bitsback.chains.entry import exact_tables, run_encoder, start_run
from bitsback.symbols import gaussian, pixels
from bitsback.symbols.coding import (
    mismatch_guard,
    model_units,
    needed_bits,
    pop_posterior,
    push_posterior,
)

AUTO_FACTOR = 2.0  # initial="auto": twice what the first pop needs (see module doc)


def encode(x, chain, message=None, *, seed: int = 0, encrypt: bool = True,
           initial="auto", initial_seed=None):
    """Code uint8 images ``x`` (N, ...) onto ``message``; return (Message, Stats).

    ``initial``: "auto" | int words | uint32 words | bytes (see
    :mod:`bitsback.ans.initial`); seeded words use ``initial_seed`` (default
    ``seed``). Raises InsufficientInitialBits when a caller-chosen amount is
    too small for some pop.
    """
    return run_encoder(_encode, x, chain, message, seed, encrypt, initial, initial_seed)


def _encode(x, chain, message, seed, encrypt, initial, iseed, extra):
    ex = exact_tables(chain)
    K, call, shape, stats, acc, xf = start_run("bitswap", x, chain, encrypt)
    d = bin_width(chain, 1)
    mean, scale = call("posterior", 1, xf)
    msg, stats.added_initial_words = initial_bits.build(
        message, initial, AUTO_FACTOR * needed_bits(scale, d, shape) + extra, iseed)
    stats.initial_bits = msg.num_bits()
    idx = pop_posterior(msg, acc, 1, mean, scale, d, shape, seed, encrypt, ex)
    mean, scale = call("likelihood", idx * d)
    acc.pushed(0, pixels.push(msg, x, mean, scale, ex))
    for k in range(2, K + 1):
        dk = bin_width(chain, k)
        mean, scale = call("posterior", k, idx * d)
        idx_k = pop_posterior(msg, acc, k, mean, scale, dk, shape, seed, encrypt, ex)
        mean, scale = call("prior", k - 1, idx_k * dk)
        acc.pushed(k - 1, gaussian.push(msg, idx, mean, scale, d, escape=True, exact=ex))
        idx, d = idx_k, dk
    mean, scale = call("prior", K, None)
    acc.pushed(K, gaussian.push(msg, idx, mean, scale, d, escape=True, exact=ex))
    acc.finish(msg, call.seconds)
    return msg, stats


def decode(message, chain, shape, *, seed: int = 0, encrypt: bool = True,
           expect_initial=None, initial_seed=None):
    """Decode images of ``shape``; return (x uint8, message left).

    The message left is the initial message. ``expect_initial`` (None |
    "seeded" | Message | words | bytes) makes the decoder check it and raise
    :class:`DecodeMismatch` otherwise; a mismatch of the conditionals or the
    keystream seed is usually caught earlier, when a latent cannot be pushed
    back under its posterior.
    """
    shape = tuple(int(s) for s in shape)  # caller errors stay ValueErrors
    with mismatch_guard():
        return _decode(message, chain, shape, seed, encrypt, expect_initial, initial_seed)


def _decode(message, chain, shape, seed, encrypt, expect_initial, initial_seed):
    ex = exact_tables(chain)
    K, call, msg = validate(chain), Timed(chain), message.copy()
    d = bin_width(chain, K)
    mean, scale = call("prior", K, None)
    idx, _ = gaussian.pop(msg, mean, scale, d, escape=True, exact=ex, shape=shape)
    for k in range(K, 1, -1):
        dp = bin_width(chain, k - 1)
        mean, scale = call("prior", k - 1, idx * d)
        idx_p, _ = gaussian.pop(msg, mean, scale, dp, escape=True, exact=ex, shape=shape)
        mean, scale = call("posterior", k, idx_p * dp)
        push_posterior(msg, k, idx, mean, scale, d, seed, encrypt, ex)
        idx, d = idx_p, dp
    mean, scale = call("likelihood", idx * d)
    x, _ = pixels.pop(msg, mean, scale, shape, ex)
    mean, scale = call("posterior", 1, model_units(x))
    push_posterior(msg, 1, idx, mean, scale, d, seed, encrypt, ex)
    initial_bits.check(msg, expect_initial, seed if initial_seed is None else initial_seed)
    return x, msg



class Codec:
    """Bit-Swap for a batch of ``shape`` images as a push/pop codec
    (:mod:`bitsback.ans.codecs`): push draws its initial bits from the message
    it is given (InsufficientInitialBits when that is too short) and keeps the
    run's Stats in ``.stats``; pop returns the message under the batch."""

    def __init__(self, chain, shape, *, seed: int, encrypt: bool = True):
        self.chain, self.shape = chain, tuple(int(s) for s in shape)
        self.seed, self.encrypt = int(seed), bool(encrypt)
        self.stats = None
        self.name = f"bitswap{self.shape}"

    def push(self, message, x):
        if tuple(x.shape) != self.shape:
            raise ValueError(f"bitswap codec for {self.shape} given {tuple(x.shape)}")
        new, self.stats = encode(x, self.chain, message, seed=self.seed, encrypt=self.encrypt,
                                 initial=_NO_WORDS)
        return new

    def pop(self, message):
        x, left = decode(message, self.chain, self.shape, seed=self.seed, encrypt=self.encrypt)
        return left, x


_NO_WORDS = np.zeros(0, np.uint32)
