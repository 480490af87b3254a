"""Portable streams against float streams: what exact conditionals cost (issue 18).

    python benchmarks/bench_portable.py [--n 1000] [--single 10] [--threads 1 2] [--name portable]

The first N Fashion-MNIST test images in one lossless stream at the default
model's T_eval, made twice with the Python API: ``portable=False`` (float
conditionals, the machine's own kernels) and ``portable=True`` (exact
conditionals, format version 5's default). Each stream is decoded and checked
pixel for pixel. Then the first SINGLE test images one at a time (pixel groups
by the companion). File bits/dim over the images' dims, the portable file's
excess over the float one, and encode and decode seconds per image
(time.perf_counter, one run) at each thread count.

Writes benchmarks/results/NAME.json and NAME.md.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from ddpm_codec.api import Codec
from ddpm_codec.data.datasets import load_fashion_mnist

RESULTS = Path(__file__).resolve().parent / "results"


def _run(codec, images, portable):
    t0 = time.perf_counter()
    data, _ = codec.compress(images, portable=portable)
    enc = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = codec.decompress(data)
    dec = time.perf_counter() - t0
    assert all(np.array_equal(o.pixels[:, :, 0], i) for o, i in zip(out, images)), "round trip failed"
    return {"bytes": len(data), "bpd": 8 * len(data) / sum(i.size for i in images),
            "encode_s_per_image": enc / len(images), "decode_s_per_image": dec / len(images)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--single", type=int, default=10)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--name", default="portable")
    a = ap.parse_args()
    codec = Codec("default")
    test = load_fashion_mnist("test")
    stream = [im.reshape(28, 28) for im in test[:a.n]]
    results = []
    for th in a.threads:
        torch.set_num_threads(th)
        row = {"threads": th, "images": a.n}
        for kind, portable in (("float", False), ("portable", True)):
            row[kind] = _run(codec, stream, portable)
            print(th, "stream", kind, row[kind], flush=True)
        row["excess_pct"] = 100 * (row["portable"]["bytes"] / row["float"]["bytes"] - 1)
        results.append(row)
        if a.single:
            one = {"threads": th, "images": a.single, "one_at_a_time": True}
            for kind, portable in (("float", False), ("portable", True)):
                runs = [_run(codec, [im], portable) for im in stream[:a.single]]
                one[kind] = {"bytes": sum(r["bytes"] for r in runs),
                             "bpd": 8 * sum(r["bytes"] for r in runs) / (784 * a.single),
                             "encode_s_per_image": float(np.mean([r["encode_s_per_image"] for r in runs])),
                             "decode_s_per_image": float(np.mean([r["decode_s_per_image"] for r in runs]))}
                print(th, "single", kind, one[kind], flush=True)
            one["excess_pct"] = 100 * (one["portable"]["bytes"] / one["float"]["bytes"] - 1)
            results.append(one)
    env = {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
           "machine": platform.machine(), "date": datetime.date.today().isoformat()}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{a.name}.json").write_text(json.dumps(
        {"name": a.name, "description": __doc__.strip().splitlines()[0], "results": results,
         "environment": env}, indent=1) + "\n")
    lines = ["| threads | what | float bits/dim | portable bits/dim | excess | encode s/img float / portable "
             "| decode s/img float / portable |", "|---|---|---|---|---|---|---|"]
    for r in results:
        what = f"{r['images']} images one at a time" if r.get("one_at_a_time") else f"{r['images']} images, one stream"
        f, p = r["float"], r["portable"]
        lines.append(f"| {r['threads']} | {what} | {f['bpd']:.4f} | {p['bpd']:.4f} | {r['excess_pct']:+.2f}% | "
                     f"{f['encode_s_per_image']:.2f} / {p['encode_s_per_image']:.2f} | "
                     f"{f['decode_s_per_image']:.2f} / {p['decode_s_per_image']:.2f} |")
    (RESULTS / f"{a.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
