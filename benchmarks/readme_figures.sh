#!/usr/bin/env bash
# Reproduces every figure the README reports for the shipped model, into
# benchmarks/results/ (JSON, markdown tables, PNG plots). About 20-30 minutes
# on a 2-core CPU. Usage: bash benchmarks/readme_figures.sh [ddpm-codec binary]
set -euo pipefail
DC=${1:-ddpm-codec}
R=benchmarks/results
mkdir -p "$R"
$DC nll --split test --n 1000 --steps 100 --json $R/nll_default_steps100_n1000.json | tee $R/nll_default.txt
$DC nll --split test --n 100 --steps 1000 --json $R/nll_default_steps1000_n100.json | tee -a $R/nll_default.txt
python benchmarks/bench_lossless.py --n 100 --steps 10,25,50,100 --single 10
$DC rd-curve --split test --n 100 --steps 100 --json $R/rd_default.json --plot $R/rd_default.png | tee $R/rd_default.txt
$DC sample --n 8 --steps 100 -o $R/samples_default.png --force
