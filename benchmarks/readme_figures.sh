#!/usr/bin/env bash
# Reproduces every figure the README reports for the shipped model, into
# benchmarks/results/ (JSON, markdown tables, PNG plots): two lanes of one
# thread each, about 60 minutes on a 2-core CPU.
# Usage: bash benchmarks/readme_figures.sh [ddpm-codec binary]
set -euo pipefail
DC=${1:-ddpm-codec}
PY=${PYTHON:-python}
R=benchmarks/results
mkdir -p "$R"
export OMP_NUM_THREADS=1

lane_a() {
    # the whole test split: a stratified sample of 10 of the 100 transitions per image
    $DC nll --split test --steps 100 --step-samples 10 --shard 0/2 --json $R/nll_s0.json > /dev/null
    # every transition on the first 1000 test images
    $DC nll --split test --n 1000 --steps 100 --json $R/nll_default_steps100_n1000.json > $R/nll_n1000.txt
    $PY benchmarks/bench_lossless.py --n 100 --steps 25,50,100 --single 10
    $DC rd-curve --split test --n 100 --steps 100 --json $R/rd_default.json --plot $R/rd_default.png > $R/rd_default.txt
    $DC sample --n 8 --steps 100 -o $R/samples_default.png --force
    # the first 1000 test images in one stream (the net-gap figures need N this large)
    $PY benchmarks/bench_lossless.py --name lossless_n1000 --n 1000 --steps 100
}

lane_b() {
    $DC nll --split test --steps 100 --step-samples 10 --shard 1/2 --json $R/nll_s1.json > /dev/null
    $PY benchmarks/bench_lossless.py --name lossless_long --n 100 --steps 250,1000
    $DC nll --split test --n 1000 --steps 100 --step-samples 10 \
        --json $R/nll_default_steps100_n1000_sampled10.json > $R/nll_n1000_sampled.txt
    # the whole test split on the 1000-step chain (same fitted warp and variance)
    $DC nll --split test --steps 1000 --step-samples 10 --shard 0/2 --json $R/nll1000_s0.json > /dev/null
    $DC nll --split test --steps 1000 --step-samples 10 --shard 1/2 --json $R/nll1000_s1.json > /dev/null
}

lane_a & A=$!
lane_b & B=$!
wait $A
wait $B
$DC merge $R/nll_s0.json $R/nll_s1.json --json $R/nll_default_steps100_all_sampled10.json > $R/nll_all.txt
$DC merge $R/nll1000_s0.json $R/nll1000_s1.json --json $R/nll_default_steps1000_all_sampled10.json > $R/nll1000_all.txt
rm -f $R/nll_s0.json $R/nll_s1.json $R/nll1000_s0.json $R/nll1000_s1.json
cat $R/nll_all.txt $R/nll_n1000.txt $R/nll_n1000_sampled.txt $R/nll1000_all.txt
