"""Reverse channel coding of diagonal Gaussians (bitsback.rcc.step)."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from bitsback.rcc import step as rcc
from bitsback.rcc.index import join_index, octave_law, split_index
from bitsback.rcc.search import log_weight_coefs, regenerate
from bitsback.rcc.shared_random import candidate_normals, permutation
from bitsback.rcc.step import RCCError, decode_gaussian, encode_gaussian, frame, unframe

ROOT = Path(__file__).resolve().parents[1]


def gaussian_pair(rng, dims, kl_bits, variances="equal"):
    """(mu_q, s_q, mu_p, s_p) with KL(q||p) = kl_bits, the rest in a mean shift.

    variances: 'equal'; 'narrower' (s_q < s_p, DDPM's beta-tilde vs beta);
    'mixed' (per-dimension ratios on both sides of 1)."""
    mu_p = rng.normal(size=dims)
    s_p = np.exp(0.3 * rng.normal(size=dims))
    ratio = {"equal": np.ones(dims),
             "narrower": np.full(dims, 0.8),
             "mixed": np.exp(0.2 * rng.normal(size=dims))}[variances]
    s_q = s_p * ratio
    var_bits = np.sum(0.5 * (ratio ** 2 - 1) - np.log(ratio)) / np.log(2)
    shift = rng.normal(size=dims)
    shift *= np.sqrt(max(2 * np.log(2) * (kl_bits - var_bits), 0.0) / np.sum(shift ** 2))
    return mu_p + shift * s_p, s_q, mu_p, s_p


# ---- round trips ----------------------------------------------------------------

@pytest.mark.parametrize("dims,kl_bits", [(1, 3.0), (2, 9.0), (7, 0.2), (40, 30.0), (300, 45.0)])
@pytest.mark.parametrize("variances", ["equal", "narrower", "mixed"])
def test_round_trip_bit_for_bit(dims, kl_bits, variances):
    rng = np.random.default_rng(dims * 1000 + int(kl_bits * 10))
    q_p = gaussian_pair(rng, dims, kl_bits, variances)
    payload, sample, info = encode_gaussian(*q_p, seed=123, step=7, bits_per_chunk=12.0)
    assert isinstance(payload, bytes) and sample.dtype == np.float64
    assert info["kl_bits"] == pytest.approx(rcc.gaussian_kl_bits(*q_p).sum())
    got = decode_gaussian(payload, q_p[2], q_p[3], seed=123, step=7, bits_per_chunk=12.0)
    assert np.array_equal(got, sample)
    assert info["payload_bits"] == 8 * len(payload)


def test_round_trip_shapes_broadcasting_and_big_keys():
    rng = np.random.default_rng(1)
    mu_p = rng.normal(size=(2, 3, 4))
    mu_q = mu_p + 0.5 * rng.normal(size=mu_p.shape)
    seed, step = 2 ** 64 - 1, 2 ** 40 + 3            # 64-bit keys, no overflow
    payload, sample, _ = encode_gaussian(mu_q, 0.7, mu_p, 0.9, seed, step)
    assert sample.shape == (2, 3, 4)
    assert np.array_equal(decode_gaussian(payload, mu_p, 0.9, seed, step), sample)


def test_encoding_is_deterministic_and_decodes_in_a_fresh_process(tmp_path):
    """No process-salted hashing: another interpreter decodes the same sample."""
    rng = np.random.default_rng(2)
    q_p = gaussian_pair(rng, 50, 40.0, "mixed")
    payload, sample, _ = encode_gaussian(*q_p, seed=99, step=3, bits_per_chunk=12.0)
    again, sample2, _ = encode_gaussian(*q_p, seed=99, step=3, bits_per_chunk=12.0)
    assert again == payload and np.array_equal(sample2, sample)
    np.save(tmp_path / "p.npy", np.stack([q_p[2], q_p[3]]))
    (tmp_path / "payload.bin").write_bytes(payload)
    code = ("import sys, numpy as np; from bitsback.rcc.step import decode_gaussian;"
            "d = sys.argv[1]; p = np.load(d + '/p.npy');"
            "x = decode_gaussian(open(d + '/payload.bin', 'rb').read(), p[0], p[1], 99, 3,"
            " bits_per_chunk=12.0); np.save(d + '/x.npy', x)")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, cwd=ROOT,
                   env={"PYTHONHASHSEED": "12345", "OMP_NUM_THREADS": "1",
                        "PYTHONPATH": ":".join(sys.path)})
    assert np.array_equal(np.load(tmp_path / "x.npy"), sample)


def test_wrong_seed_or_step_gives_another_sample():
    rng = np.random.default_rng(3)
    q_p = gaussian_pair(rng, 30, 25.0)
    payload, sample, _ = encode_gaussian(*q_p, seed=5, step=1, bits_per_chunk=12.0)
    for seed, step in [(6, 1), (5, 2)]:
        try:
            other = decode_gaussian(payload, q_p[2], q_p[3], seed, step, bits_per_chunk=12.0)
        except RCCError:
            continue
        assert not np.array_equal(other, sample)
        assert np.mean(other == sample) < 0.5


# ---- corruption ---------------------------------------------------------------------

def _payloads(check_bits):
    rng = np.random.default_rng(4)
    out = []
    for k in range(6):
        q_p = gaussian_pair(rng, int(rng.integers(3, 60)), float(rng.uniform(8, 60)), "mixed")
        payload, sample, _ = encode_gaussian(*q_p, seed=k, step=0, bits_per_chunk=10.0,
                                             check_bits=check_bits)
        out.append((payload, q_p[2], q_p[3], k))
    return out


def _damaged(payload):
    """Every truncation, an extension, and single-bit flips at every byte."""
    yield from (payload[:-cut] for cut in range(1, len(payload) + 1))
    yield payload + b"\x00"
    for pos in range(len(payload)):
        for bit in (0, 4, 7):
            bad = bytearray(payload)
            bad[pos] ^= 1 << bit
            yield bytes(bad)


def test_damaged_payload_raises_with_check_bits():
    for payload, mu_p, s_p, seed in _payloads(16):
        decode_gaussian(payload, mu_p, s_p, seed, 0, bits_per_chunk=10.0, check_bits=16)
        for bad in _damaged(payload):
            with pytest.raises(RCCError):
                decode_gaussian(bad, mu_p, s_p, seed, 0, bits_per_chunk=10.0, check_bits=16)
        with pytest.raises(RCCError):       # other seed: caught too
            decode_gaussian(payload, mu_p, s_p, seed + 1, 0, bits_per_chunk=10.0, check_bits=16)


def test_damaged_payload_detected_without_check_bits_mostly():
    """Without check bits detection costs nothing (canonical re-encoding, and a
    payload never shorter than its symbols' information) but is not certain:
    measured ~90% of truncations and ~80% of bit flips."""
    caught = total = 0
    for payload, mu_p, s_p, seed in _payloads(0):
        for bad in _damaged(payload):
            total += 1
            try:
                decode_gaussian(bad, mu_p, s_p, seed, 0, bits_per_chunk=10.0)
            except RCCError:
                caught += 1
    assert caught / total > 0.75


def test_frame_unframe():
    parts = [b"", b"\x01\x02", bytes(range(256)) * 3]
    stream = frame(parts)
    assert unframe(stream) == parts
    with pytest.raises(RCCError):
        unframe(stream[:-1])
    with pytest.raises(RCCError):
        unframe(b"\x80")


def test_bad_inputs():
    with pytest.raises(ValueError):
        encode_gaussian([0.0], [0.0], [0.0], [1.0], 1, 1)          # zero scale
    with pytest.raises(ValueError):
        encode_gaussian([0.0], [1.0], [0.0], [1.0], -1, 1)         # negative seed
    with pytest.raises(TypeError):
        encode_gaussian([0.0], [1.0], [0.0], [1.0], 1.5, 1)
    with pytest.raises(ValueError):
        encode_gaussian([0.0], [1.0], [0.0], [1.0], 1, 1, max_candidates_log2=30)
    with pytest.raises(TypeError):
        decode_gaussian("text", [0.0], [1.0], 1, 1)


# ---- statistics of the sent sample ------------------------------------------------

def _samples(dims, kl_bits, variances, margin, trials, seed):
    rng = np.random.default_rng(seed)
    q_p = gaussian_pair(rng, dims, kl_bits, variances)
    z = np.empty((trials, dims))
    for t in range(trials):
        _, x, _ = encode_gaussian(*q_p, seed=seed, step=t, margin_bits=margin)
        z[t] = (x - q_p[0]) / q_p[1]                    # N(0, I) if x ~ q
    return z, q_p


@pytest.mark.parametrize("dims,variances", [(1, "equal"), (1, "mixed"), (2, "narrower")])
def test_wide_search_samples_follow_q(dims, variances):
    """With a margin of ~3 s.d. of log2 q/p the capped search is exact in practice."""
    z, _ = _samples(dims, 3.0, variances, margin=11.0, trials=400, seed=10 + dims)
    for j in range(dims):
        assert stats.kstest(z[:, j], "norm").pvalue > 1e-3
        assert abs(z[:, j].mean()) < 4 / np.sqrt(len(z))
        assert 0.8 < z[:, j].var() < 1.2


def test_default_margin_bias_is_as_documented():
    """Capped at 2^(KL + 2) the winner leans towards p: measured, not hidden."""
    z, q_p = _samples(1, 6.0, "equal", margin=2.0, trials=400, seed=20)
    lean = (z[:, 0] * np.sign(q_p[2] - q_p[0])[0]).mean()   # in s.d. of q, towards p
    assert 0.2 < lean < 0.8                              # simulation: ~0.5 at 6 bits
    assert stats.kstest(z[:, 0], "norm").pvalue < 1e-3


# ---- rate ---------------------------------------------------------------------------

def test_bits_close_to_kl_default_parameters():
    """Payload (side info and coder tail included) within 10% of the KL, over a
    few steps: one step's index length has a s.d. of ~3 bits per chunk."""
    rng = np.random.default_rng(30)
    bits = kl = 0.0
    for k, variances in enumerate(["equal", "narrower", "mixed", "equal"]):
        q_p = gaussian_pair(rng, 160, 110.0 + 40 * k, variances)
        payload, sample, info = encode_gaussian(*q_p, seed=k, step=k)
        assert info["payload_bits"] < 1.3 * info["kl_bits"]
        bits += info["payload_bits"]
        kl += info["kl_bits"]
    assert abs(bits / kl - 1) < 0.10


def test_info_accounting():
    rng = np.random.default_rng(31)
    q_p = gaussian_pair(rng, 100, 60.0, "mixed")
    payload, sample, info = encode_gaussian(*q_p, seed=1, step=1, bits_per_chunk=12.0)
    assert info["payload_bits"] == pytest.approx(info["side_bits"] + info["index_bits"]
                                                 + info["tail_bits"])
    assert info["kl_bits_per_chunk"].sum() == pytest.approx(info["kl_bits"])
    assert info["chunk_dims"].sum() == 100 and len(info["indices"]) == info["chunks"]
    assert np.all(info["indices"] < 2 ** info["log2_candidates"])
    assert info["n_candidates"] == int(np.sum(2 ** info["log2_candidates"]))
    # log q/p at the sent sample, recomputed independently of the search
    logw = stats.norm.logpdf(sample, q_p[0], q_p[1]) - stats.norm.logpdf(sample, q_p[2], q_p[3])
    assert info["log_ratio_bits"] == pytest.approx(logw.sum() / np.log(2), abs=1e-6)


# ---- building blocks ----------------------------------------------------------------

def test_kl_and_log_weights():
    rng = np.random.default_rng(40)
    mu_q, s_q, mu_p, s_p = gaussian_pair(rng, 5, 7.0, "mixed")
    kl = rcc.gaussian_kl_bits(mu_q, s_q, mu_p, s_p)
    x = np.linspace(-12, 12, 200001)
    for j in range(5):
        lq = stats.norm.logpdf(x, mu_q[j] , s_q[j])
        lp = stats.norm.logpdf(x, mu_p[j], s_p[j])
        numeric = np.trapezoid(np.exp(lq) * (lq - lp), x) / np.log(2)
        assert kl[j] == pytest.approx(numeric, rel=1e-6, abs=1e-9)
    a, b, c = log_weight_coefs(mu_q, s_q, mu_p, s_p)
    z = rng.normal(size=(4, 5))
    xs = mu_p + s_p * z
    direct = stats.norm.logpdf(xs, mu_q, s_q) - stats.norm.logpdf(xs, mu_p, s_p)
    assert np.allclose(a * z * z + b * z + c, direct)
    assert rcc.gaussian_kl_bits(1.0, 2.0, 1.0, 2.0) == 0.0


def test_candidates_prefix_stable_and_regenerated():
    block = candidate_normals(1, 2, 3, 4, 50, 7)
    assert np.array_equal(candidate_normals(1, 2, 3, 4, 9, 7), block[:9])
    assert np.array_equal(regenerate(4 * 2 ** 13 + 5, 7, (1, 2, 3)), block[5])
    assert not np.array_equal(candidate_normals(1, 2, 3, 5, 9, 7), block[:9])
    p = permutation(1000, 5, 6)
    assert sorted(p.tolist()) == list(range(1000))
    assert np.array_equal(p, permutation(1000, 5, 6))
    assert not np.array_equal(p, permutation(1000, 5, 7))


def test_index_split_join():
    for i in [0, 1, 2, 3, 4, 7, 8, 1000, 2 ** 20 - 1]:
        e, m, size = split_index(i)
        assert join_index(e, m) == i and 0 <= m < size


def test_octave_law_matches_monte_carlo():
    """The index model against simulated capped PFR (1-D mean shift, 4 bits, 2^6)."""
    K, L, trials = 4.0, 6, 3000
    d = np.sqrt(2 * K * np.log(2))
    rng = np.random.default_rng(50)
    z = rng.normal(size=(trials, 2 ** L))
    t = np.cumsum(rng.exponential(size=(trials, 2 ** L)), axis=1)
    win = np.argmin(np.log(t) - (d * z - d * d / 2), axis=1)
    emp = np.bincount([int(i).bit_length() for i in win], minlength=L + 1) / trials
    model = octave_law(int(K * 8), L)
    cross = -(emp * np.log2(model)).sum()
    ent = -(emp[emp > 0] * np.log2(emp[emp > 0])).sum()
    assert cross - ent < 0.03


@pytest.mark.slow
def test_fashion_mnist_sized_step():
    """784 dims, ~1000 bits: seconds, bits close to KL."""
    rng = np.random.default_rng(60)
    q_p = gaussian_pair(rng, 784, 1000.0, "narrower")
    payload, sample, info = encode_gaussian(*q_p, seed=1, step=500)
    assert np.array_equal(decode_gaussian(payload, q_p[2], q_p[3], 1, 500), sample)
    assert abs(info["payload_bits"] / info["kl_bits"] - 1) < 0.1
    assert info["encode_seconds"] < 120
