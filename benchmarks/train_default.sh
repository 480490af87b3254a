#!/usr/bin/env bash
# The recipe of the shipped default model (ddpm_codec/weights/default.*), since issue 22:
# the batch-32 recipe on one cosine over 20000 steps (640k images, 10.7 epochs), EMA
# weights exported into the package, then the chain's times and reverse variance fitted
# to the T_eval = 100 VLB (ddpm_codec/bound/chain_times.py).
# About 2.5 hours on one CPU core (2.2 train steps/s); the run can be interrupted and
# re-run: it resumes from OUT/last bit for bit.
# (The previous model's recipe, three stages at batch 64 over 4.5 hours, is in
# docs/training.md and this file's history.)
# Usage: bash benchmarks/train_default.sh [OUT] [ddpm-codec binary]
set -euo pipefail
OUT=${1:-runs/b32}
DC=${2:-ddpm-codec}
$DC train --config fmnist --out "$OUT" --steps 20000 --batch-size 32 --lr 1.2e-3 --warmup 400 \
    --lr-decay-to 0.1 --ema-decay 0.9995 --eval-every 2500 --eval-n 500 --ckpt-every 250 --seed 0
$DC export "$OUT" --to ddpm_codec/weights/default --recommended-steps 100
# the chain's times for T_eval 100 and the eps-error reverse variance, fitted to the
# 100-step VLB on 128 train images (weights unchanged; ~10 minutes on one thread)
$DC fit-chain --model ddpm_codec/weights/default --to ddpm_codec/weights/default --steps 100 --n 128
