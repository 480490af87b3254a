"""Which streams decode where: every stream kind encoded under each of torch's kernel
choices (ddpm_codec.testing.portability.ENVIRONMENTS) and decoded under every other.

    python benchmarks/bench_portability_matrix.py [--name portability_matrix]

The four portable kinds of tests/test_portability.py (tiny VDM: two images, tiled;
default model, 6 steps: two Fashion-MNIST examples, one alone by pixel groups) and,
beside them, the same two-example stream made with --float. Writes
benchmarks/results/NAME.json (every pair's outcome) and NAME.md (counts).
"""
from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter
from pathlib import Path

from ddpm_codec.testing import portability

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", default="portability_matrix")
    a = ap.parse_args()
    spec = portability.standard_spec(ROOT)
    spec.append({**spec[2], "name": "float_default_two", "kw": {**spec[2]["kw"], "portable": False}})
    with tempfile.TemporaryDirectory() as d:
        res = portability.run_matrix(spec, Path(d))
    out = HERE / "results"
    (out / f"{a.name}.json").write_text(json.dumps(
        {"environments": portability.ENVIRONMENTS,
         "pairs": {"|".join(k): v for k, v in sorted(res.items())}}, indent=1) + "\n")
    lines = ["| stream kind | pairs (encode env x decode env) | decoded exactly | failed loudly | wrong pixels |",
             "|---|---|---|---|---|"]
    for case in spec:
        c = Counter("ok" if v == "ok" else "wrong" if v == "different pixels" else "error"
                    for k, v in res.items() if k[2] == case["name"])
        lines.append(f"| {case['name']} | {sum(c.values())} | {c['ok']} | {c['error']} | {c['wrong']} |")
    (out / f"{a.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
