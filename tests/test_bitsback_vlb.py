"""Net codelength against the chain's -VLB: linear-Gaussian chain (closed-form
expectation) and the closed-form-denoiser DDPM chain on Fashion-MNIST."""

import numpy as np
import pytest

from bitsback.chains import (
    bbans,
    bitswap,  # noqa: E402
)
from ddpm_codec.testing import reference_chains

ORDERS = {"bitswap": bitswap, "bbans": bbans}
needs_fmnist = pytest.mark.skipif(not reference_chains.FMNIST_TEST.exists(), reason="Fashion-MNIST not installed")


@pytest.mark.parametrize("order", sorted(ORDERS))
def test_linear_gaussian_expected_net_bits(order):
    """Measured net bits agree with the closed-form expected net codelength within
    0.1%, and the standard error of the comparison is below 0.1% too."""
    rng = np.random.default_rng(0)
    chain = reference_chains.LinearGaussian(np.geomspace(0.01, 0.5, 6), v0=0.25)
    nets, expected, per_image = 0, 0.0, []
    for r in range(2):
        x = np.clip(np.rint((rng.normal(0, 0.5, (256, 64)) + 1) * 127.5), 0, 255).astype(np.uint8)
        msg, stats = ORDERS[order].encode(x, chain, seed=r)
        e = chain.expected_net_bits(x)
        nets += stats.net_bits
        expected += e.sum()
        per_image.append(stats.per_image_bits - e)
        y, left = ORDERS[order].decode(msg, chain, x.shape, seed=r, expect_initial="seeded")
        assert np.array_equal(x, y)
    d = np.concatenate(per_image)
    stderr = d.std(ddof=1) * np.sqrt(d.size) / expected
    gap = (nets - expected) / expected
    print(f"{order}: net {nets} expected {expected:.1f} gap {gap:.4%} +- {stderr:.4%}")
    assert stderr < 1e-3
    assert abs(gap) < 1e-3


def _ddpm_case(order, n_images, K, encrypt=True):
    imgs = reference_chains.load_fashion_mnist(64)
    chain = reference_chains.DDPMClosedForm(imgs, K)
    x = imgs[:n_images]
    rec = reference_chains.Recording(chain)
    msg, stats = ORDERS[order].encode(x, rec, seed=3, encrypt=encrypt)
    same = reference_chains.vlb_same_path(chain, x, rec.path).sum()
    kl, terms = reference_chains.vlb_kl_form(chain, x, rec.path)
    y, left = ORDERS[order].decode(msg, chain, x.shape, seed=3, encrypt=encrypt,
                                   expect_initial="seeded")
    assert np.array_equal(x, y) and left.num_bits() == stats.initial_bits
    ref, ref_err = reference_chains.vlb_reference(chain, x, n_paths=8)
    gap, gap_ref = (stats.net_bits - same) / same, (stats.net_bits - ref) / ref
    print(f"{order} K={K} n={n_images}: net {stats.net_bits} -VLB: same path {same:.1f}, "
          f"KL form {kl.sum():.1f}, expected {ref:.1f} +- {ref_err:.1f}; gap {gap:.4%} "
          f"(expected: {gap_ref:.4%} +- {ref_err / ref:.4%}) initial {stats.initial_bits}")
    assert stats.underflow_bits == 0
    assert abs(gap) < 1e-3  # same path: only the coder and the grid differ
    assert ref_err / ref < 5e-4 and abs(gap_ref) < 1e-3 + 3 * ref_err / ref
    return stats


@needs_fmnist
@pytest.mark.parametrize("order", sorted(ORDERS))
def test_ddpm_closed_form_20_steps(order):
    _ddpm_case(order, 64, 20)


@needs_fmnist
@pytest.mark.slow
@pytest.mark.parametrize("order", sorted(ORDERS))
def test_ddpm_closed_form_100_steps(order):
    _ddpm_case(order, 64, 100)


@needs_fmnist
def test_auto_initial_bits_retry_after_a_drain(monkeypatch):
    """Bit-Swap's pop at step 2 reads more than the first pop's share of initial
    bits when they only cover the first pop: "auto" must retry and still decode."""
    monkeypatch.setattr(bitswap, "AUTO_FACTOR", 1.0)
    imgs = reference_chains.load_fashion_mnist(8)
    chain = reference_chains.DDPMClosedForm(imgs, 10)
    msg, stats = bitswap.encode(imgs[:4], chain, seed=1)
    assert stats.restarts >= 1 and stats.underflow_bits == 0
    y, left = bitswap.decode(msg, chain, imgs[:4].shape, seed=1, expect_initial="seeded")
    assert np.array_equal(imgs[:4], y) and left.num_bits() == stats.initial_bits
