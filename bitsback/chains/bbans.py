"""Standard BB-ANS over a Markov chain: the whole latent path first.

Encoder: pop z_K ~ q(z_K|x), then z_k ~ q(z_k|z_{k+1}, x) for k = K-1..1
(top-down posterior); push x ~ p(x|z_1), then z_k ~ p(z_k|z_{k+1}) for
k = 1..K-1 and z_K ~ p(z_K). Decoder: pop z_K .. z_1 and x under the
generative model, then push z_1 .. z_K back under the top-down posterior.
Every posterior pop is preceded by the keystream XOR (seed, k); the decoder
repeats it after the matching push.

Why keep it next to Bit-Swap: same expected net bits (for the diffusion
chain, the -VLB in its L_T + sum KL + L_0 form), but it needs initial bits
for all K pops (~ K times Bit-Swap's). ``initial="auto"`` estimates them as
1.1 K times what the first pop needs (right when every step's bin width
follows its posterior scale) and retries with more after a shortfall.

Latents use the same uniform grids (``chain.bin_widths``) as Bit-Swap.
Per-step stats: step 0 is the push of x, step k the pop/push of z_k.
"""

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

AUTO_FACTOR = 1.1


def encode(x, chain, message=None, *, seed: int = 0, encrypt: bool = True,
           initial="auto", initial_seed=None):
    """Code uint8 images ``x`` (N, ...); return (Message, Stats). As bitswap.encode."""
    return run_encoder(_encode, x, chain, message, seed, encrypt, initial, initial_seed)


def _encode(x, chain, message, seed, encrypt, initial, iseed, extra):
    ex = exact_tables(chain)
    K, call, shape, stats, acc, xf = start_run("bbans", x, chain, encrypt)
    ds = [bin_width(chain, k) for k in range(1, K + 1)]
    mean, scale = call("topdown_posterior", K, None, xf)
    need = AUTO_FACTOR * K * needed_bits(scale, ds[K - 1], shape) + extra
    msg, stats.added_initial_words = initial_bits.build(message, initial, need, iseed)
    stats.initial_bits = msg.num_bits()
    idx = [None] * (K + 1)
    idx[K] = pop_posterior(msg, acc, K, mean, scale, ds[K - 1], shape, seed, encrypt, ex)
    for k in range(K - 1, 0, -1):
        mean, scale = call("topdown_posterior", k, idx[k + 1] * ds[k], xf)
        idx[k] = pop_posterior(msg, acc, k, mean, scale, ds[k - 1], shape, seed, encrypt, ex)
    mean, scale = call("likelihood", idx[1] * ds[0])
    acc.pushed(0, pixels.push(msg, x, mean, scale, ex))
    for k in range(1, K):
        mean, scale = call("prior", k, idx[k + 1] * ds[k])
        acc.pushed(k, gaussian.push(msg, idx[k], mean, scale, ds[k - 1], escape=True, exact=ex))
    mean, scale = call("prior", K, None)
    acc.pushed(K, gaussian.push(msg, idx[K], mean, scale, ds[K - 1], escape=True, exact=ex))
    acc.finish(msg, call.seconds)
    return msg, stats


def decode(message, chain, shape, *, seed: int = 0, encrypt: bool = True,
           expect_initial=None, initial_seed=None):
    """Decode images of ``shape``; return (x uint8, message left). As bitswap.decode."""
    shape = tuple(int(s) for s in shape)  # caller errors stay ValueErrors
    with mismatch_guard():
        return _decode(message, chain, shape, seed, encrypt, expect_initial, initial_seed)


def _decode(message, chain, shape, seed, encrypt, expect_initial, initial_seed):
    ex = exact_tables(chain)
    K, call, msg = validate(chain), Timed(chain), message.copy()
    ds = [bin_width(chain, k) for k in range(1, K + 1)]
    idx = [None] * (K + 1)
    mean, scale = call("prior", K, None)
    idx[K], _ = gaussian.pop(msg, mean, scale, ds[K - 1], escape=True, exact=ex, shape=shape)
    for k in range(K - 1, 0, -1):
        mean, scale = call("prior", k, idx[k + 1] * ds[k])
        idx[k], _ = gaussian.pop(msg, mean, scale, ds[k - 1], escape=True, exact=ex, shape=shape)
    mean, scale = call("likelihood", idx[1] * ds[0])
    x, _ = pixels.pop(msg, mean, scale, shape, ex)
    xf = model_units(x)
    for k in range(1, K + 1):
        z_next = idx[k + 1] * ds[k] if k < K else None
        mean, scale = call("topdown_posterior", k, z_next, xf)
        push_posterior(msg, k, idx[k], mean, scale, ds[k - 1], seed, encrypt, ex)
    initial_bits.check(msg, expect_initial, seed if initial_seed is None else initial_seed)
    return x, msg
