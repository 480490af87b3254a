"""Training and evaluation speed of a named model config on this CPU; writes
benchmarks/results/train_speed.json and prints a markdown table.

    OMP_NUM_THREADS=1 python benchmarks/bench_train.py [--config fmnist] [--steps 4]

Measures: optimizer steps/s (full-VLB objective, global batch --batch, after
--warmup untimed steps) and exact-VLB evaluation (`nll`: one network call per
latent level, the chain of --eval-steps levels) in images/s.  The thread count
torch used is part of the record: figures from different counts do not compare.
"""
import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ddpm_codec.diffusion.configs import get_config
from ddpm_codec.eval.evaluate import evaluate_nll
from ddpm_codec.training.trainer import TrainConfig, Trainer

RESULTS = Path(__file__).resolve().parent / "results" / "train_speed.json"


def images(n_train, n_test, seed=0):
    """Fashion-MNIST if installed (the figures do not depend on the pixels), else random pixels."""
    try:
        from ddpm_codec.data.datasets import load_fashion_mnist
        return load_fashion_mnist("train")[:n_train], load_fashion_mnist("test")[:n_test], "fashion_mnist"
    except Exception:  # noqa: BLE001 - any missing-data error: fall back, and say so
        rng = np.random.default_rng(seed)
        return (rng.integers(0, 256, (n_train, 1, 28, 28), dtype=np.uint8),
                rng.integers(0, 256, (n_test, 1, 28, 28), dtype=np.uint8), "random pixels")


def bench_train(config, batch, warmup, steps, train, out):
    cfg = TrainConfig(model=config, out=str(out), steps=10 ** 6, batch_size=batch, eval_every=0, seed=0)
    tr = Trainer(cfg, train, None)
    n_params = sum(p.numel() for p in tr.model.parameters())
    for _ in range(warmup):
        tr.train_step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        tr.train_step()
        times.append(time.perf_counter() - t0)
    return tr, n_params, times


def bench_eval(model, test, eval_steps, batch):
    t0 = time.perf_counter()
    rec = evaluate_nll(model, test, eval_steps, batch=batch, progress=False)
    return time.perf_counter() - t0, rec


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="fmnist")
    ap.add_argument("--batch", type=int, default=64, help="global training batch")
    ap.add_argument("--warmup", type=int, default=1, help="untimed training steps first")
    ap.add_argument("--steps", type=int, default=4, help="timed training steps")
    ap.add_argument("--eval-images", type=int, default=16)
    ap.add_argument("--eval-steps", type=int, default=10, help="latent levels of the nll chain")
    ap.add_argument("--eval-batch", type=int, default=16)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)

    threads = torch.get_num_threads()
    train, test, source = images(max(args.batch * (args.warmup + args.steps), args.batch), args.eval_images)
    tmp = Path(args.out).parent / ".bench_train_run"
    tr, n_params, times = bench_train(args.config, args.batch, args.warmup, args.steps, train, tmp)
    model = tr.ema.model.eval()
    eval_s, rec = bench_eval(model, test, args.eval_steps, args.eval_batch)
    n_calls = args.eval_images * rec["steps"]          # one network call per image per latent level
    med = float(np.median(times))
    result = {
        "name": "train_speed",
        "description": f"training and exact-VLB evaluation speed of the '{args.config}' config on CPU",
        "config": args.config,
        "model_config": get_config(args.config),
        "parameters": n_params,
        "data": source,
        "torch_threads": threads,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "train": {"global_batch": args.batch, "timed_steps": args.steps, "warmup_steps": args.warmup,
                  "objective": "vlb", "seconds_per_step": times, "median_seconds_per_step": med,
                  "steps_per_s": 1.0 / med, "images_per_s": args.batch / med},
        "eval": {"images": args.eval_images, "chain_levels": rec["steps"], "batch": args.eval_batch,
                 "seconds": eval_s, "images_per_s": args.eval_images / eval_s,
                 "network_calls_per_s": n_calls / eval_s,
                 "images_per_s_at_1000_levels_est": args.eval_images / eval_s * rec["steps"] / 1000,
                 "bpd_untrained_note": "the weights are a few steps from init: the bits/dim are not a result",
                 "bpd": rec["bpd"]},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    import shutil
    shutil.rmtree(tmp, ignore_errors=True)

    print(f"## Training / evaluation speed: '{args.config}' ({n_params:,} parameters), "
          f"{threads} torch thread(s), torch {torch.__version__}\n")
    print("| measure | value |")
    print("|---|---|")
    print(f"| train steps/s (global batch {args.batch}, full VLB) | {1 / med:.3f} |")
    print(f"| train images/s | {args.batch / med:.1f} |")
    print(f"| seconds per train step (median of {args.steps}) | {med:.2f} |")
    print(f"| nll images/s ({rec['steps']}-level chain, batch {args.eval_batch}) | "
          f"{args.eval_images / eval_s:.2f} |")
    print(f"| nll network calls/s (image x level) | {n_calls / eval_s:.1f} |")
    print(f"| nll images/s at 1000 levels (extrapolated) | {args.eval_images / eval_s * rec['steps'] / 1000:.4f} |")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
