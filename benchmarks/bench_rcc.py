"""Benchmark of Gaussian reverse channel coding (bitsback.rcc.step).

Measures, on 784-dimensional steps (a Fashion-MNIST image):
  1. payload bits against KL over a range of KLs (overhead %, side info,
     coder tail), the log2 q/p carried by the sent sample (its bias), and
     encode / decode times, for two kinds of step:
       iid   - random mean shifts and variance ratios (chi-square-like KL/dim);
       image - DDPM-like: mean shift proportional to x0 - blur(x0), so the KL
               sits on the edges of a Fashion-MNIST image (heavy-tailed);
  2. encoder time against the number of candidates searched (one chunk);
  3. bias and bits of the capped search against the margin (1-D chunks).
Writes benchmarks/results/rcc.json and rcc.md (the printed markdown tables).

    OMP_NUM_THREADS=1 python benchmarks/bench_rcc.py [--quick]
"""
import argparse
import gzip
import json
import os
import platform
import struct
import time

import numpy as np
from scipy.ndimage import gaussian_filter

from bitsback.rcc.search import log_weight_coefs, pfr_search
from bitsback.rcc.step import decode_gaussian, encode_gaussian, gaussian_kl_bits

FMNIST = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "rcc.json")
LINES = []


def out(line=""):
    print(line, flush=True)
    LINES.append(line)


def images(n):
    """n test images in [-1, 1] (28x28); smooth random blobs if the dataset is absent."""
    if os.path.isfile(FMNIST):
        with gzip.open(FMNIST) as f:
            _, _, h, w = struct.unpack(">4I", f.read(16))
            raw = np.frombuffer(f.read(n * h * w), dtype=np.uint8)
        return raw.reshape(n, h, w) / 127.5 - 1.0, "fashion-mnist"
    rng = np.random.default_rng(0)
    blobs = gaussian_filter(rng.normal(size=(n, 28, 28)), (0, 2, 2))
    return np.clip(blobs / blobs.std() * 0.8, -1, 1), "synthetic"


def scale_to_kl(mu_p, s_p, s_q, shift, kl_bits):
    """mu_q = mu_p + c * shift * s_p with c such that KL(q||p) = kl_bits
    (the mean term of the KL is c^2 shift^2 / 2 nats per dimension)."""
    var_bits = gaussian_kl_bits(mu_p, s_q, mu_p, s_p).sum()
    c2 = max(kl_bits - var_bits, 0.0) * 2 * np.log(2) / np.sum(shift ** 2)
    return mu_p + np.sqrt(c2) * shift * s_p


def step(kind, kl_bits, rng, img):
    dims = img.size
    mu_p = rng.normal(size=dims) * 0.5
    if kind == "iid":
        s_p = np.exp(0.3 * rng.normal(size=dims))
        s_q = s_p * np.exp(0.1 * rng.normal(size=dims))
        shift = rng.normal(size=dims)
    else:                       # DDPM-like: q var beta-tilde < p var beta
        s_p = np.full(dims, 0.1)
        s_q = s_p * 0.9
        shift = (img - gaussian_filter(img, 1.0)).reshape(-1) + 0.02 * rng.normal(size=dims)
    return scale_to_kl(mu_p, s_p, s_q, shift, kl_bits), s_q, mu_p, s_p


def rate_table(kls, trials, imgs):
    rows = []
    for kind in ("iid", "image"):
        for kl_target in kls:
            acc = dict.fromkeys(("kl", "bits", "side", "tail", "logr", "enc", "dec", "cand",
                                 "chunks"), 0.0)
            ratios = []
            for t in range(trials):
                rng = np.random.default_rng(1000 * t + int(kl_target))
                q_p = step(kind, kl_target, rng, imgs[t % len(imgs)])
                payload, sample, info = encode_gaussian(*q_p, seed=t, step=int(kl_target))
                t0 = time.perf_counter()
                back = decode_gaussian(payload, q_p[2], q_p[3], seed=t, step=int(kl_target))
                acc["dec"] += time.perf_counter() - t0
                assert np.array_equal(back, sample)
                acc["kl"] += info["kl_bits"]
                acc["bits"] += info["payload_bits"]
                acc["side"] += info["side_bits"]
                acc["tail"] += info["tail_bits"]
                acc["logr"] += info["log_ratio_bits"]
                acc["enc"] += info["encode_seconds"]
                acc["cand"] += info["n_candidates"]
                acc["chunks"] += info["chunks"]
                ratios.append(info["payload_bits"] / info["kl_bits"])
            rows.append({
                "kind": kind, "kl_bits": acc["kl"] / trials, "trials": trials,
                "payload_bits": acc["bits"] / trials,
                "overhead_pct": 100 * (acc["bits"] / acc["kl"] - 1),
                "overhead_pct_min_max": [100 * (min(ratios) - 1), 100 * (max(ratios) - 1)],
                "side_pct": 100 * acc["side"] / acc["kl"],
                "tail_bits": acc["tail"] / trials,
                "log_ratio_over_kl": acc["logr"] / acc["kl"],
                "chunks": acc["chunks"] / trials,
                "candidates": acc["cand"] / trials,
                "encode_s": acc["enc"] / trials, "decode_s": acc["dec"] / trials,
            })
            out(_row(rows[-1]))
    return rows


def _row(r):
    lo, hi = r["overhead_pct_min_max"]
    return (f"| {r['kind']} | {r['kl_bits']:.0f} | {r['payload_bits']:.0f} | "
            f"{r['overhead_pct']:+.1f} ({lo:+.0f}..{hi:+.0f}) | {r['side_pct']:.1f} | "
            f"{r['tail_bits']:.1f} | {r['log_ratio_over_kl']:.2f} | {r['chunks']:.0f} | {r['candidates']:.2e} | "
            f"{r['encode_s']:.2f} | {r['decode_s'] * 1e3:.0f} |")


def search_speed(logs, dims=16):
    rng = np.random.default_rng(7)
    mu_p, s_p = np.zeros(dims), np.ones(dims)
    a, b, c = log_weight_coefs(mu_p + 0.5 * rng.normal(size=dims), np.full(dims, 0.9), mu_p, s_p)
    rows = []
    for L in logs:
        t0 = time.perf_counter()
        pfr_search(a, b, c, L, (1, 2, 3))
        dt = time.perf_counter() - t0
        rows.append({"log2_candidates": L, "dims": dims, "seconds": dt,
                     "ns_per_candidate_dim": 1e9 * dt / (2 ** L * dims)})
        out(f"| {L} | {dims} | {dt:.3f} | {rows[-1]['ns_per_candidate_dim']:.1f} |")
    return rows


def margin_table(kls, margins, trials):
    rows = []
    for kl in kls:
        for m in margins:
            if kl + m > 20.5:
                continue
            lean, bits, logr = [], [], []
            d = np.sqrt(2 * kl * np.log(2))
            for t in range(trials):
                payload, x, info = encode_gaussian([d], 1.0, [0.0], 1.0, seed=t, step=0,
                                                   margin_bits=m)
                lean.append(d - x[0])          # shortfall along the shift, in s.d.
                bits.append(info["index_bits"])
                logr.append(info["log_ratio_bits"])
            rows.append({"kl_bits": kl, "margin_bits": m, "trials": trials,
                         "index_bits": float(np.mean(bits)),
                         "lean_sd": float(np.mean(lean)),
                         "lean_se": float(np.std(lean) / np.sqrt(trials)),
                         "log_ratio_bits": float(np.mean(logr))})
            r = rows[-1]
            out(f"| {kl} | {m} | {r['index_bits']:.2f} | {r['lean_sd']:.2f} ± {r['lean_se']:.2f} "
                f"| {r['log_ratio_bits']:.2f} |")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer KLs and trials")
    args = ap.parse_args()
    imgs, source = images(8)
    kls = [50, 200, 1000] if args.quick else [20, 50, 100, 200, 500, 1000, 2000]
    trials = 2 if args.quick else 4
    out(f"## Bits vs KL (784 dims, defaults: 16 bits/chunk, margin 2, cap 2^20; images: {source};"
        f" {trials} steps per row, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')})\n")
    out("| step | KL bits | payload bits | overhead % (min..max) | side info % | tail bits "
        "| log2 q/p at sample / KL | chunks | candidates | encode s | decode ms |")
    out("|---|---|---|---|---|---|---|---|---|---|---|")
    rates = rate_table(kls, trials, imgs)
    out("\n## Encoder time vs candidates (one chunk)\n")
    out("| log2 candidates | dims | seconds | ns per candidate-dim |\n|---|---|---|---|")
    speed = search_speed([10, 14, 16, 18] if args.quick else [10, 12, 14, 16, 18, 20])
    out("\n## Capped search: bits and bias vs margin (1-D mean shift)\n")
    out("| KL bits | margin | index bits | lean towards p (s.d.) | log2 q/p at sample |\n"
        "|---|---|---|---|---|")
    margins = margin_table([4, 8, 16] if not args.quick else [4, 8], [0, 2, 4, 8],
                           40 if args.quick else 150)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump({"name": "bitsback.rcc", "description": __doc__.splitlines()[0],
                   "machine": platform.platform(), "omp_threads": os.environ.get("OMP_NUM_THREADS"),
                   "images": source, "quick": args.quick,
                   "rate": rates, "search_speed": speed, "margin": margins}, f, indent=1)
    with open(OUT[:-5] + ".md", "w") as f:
        f.write("\n".join(LINES) + "\n")
    print(f"\nwrote {OUT} and {OUT[:-5]}.md")


if __name__ == "__main__":
    main()
