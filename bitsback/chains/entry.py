"""What every bits-back order does before its own walk: check the pixels and
the chain, resolve the initial-bits seed, retry after a short first pop, and
set up the timing, statistics and accounting of one run."""
from bitsback.chains.chain import Timed, validate
from bitsback.chains.stats import Accountant, Stats
from bitsback.symbols.coding import check_pixels, encode_with_restarts, model_units


def run_encoder(walk, x, chain, message, seed, encrypt, initial, initial_seed):
    """``walk(x, chain, message, seed, encrypt, initial, iseed, extra)`` with
    checked inputs, retried with more initial bits while "auto" falls short."""
    x = check_pixels(x)
    validate(chain)
    iseed = seed if initial_seed is None else initial_seed
    return encode_with_restarts(
        lambda extra: walk(x, chain, message, seed, encrypt, initial, iseed, extra), initial)


def exact_tables(chain) -> bool:
    """Whether the chain asks for the portable symbol tables (``chain.exact``,
    see :mod:`bitsback.exact`); a chain without the attribute gets the float ones."""
    return bool(getattr(chain, "exact", False))


def start_run(order: str, x, chain, encrypt):
    """(K, timed chain, shape, stats, accountant, x in model units) of one run."""
    stats = Stats(order, bool(encrypt), x.shape[0], x[0].size)
    return chain.num_latents, Timed(chain), x.shape, stats, Accountant(stats, x.shape), model_units(x)
