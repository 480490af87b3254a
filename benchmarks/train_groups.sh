#!/usr/bin/env bash
# The recipe of the shipped pixel-group net (ddpm_codec/weights/default_groups.*), the
# companion that lets one image alone fund its own bits-back chain (README: one image
# alone). Fine-tunes the shipped default model with a zero-initialised conditioning conv
# on the objective the group codec pays (the sum over the 10 pixel groups of each group's
# diffusion loss given the groups before it), then exports the EMA weights with the
# reverse-variance table refitted on the group chains.
# About 80 minutes for 5000 steps on two CPU threads (~1 step/s idle); an interrupted run
# resumes from OUT/state.pt when re-run (same data order from the step it resumes at).
# Usage: bash benchmarks/train_groups.sh [OUT] [python]
set -euo pipefail
OUT=${1:-runs/groups}
PY=${2:-python}
$PY -m ddpm_codec.training.groups --out "$OUT" --steps 5000 --lr 2e-4 --eval-every 500 --eval-n 256
$PY -m ddpm_codec.training.groups --out "$OUT" --export ddpm_codec/weights/default_groups
