"""Lossless benchmark: `ddpm-codec bench` with the settings the README reports.

    python benchmarks/bench_lossless.py [--n 100] [--steps 10,25,50,100] [--single 10]

Writes benchmarks/results/lossless.json, lossless.md and lossless.png.
"""
import sys
from pathlib import Path

from ddpm_codec_cli.main import cli

OUT = Path(__file__).parent / "results"

if __name__ == "__main__":
    args = sys.argv[1:] or ["--n", "100", "--steps", "10,25,50,100", "--single", "10"]
    cli(["bench", *args, "--json", str(OUT / "lossless.json"), "--markdown", str(OUT / "lossless.md"),
         "--plot", str(OUT / "lossless.png")], prog_name="ddpm-codec bench")
