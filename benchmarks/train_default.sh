#!/usr/bin/env bash
# The recipe of the shipped default model (ddpm_codec/weights/default.*).
# Three stages of one run (each resumes the previous checkpoint with a fresh
# cosine LR tail), then the EMA weights are exported into the package
# and the chain's times and reverse variance are fitted to the T_eval = 100 VLB
# (ddpm_codec/bound/chain_times.py).
# About 4.5 hours on one CPU core (1.3 train steps/s idle); any stage can be
# interrupted and re-run: it resumes from OUT/last bit for bit.
# Usage: bash benchmarks/train_default.sh [OUT] [ddpm-codec binary]
set -euo pipefail
OUT=${1:-runs/fmnist}
DC=${2:-ddpm-codec}
COMMON="--config fmnist --out $OUT --batch-size 64 --warmup 500 --ema-decay 0.9995 --eval-every 1000 --eval-n 500 --ckpt-every 250 --seed 0"
# stage 1: steps 0-5000, lr 4e-4 with 500 warmup steps, cosine to 4e-5
$DC train $COMMON --steps 5000 --lr 4e-4 --lr-decay-to 0.1
# stage 2: steps 5000-11000 on a cosine from 2e-4 (evaluated at step 5000 of 11000) to 1e-5
$DC train $COMMON --steps 11000 --lr 2e-4 --lr-decay-to 0.05
# stage 3: steps 11000-20000 on a cosine from 1.5e-4 (evaluated at step 11000 of 20000) to 7.5e-6
$DC train $COMMON --steps 20000 --lr 1.5e-4 --lr-decay-to 0.05
$DC export "$OUT" --to ddpm_codec/weights/default --recommended-steps 100
# the chain's times for T_eval 100 and the eps-error reverse variance, fitted to the
# 100-step VLB on 128 train images (weights unchanged; ~8 minutes)
$DC fit-chain --model ddpm_codec/weights/default --to ddpm_codec/weights/default --steps 100 --n 128
