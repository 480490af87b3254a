"""Lossless benchmark: `ddpm-codec bench` with the settings the README reports.

    python benchmarks/bench_lossless.py [--name lossless] [--n 100] [--steps 25,50,100] [--single 10]

Writes benchmarks/results/NAME.json, NAME.md and NAME.png (NAME defaults to
"lossless"; the README's long chains use --name lossless_long).
"""
import sys
from pathlib import Path

from ddpm_codec_cli.main import cli

OUT = Path(__file__).parent / "results"

if __name__ == "__main__":
    args = sys.argv[1:]
    name = "lossless"
    if "--name" in args:
        i = args.index("--name")
        name = args[i + 1]
        del args[i:i + 2]
    args = args or ["--n", "100", "--steps", "25,50,100", "--single", "10"]
    cli(["bench", *args, "--json", str(OUT / f"{name}.json"), "--markdown", str(OUT / f"{name}.md"),
         "--plot", str(OUT / f"{name}.png")], prog_name="ddpm-codec bench")
