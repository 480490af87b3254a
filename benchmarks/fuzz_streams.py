"""Fuzz the `.ddpmc` header parser and stream decoder for long; writes
benchmarks/results/fuzz.json and keeps misbehaving inputs in results/fuzz_cases/
(move them to tests/fuzz_cases/ to have the tests replay them).

    OMP_NUM_THREADS=1 python benchmarks/fuzz_streams.py --cases 2000 --seconds 600

The corpus, mutators and outcomes are described in ddpm_codec/testing/fuzz.py.
"""
import sys
from pathlib import Path

from ddpm_codec.testing.fuzz import main as fuzz

RESULTS = Path(__file__).resolve().parent / "results"

if __name__ == "__main__":
    sys.exit(fuzz(out=str(RESULTS / "fuzz.json"), save_cases=str(RESULTS / "fuzz_cases")))
