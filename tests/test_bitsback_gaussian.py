"""Discretized Gaussians on a grid (gaussian) and DDPM eq. 13 pixels (pixels)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import ndtr

from bitsback import Message
from bitsback.errors import OutOfWindow
from bitsback.symbols import gaussian, pixels


def _msg(seed=0, n=64):
    return Message.from_words(np.random.default_rng(seed).integers(0, 2**32, n, dtype=np.uint32))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 40), st.floats(-1, 3), st.floats(1e-3, 1e3),
       st.floats(0.01, 2.0))
def test_bits_back_step_roundtrip(seed, n, log_far, ratio, delta):
    """Pop under a posterior window, push under a prior that is far off for some
    elements (escapes); the decoder's mirror restores the stack exactly."""
    rng = np.random.default_rng(seed)
    mean = rng.normal(0, 3, n)
    scale = ratio * delta * rng.uniform(0.5, 1.5, n)
    pmean = mean + np.where(rng.random(n) < 0.3, 10.0 ** log_far * scale, 0.0)
    pscale = scale * rng.uniform(0.2, 2, n)
    m = _msg(seed)
    start = m.copy()
    idx, qbits = gaussian.pop(m, mean, scale, delta, escape=False)
    assert np.all(np.abs(idx - np.rint(mean / delta)) <= gaussian.half_width(scale, delta, False))
    pbits = gaussian.push(m, idx, pmean, pscale, delta, escape=True)
    assert np.all(np.isfinite(pbits)) and np.all(pbits >= 0) and np.all(qbits >= 0)
    back, pbits2 = gaussian.pop(m, pmean, pscale, delta, escape=True)
    assert np.array_equal(back, idx) and np.allclose(pbits, pbits2)
    gaussian.push(m, back, mean, scale, delta, escape=False)
    assert m == start


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 30), st.floats(1e-3, 1e3), st.booleans())
def test_grid_push_pop_inverse(seed, n, ratio, escape):
    rng = np.random.default_rng(seed)
    delta = rng.uniform(0.01, 1)
    mean = rng.normal(0, 5, n)
    scale = ratio * delta * rng.uniform(0.5, 2, n)  # several window widths -> groups
    h = gaussian.half_width(scale, delta, escape)
    far = 1000 if escape else 0
    idx = np.rint(mean / delta).astype(np.int64) + rng.integers(-h, h + 1) \
        + rng.choice([0, far, -far * 37], n)
    m = _msg(seed)
    start = m.copy()
    bits = gaussian.push(m, idx, mean, scale, delta, escape=escape)
    back, bits2 = gaussian.pop(m, mean, scale, delta, escape=escape)
    assert np.array_equal(back, idx) and np.allclose(bits, bits2) and m == start


def test_posterior_window_rejects_outside_values():
    m = _msg()
    with pytest.raises(OutOfWindow):
        gaussian.push(m, np.array([100]), np.zeros(1), np.ones(1), 0.25, escape=False)


def test_popped_values_follow_the_discretized_gaussian():
    """Pops from clean bits are samples of the window-normalized grid Gaussian."""
    n, delta, mu, s = 200_000, 0.5, 0.3, 1.3
    m = _msg(1, 2 * n)
    idx, bits = gaussian.pop(m, np.full(n, mu), np.full(n, s), delta, escape=False)
    k = np.arange(idx.min(), idx.max() + 1)
    p = ndtr(((k + 0.5) * delta - mu) / s) - ndtr(((k - 0.5) * delta - mu) / s)
    counts = np.bincount(idx - k[0], minlength=k.size)
    chi2 = np.sum((counts - n * p) ** 2 / (n * p))
    assert chi2 < k.size + 6 * np.sqrt(2 * k.size)
    assert abs(bits.mean() + np.sum(p * np.log2(p))) < 0.01  # ideal bits = entropy


def test_coder_matches_ideal_bits():
    rng = np.random.default_rng(2)
    n = 100_000
    mean, scale = rng.normal(0, 2, n), rng.uniform(0.2, 3, n)
    m = Message.empty()
    idx = np.rint(rng.normal(mean, scale) / 0.25).astype(np.int64)
    b0 = m.num_bits()
    bits = gaussian.push(m, idx, mean, scale, 0.25, escape=True)
    assert abs((m.num_bits() - b0) - bits.sum()) < 1e-4 * bits.sum() + 64


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 50), st.floats(1e-4, 3.0))
def test_pixels_roundtrip(seed, n, scale):
    rng = np.random.default_rng(seed)
    x = rng.choice([0, 1, 127, 254, 255, rng.integers(256)], n).astype(np.uint8)
    mean = np.clip(x / 127.5 - 1 + rng.normal(0, scale, n), -3, 3)
    mean[rng.random(n) < 0.2] = rng.uniform(-5, 5)  # badly off: escapes
    m = _msg(seed)
    start = m.copy()
    bits = pixels.push(m, x, mean, scale)
    y, bits2 = pixels.pop(m, mean, scale)
    assert np.array_equal(x, y) and np.allclose(bits, bits2) and m == start


def test_pixel_probabilities_are_ddpm_eq13():
    v = np.arange(256)
    for mean, scale in [(-1.0, 0.05), (0.3, 0.2), (0.999, 0.001), (1.5, 0.5)]:
        x = v / 127.5 - 1
        lo = np.where(v == 0, -np.inf, (x - 1 / 255 - mean) / scale)
        hi = np.where(v == 255, np.inf, (x + 1 / 255 - mean) / scale)
        p = np.where(lo > 0, ndtr(-lo) - ndtr(-hi), ndtr(hi) - ndtr(lo))  # no cancellation
        m = Message.empty()
        keep = p > 2.0 ** -24  # below that the coder's floor is what is counted
        bits = pixels.push(m, v[keep].astype(np.uint8), np.full(keep.sum(), mean), scale)
        assert np.allclose(bits, -np.log2(p[keep]), rtol=1e-9, atol=1e-9)
        assert np.isclose(p.sum(), 1.0)
