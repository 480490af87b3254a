"""Reference chains for bitsback (shared by tests/test_bitsback_*.py and
benchmarks/bench_bitsback.py): a closed-form-denoiser DDPM chain, a
linear-Gaussian chain with a closed-form expected codelength, and the -VLB
estimators they are compared with. Numpy only; nothing here is part of the
coder (the denoiser must not live in bitsback/).
"""
import gzip
from pathlib import Path

import numpy as np
from scipy.special import ndtr

LOG2E = 1.4426950408889634
FMNIST_TEST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")


def load_fashion_mnist(n, path=FMNIST_TEST):
    """First ``n`` test images as uint8 (n, 1, 28, 28) (IDX: 16-byte header)."""
    with gzip.open(path, "rb") as f:
        data = f.read(16 + 784 * n)
    return np.frombuffer(data, np.uint8, offset=16).reshape(n, 1, 28, 28).copy()


def ddpm_log_abar(T=1000):
    betas = np.linspace(1e-4, 0.02, T)
    return np.concatenate([[0.0], np.cumsum(np.log1p(-betas))])  # index t = 0..T


class DDPMClosedForm:
    """DDPM (linear betas, T=1000) subsampled to K evenly spaced times, with the
    exact denoiser of a finite set of images as the model.

    * posterior(k, z_{k-1}) = q(z_k|z_{k-1}) = N(sqrt(a_k) z, 1 - a_k),
      a_k = abar_k / abar_{k-1} (z_0 = x);
    * prior(k, z_{k+1}) = N(mu~(z_{k+1}, x0_hat(z_{k+1})), beta~_{k+1}), the
      DDPM posterior mean/variance with x0 = E[x0|z] (no clipping needed:
      it is a convex combination of images in [-1, 1]); prior(K) = N(0, 1);
    * likelihood(z_1): mean x0_hat(z_1), scale ``decoder_scale`` or by
      default sqrt(1 - abar_1) / sqrt(abar_1) (the x0 error scale of z_1);
    * topdown_posterior(k, z_{k+1}, x) = q(z_k|z_{k+1}, x); q(z_K|x);
    * bin widths delta_k = bin_frac * min(posterior scale, prior scale) of z_k.
    """

    def __init__(self, images, K, T=1000, bin_frac=0.25, decoder_scale=None):
        self.X = images.reshape(images.shape[0], -1).astype(np.float64) / 127.5 - 1.0
        self.X2 = np.sum(self.X ** 2, axis=1)
        la = ddpm_log_abar(T)
        self.t = np.rint(np.arange(K + 1) * T / K).astype(int)  # t_0 = 0
        self.la = la[self.t]
        self.abar = np.exp(self.la)
        self.num_latents = K
        la_step = self.la[1:] - self.la[:-1]  # log a_k, k = 1..K  (index k-1)
        self.sq_a = np.exp(0.5 * la_step)
        self.var_q = -np.expm1(la_step)  # 1 - a_k
        om = -np.expm1(self.la)  # 1 - abar_k, k = 0..K
        # reverse step k -> k-1 (k = 2..K), stored at index k
        self.c0 = np.zeros(K + 1)
        self.c1 = np.zeros(K + 1)
        self.var_p = np.zeros(K + 1)
        for k in range(2, K + 1):
            self.c0[k] = np.sqrt(self.abar[k - 1]) * self.var_q[k - 1] / om[k]
            self.c1[k] = self.sq_a[k - 1] * om[k - 1] / om[k]
            self.var_p[k] = om[k - 1] * self.var_q[k - 1] / om[k]
        self.om = om
        self.dec_scale = (np.sqrt(om[1] / self.abar[1]) if decoder_scale is None
                          else float(decoder_scale))
        prior_scale = [np.sqrt(self.var_p[k + 1]) for k in range(1, K)] + [1.0]
        post_scale = [np.sqrt(self.var_q[k - 1]) for k in range(1, K + 1)]
        self.bin_widths = [bin_frac * min(a, b) for a, b in zip(post_scale, prior_scale)]
        self.calls = 0

    def x0_hat(self, z, k):
        zf = z.reshape(z.shape[0], -1)
        s = np.sqrt(self.abar[k])
        logits = (2 * s * zf @ self.X.T - s * s * self.X2[None, :]) / (2 * self.om[k])
        logits -= logits.max(axis=1, keepdims=True)
        w = np.exp(logits)
        w /= w.sum(axis=1, keepdims=True)
        return (w @ self.X).reshape(z.shape)

    def posterior(self, k, z_prev):
        self.calls += 1
        return self.sq_a[k - 1] * z_prev, np.sqrt(self.var_q[k - 1])

    def prior(self, k, z_next):
        self.calls += 1
        if k == self.num_latents:
            return 0.0, 1.0
        x0 = self.x0_hat(z_next, k + 1)
        return self.c0[k + 1] * x0 + self.c1[k + 1] * z_next, np.sqrt(self.var_p[k + 1])

    def likelihood(self, z1):
        self.calls += 1
        return self.x0_hat(z1, 1), self.dec_scale

    def topdown_posterior(self, k, z_next, x):
        self.calls += 1
        if k == self.num_latents:
            return np.sqrt(self.abar[k]) * x, np.sqrt(self.om[k])
        return self.c0[k + 1] * x + self.c1[k + 1] * z_next, np.sqrt(self.var_p[k + 1])


class LinearGaussian:
    """z_k = a_k z_{k-1} + s_k eps (z_0 = x, a_k = sqrt(1 - beta_k)); generative
    conditionals = the exact reverse of this forward chain under a Gaussian
    data prior N(0, v0) (linear, so every expectation is closed form)."""

    def __init__(self, betas, v0=0.25, bin_frac=0.25):
        self.beta = np.asarray(betas, np.float64)
        K = self.num_latents = self.beta.size
        self.a, self.s2 = np.sqrt(1 - self.beta), self.beta
        v = [v0]
        for k in range(K):
            v.append(self.a[k] ** 2 * v[-1] + self.s2[k])
        self.v = np.array(v)  # marginal variances, index 0..K
        # p(z_k | z_{k+1}) = N(b_k z_{k+1}, t2_k), k = 0..K-1 (k = 0 is x | z_1)
        self.b = np.array([self.a[k] * self.v[k] / self.v[k + 1] for k in range(K)])
        self.t2 = np.array([self.v[k] * self.s2[k] / self.v[k + 1] for k in range(K)])
        scales = [min(np.sqrt(self.s2[k - 1]), np.sqrt(self.t2[k]) if k < K else 1e9)
                  for k in range(1, K + 1)]
        self.bin_widths = [bin_frac * s for s in scales]

    def posterior(self, k, z_prev):
        return self.a[k - 1] * z_prev, np.sqrt(self.s2[k - 1])

    def prior(self, k, z_next):
        if k == self.num_latents:
            return 0.0, np.sqrt(self.v[k])
        return self.b[k] * z_next, np.sqrt(self.t2[k])

    def likelihood(self, z1):
        return self.b[0] * z1, np.sqrt(self.t2[0])

    def _q_moments(self, x):  # z_k | x ~ N(A_k x, w_k)
        A, w = [np.ones_like(x)], [0.0]
        for k in range(self.num_latents):
            A.append(self.a[k] * A[-1])
            w.append(self.a[k] ** 2 * w[-1] + self.s2[k])
        return A, w

    def topdown_posterior(self, k, z_next, x):
        A, w = self._q_moments(np.ones(()))
        if k == self.num_latents:
            return A[k] * x, np.sqrt(w[k])
        g = self.a[k] * w[k] / w[k + 1]
        return A[k] * x + g * (z_next - A[k + 1] * x), np.sqrt(w[k] * self.s2[k] / w[k + 1])

    def expected_net_bits(self, pixels, nodes=80):
        """Closed-form E_q[-log2 P(x|z_1) + sum_k log2 q(z_k|z_{k-1}) - log2 p(z_k|z_{k+1})]
        per image (Gauss-Hermite quadrature only for the 1-D L_0 integral)."""
        x = pixels.reshape(pixels.shape[0], -1).astype(np.float64) / 127.5 - 1
        K = self.num_latents
        ones = np.ones(())
        A, w = self._q_moments(ones)
        m = [A[k] * x for k in range(K + 1)]
        nats = np.zeros_like(x)
        for k in range(1, K + 1):
            nats -= 0.5 * np.log(2 * np.pi * np.e * self.s2[k - 1])  # E log q
            if k < K:
                b, t2 = self.b[k], self.t2[k]
                e2 = (m[k] - b * m[k + 1]) ** 2 + w[k] - 2 * b * self.a[k] * w[k] + b * b * w[k + 1]
            else:
                b, t2, e2 = 0.0, self.v[K], m[K] ** 2 + w[K]
            nats += 0.5 * np.log(2 * np.pi * t2) + e2 / (2 * t2)
        u, wt = np.polynomial.hermite_e.hermegauss(nodes)
        z1 = m[1][..., None] + np.sqrt(w[1]) * u
        l0 = -log2_pixel_prob(pixels.reshape(x.shape)[..., None], self.b[0] * z1,
                              np.sqrt(self.t2[0]))
        l0 = (l0 * wt).sum(-1) / wt.sum()
        return (nats * LOG2E + l0).sum(axis=1)


def log2_pixel_prob(v, mean, scale):
    """log2 P(v) under DDPM eq. 13 (open edge bins), float64, model units."""
    v = np.asarray(v, np.float64)
    x = v / 127.5 - 1
    lo = np.where(v == 0, -np.inf, (x - 1 / 255 - mean) / scale)
    hi = np.where(v == 255, np.inf, (x + 1 / 255 - mean) / scale)
    flip = (lo + hi) > 0
    p = np.where(flip, ndtr(-lo) - ndtr(-hi), ndtr(hi) - ndtr(lo))
    return np.log2(p)


def log2_normal(z, mean, scale):
    return (-0.5 * ((z - mean) / scale) ** 2 - np.log(scale) - 0.5 * np.log(2 * np.pi)) * LOG2E


def kl_bits(m1, s1, m2, s2):
    return (np.log(s2 / s1) + (s1 ** 2 + (m1 - m2) ** 2) / (2 * s2 ** 2) - 0.5) * LOG2E


class Recording:
    """Wraps a chain and records every latent value it is called with: path[k] = z_k."""

    def __init__(self, chain):
        self.chain, self.path = chain, {}
        self.num_latents, self.bin_widths = chain.num_latents, chain.bin_widths

    def posterior(self, k, z):
        if k >= 2:
            self.path[k - 1] = z
        return self.chain.posterior(k, z)

    def prior(self, k, z):
        if z is not None:
            self.path[k + 1] = z
        return self.chain.prior(k, z)

    def likelihood(self, z):
        self.path[1] = z
        return self.chain.likelihood(z)

    def topdown_posterior(self, k, z, x):
        if z is not None:
            self.path[k + 1] = z
        return self.chain.topdown_posterior(k, z, x)


def _per_image(a, n):
    return np.broadcast_to(a, a.shape).reshape(n, -1).sum(axis=1)


def vlb_same_path(chain, pixels, path):
    """-VLB estimate on one sampled path, Bit-Swap form, continuous densities
    (bits per image): -log2 P(x|z_1) + sum_k [log2 q(z_k|z_{k-1}) - log2 p(z_k|z_{k+1})]."""
    n, K = pixels.shape[0], chain.num_latents
    xf = pixels.astype(np.float64) / 127.5 - 1
    m, s = chain.likelihood(path[1])
    total = -_per_image(np.broadcast_to(log2_pixel_prob(pixels, m, s), pixels.shape), n)
    for k in range(1, K + 1):
        zp = xf if k == 1 else path[k - 1]
        qm, qs = chain.posterior(k, zp)
        pm, ps = chain.prior(k, path[k + 1] if k < K else None)
        t = log2_normal(path[k], qm, qs) - log2_normal(path[k], pm, ps)
        total += _per_image(np.broadcast_to(t, pixels.shape), n)
    return total


def vlb_kl_form(chain, pixels, path):
    """-VLB in the L_T + sum_k KL(q(z_k|z_{k+1},x) || p(z_k|z_{k+1})) + L_0 form, KLs
    in closed form given the path (bits per image); returns (total, terms dict)."""
    n, K = pixels.shape[0], chain.num_latents
    xf = pixels.astype(np.float64) / 127.5 - 1
    m, s = chain.likelihood(path[1])
    l0 = -_per_image(np.broadcast_to(log2_pixel_prob(pixels, m, s), pixels.shape), n)
    qm, qs = chain.topdown_posterior(K, None, xf)
    pm, ps = chain.prior(K, None)
    lt = _per_image(np.broadcast_to(kl_bits(qm, qs, pm, ps), pixels.shape), n)
    ld = np.zeros(n)
    for k in range(1, K):
        qm, qs = chain.topdown_posterior(k, path[k + 1], xf)
        pm, ps = chain.prior(k, path[k + 1])
        ld += _per_image(np.broadcast_to(kl_bits(qm, qs, pm, ps), pixels.shape), n)
    return l0 + lt + ld, dict(L_T=lt, L_diff=ld, L_0=l0)


def vlb_reference(chain, pixels, n_paths=8, seed=0):
    """Path-independent -VLB (bits, all images): the KL form averaged over
    ``n_paths`` continuous forward paths z_k ~ q(z_k|z_{k-1}); returns
    (mean, standard error over paths)."""
    rng = np.random.default_rng(seed)
    xf = pixels.astype(np.float64) / 127.5 - 1
    totals = []
    for _ in range(n_paths):
        path, z = {}, xf
        for k in range(1, chain.num_latents + 1):
            m, s = chain.posterior(k, z)
            z = path[k] = m + s * rng.standard_normal(pixels.shape)
        totals.append(vlb_kl_form(chain, pixels, path)[0].sum())
    totals = np.array(totals)
    return float(totals.mean()), float(totals.std(ddof=1) / np.sqrt(n_paths))
