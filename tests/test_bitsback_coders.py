"""Bit-Swap and BB-ANS coders: exact round trips, initial bits, mismatch detection."""
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bitsback import Message
from bitsback.chains import bbans, bitswap
from bitsback.errors import DecodeMismatch, InsufficientInitialBits

ORDERS = {"bitswap": bitswap, "bbans": bbans}


class RandomChain:
    """Gaussian conditionals with random, value-dependent means and scales; priors
    deliberately mismatched for some elements (exercises the escape path)."""

    def __init__(self, seed, K, shape, scale_mult=1.0):
        rng = np.random.default_rng(seed)
        self.num_latents = K
        el = (1,) + tuple(shape[1:])
        self.bin_widths = [rng.uniform(0.02, 0.5) if rng.random() < 0.7
                           else rng.uniform(0.02, 0.5, el) for _ in range(K)]
        u = lambda lo, hi: rng.uniform(lo, hi, (K + 2,) + el)  # noqa: E731
        self.a, self.b, self.s = u(0.5, 1.2), u(-0.3, 0.3), u(0.05, 1.0) * scale_mult
        self.c, self.t = u(0.5, 1.5), u(0.02, 1.0)
        self.off = np.where(rng.random((K + 2,) + el) < 0.1, rng.normal(0, 30, (K + 2,) + el), 0)
        self.ls = rng.uniform(0.001, 0.3)

    def posterior(self, k, z):
        return self.a[k] * z + self.b[k], self.s[k] * (1.0 + 0.5 * np.tanh(z))

    def prior(self, k, z):
        if z is None:
            return self.off[k], 1.0 + self.t[k]
        return self.c[k] * z + self.off[k], self.t[k]

    def likelihood(self, z):
        return np.tanh(z), self.ls

    def topdown_posterior(self, k, z, x):
        if z is None:
            return self.a[k] * x, self.s[k]
        return 0.5 * self.c[k] * z + 0.5 * x + self.b[k], self.s[k] * 0.8


SHAPES = st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 8))


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 6), SHAPES, st.sampled_from(sorted(ORDERS)),
       st.booleans(), st.integers(0, 3))
def test_roundtrip_random_chains(seed, K, shape, order, encrypt, base_words):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, shape).astype(np.uint8)
    chain = RandomChain(seed, K, shape)
    base = Message.from_words(rng.choice([0, 1, 7, 2**32 - 1], base_words).astype(np.uint32))
    initial = base.words().tolist()
    msg, stats = ORDERS[order].encode(x, chain, base, seed=seed, encrypt=encrypt)
    added = stats.added_initial_words
    msg = Message.from_bytes(msg.to_bytes())
    y, left = ORDERS[order].decode(msg, chain, shape, seed=seed, encrypt=encrypt)
    assert np.array_equal(x, y)
    assert left.words()[:len(initial)].tolist() == initial
    assert left.num_bits() == stats.initial_bits and left.words().size == len(initial) + added
    assert stats.net_bits == msg.num_bits() - left.num_bits()


@pytest.mark.parametrize("order", sorted(ORDERS))
def test_caller_initial_bits_come_back_intact(order):
    rng = np.random.default_rng(5)
    shape = (3, 2, 4)
    x = rng.integers(0, 256, shape).astype(np.uint8)
    chain = RandomChain(5, 3, shape)
    words = rng.integers(0, 2**32, 400, dtype=np.uint32)
    words[-3:] = 0  # trailing zero words must survive (sealing)
    msg, stats = ORDERS[order].encode(x, chain, seed=9, initial=words)
    assert stats.initial_bits == 32 * words.size and stats.added_initial_words == words.size
    y, left = ORDERS[order].decode(msg, chain, shape, seed=9, expect_initial=words)
    assert np.array_equal(x, y) and np.array_equal(left.words(), words)
    # the same with bytes, and a base message topped up by "auto"
    msg, _ = ORDERS[order].encode(x, chain, seed=9, initial=words.astype("<u4").tobytes())
    _, left = ORDERS[order].decode(msg, chain, shape, seed=9)
    assert left.to_bytes() == words.astype("<u4").tobytes()
    msg, _ = ORDERS[order].encode(x, chain, Message.from_words(words[:5]), seed=9)
    _, left = ORDERS[order].decode(msg, chain, shape, seed=9)
    assert np.array_equal(left.words()[:5], words[:5])


@pytest.mark.parametrize("order", sorted(ORDERS))
def test_too_few_caller_bits_raise(order):
    shape = (2, 8)
    x = np.zeros(shape, np.uint8)
    with pytest.raises(InsufficientInitialBits):
        ORDERS[order].encode(x, RandomChain(1, 2, shape), initial=1)


class Perturbed(RandomChain):
    def prior(self, k, z):
        mean, scale = super().prior(k, z)
        return mean + 1e-3, scale


@pytest.mark.parametrize("order", sorted(ORDERS))
def test_mismatch_is_detected(order):
    shape = (2, 3, 5)
    rng = np.random.default_rng(7)
    x = rng.integers(0, 256, shape).astype(np.uint8)
    chain = RandomChain(7, 4, shape)
    msg, _ = ORDERS[order].encode(x, chain, seed=11)
    with pytest.raises(DecodeMismatch):  # wrong keystream seed
        ORDERS[order].decode(msg, chain, shape, seed=12, initial_seed=11, expect_initial="seeded")
    with pytest.raises(DecodeMismatch):  # conditionals that differ from the encoder's
        ORDERS[order].decode(msg, Perturbed(7, 4, shape), shape, seed=11, expect_initial="seeded")
    with pytest.raises(DecodeMismatch):  # the caller expected other initial bits
        ORDERS[order].decode(msg, chain, shape, seed=11, expect_initial=np.zeros(3, np.uint32))
    y, _ = ORDERS[order].decode(msg, chain, shape, seed=11, expect_initial="seeded")
    assert np.array_equal(x, y)


def test_stats_accounting():
    shape = (4, 6, 6)
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, shape).astype(np.uint8)
    chain = RandomChain(2, 3, shape)
    msg, s = bitswap.encode(x, chain, seed=3)
    assert s.net_bits == s.final_bits - s.initial_bits == msg.num_bits() - s.initial_bits
    assert [t.step for t in s.steps] == [0, 1, 2, 3]
    assert np.isclose(s.per_image_bits.sum(), s.ideal_net_bits)
    assert s.initial_bits_used <= s.initial_bits
    assert set(s.as_dict()) >= {"net_bits", "ideal_net_bits", "initial_bits", "overhead_bits"}


def test_decode_in_a_fresh_process(tmp_path):
    """The determinism contract: another process decodes what this one encoded."""
    shape = (2, 3, 4)
    x = np.random.default_rng(4).integers(0, 256, shape).astype(np.uint8)
    msg, _ = bitswap.encode(x, RandomChain(4, 3, shape), seed=21)
    (tmp_path / "stream.bin").write_bytes(msg.to_bytes())
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(f"""
        import sys, numpy as np
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_bitsback_coders import RandomChain
        from bitsback import Message, bitswap
        msg = Message.from_bytes(open({str(tmp_path / 'stream.bin')!r}, 'rb').read())
        y, _ = bitswap.decode(msg, RandomChain(4, 3, {shape}), {shape}, seed=21,
                              expect_initial="seeded")
        assert np.array_equal(y, np.load({str(tmp_path / 'x.npy')!r}))
        assert "torch" not in sys.modules and "ddpm_codec" not in sys.modules
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
