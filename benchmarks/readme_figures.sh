#!/usr/bin/env bash
# Reproduces every figure the README reports for the shipped model, into
# benchmarks/results/ (JSON, markdown tables, PNG plots). About 45 minutes on
# a 2-core CPU (the two halves of each pair below run side by side).
# Usage: bash benchmarks/readme_figures.sh [ddpm-codec binary]
set -euo pipefail
DC=${1:-ddpm-codec}
PY=${PYTHON:-python}
R=benchmarks/results
mkdir -p "$R"
export OMP_NUM_THREADS=1
# the whole test split, a stratified sample of 10 of the 100 transitions per image
$DC nll --split test --steps 100 --step-samples 10 --shard 0/2 --json $R/nll_s0.json > /dev/null &
$DC nll --split test --steps 100 --step-samples 10 --shard 1/2 --json $R/nll_s1.json > /dev/null
wait
$DC merge $R/nll_s0.json $R/nll_s1.json --json $R/nll_default_steps100_all_sampled10.json | tee $R/nll_default.txt
rm -f $R/nll_s0.json $R/nll_s1.json
# every transition, first 1000 test images (and the sampled estimate on the same images)
$DC nll --split test --n 1000 --steps 100 --json $R/nll_default_steps100_n1000.json | tee -a $R/nll_default.txt &
$PY benchmarks/bench_lossless.py --name lossless_long --n 100 --steps 250,1000 &
$DC nll --split test --n 1000 --steps 100 --step-samples 10 --json $R/nll_default_steps100_n1000_sampled10.json \
    | tee -a $R/nll_default.txt
$PY benchmarks/bench_lossless.py --n 100 --steps 25,50,100 --single 10
$DC rd-curve --split test --n 100 --steps 100 --json $R/rd_default.json --plot $R/rd_default.png | tee $R/rd_default.txt
$DC sample --n 8 --steps 100 -o $R/samples_default.png --force
wait
