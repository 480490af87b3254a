#!/usr/bin/env bash
# The recipe of the shipped pixel-group net (ddpm_codec/weights/default_groups.*), the
# companion that lets one image alone fund its own bits-back chain (README: one image
# alone). Fine-tunes the shipped default model with a zero-initialised conditioning conv
# on the objective the group codec pays (the sum over the 10 pixel groups of each group's
# diffusion loss given the groups before it), then exports the EMA weights with the
# default model's reverse-variance table (--refit-variance would refit it on the group
# chains; on the shipped net that cost 0.03 bits/dim, docs/training.md).
# These numbers are `train-groups`'s defaults (TrainConfig + PIXEL_GROUPS_RECIPE in
# ddpm_codec/training/trainer.py), spelled out: batch 64, Adam, lr 2e-4 after 200 warmup
# steps, cosine to zero at 5000 steps, EMA 0.999, clip 1, the group diffusion bits/dim
# of the EMA weights on the first 256 test images every 500 steps.
# About 80 minutes for 5000 steps on two CPU threads (~1 step/s idle); an interrupted run
# resumes from OUT/last bit for bit when re-run. The export resumes the finished run
# (nothing left to train), evaluates it once more and writes the companion.
# Usage: bash benchmarks/train_groups.sh [OUT] [ddpm-codec binary]
set -euo pipefail
OUT=${1:-runs/groups}
DC=${2:-ddpm-codec}
COMMON="--base default --out $OUT --steps 5000 --batch-size 64 --lr 2e-4 --warmup 200 --lr-decay-to 0"
$DC train-groups $COMMON --eval-every 500 --eval-n 256
$DC train-groups $COMMON --eval-every 500 --eval-n 256 --export ddpm_codec/weights/default_groups
