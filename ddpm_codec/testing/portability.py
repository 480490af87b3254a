"""Encode under one machine's kernels, decode under another's (issue 18).

torch picks its CPU kernels at start-up: ``ATEN_CPU_CAPABILITY`` (avx512,
avx2, default: no vector unit), oneDNN's ``DNNL_MAX_CPU_ISA``, oneDNN on or
off, the thread count. Each such choice stands in for another machine, so a
stream encoded in one subprocess and decoded in another is the test a
portable format must pass. `run_matrix` does that for every pair.

Worker use (what the parent runs in each environment):
    python -m ddpm_codec.testing.portability encode SPEC.json OUTDIR
    python -m ddpm_codec.testing.portability decode SPEC.json DIR [DIR ...]
SPEC: [{"name", "model", "images": [paths], "kw": {...}}]; decode prints one
JSON line {stream path: "ok" | error} for the streams under the DIRs.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ENVIRONMENTS = {
    "avx512": {"ATEN_CPU_CAPABILITY": "avx512"},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "default": {"ATEN_CPU_CAPABILITY": "default"},
    "dnnl-avx2": {"DNNL_MAX_CPU_ISA": "AVX2"},
    "mkldnn-off": {"DDPM_CODEC_MKLDNN": "0"},
    "threads-1": {"OMP_NUM_THREADS": "1"},
    "threads-3": {"OMP_NUM_THREADS": "3"},
}
_CLEAR = ("ATEN_CPU_CAPABILITY", "DNNL_MAX_CPU_ISA", "DDPM_CODEC_MKLDNN", "OMP_NUM_THREADS")


def _setup():
    import torch
    if os.environ.get("DDPM_CODEC_MKLDNN") == "0":
        torch.backends.mkldnn.enabled = False
    if "OMP_NUM_THREADS" in os.environ:
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    else:
        torch.set_num_threads(2)


def _images(case):
    from ddpm_codec.io.images import read_image
    return [read_image(p) for p in case["images"]]


def _encode(spec, out: Path):
    from ddpm_codec.api import Codec
    out.mkdir(parents=True, exist_ok=True)
    for case in spec:
        codec = Codec(case["model"])
        data, _ = codec.compress([im.pixels for im in _images(case)], **case.get("kw", {}))
        (out / f"{case['name']}.ddpmc").write_bytes(data)


def _decode(spec, dirs):
    import numpy as np

    from ddpm_codec.api import Codec
    result = {}
    for case in spec:
        codec = Codec(case["model"])
        want = [im.pixels for im in _images(case)]
        for d in dirs:
            path = Path(d) / f"{case['name']}.ddpmc"
            try:
                got = codec.decompress(path.read_bytes())
                same = len(got) == len(want) and all(np.array_equal(g.pixels, w if w.ndim == 3 else w[:, :, None])
                                                      for g, w in zip(got, want))
                result[str(path)] = "ok" if same else "different pixels"
            except Exception as e:      # a failure is the finding, reported per stream
                result[str(path)] = f"{type(e).__name__}: {e}"
    print(json.dumps(result))


def _env(name):
    env = {k: v for k, v in os.environ.items() if k not in _CLEAR}
    env.update(ENVIRONMENTS[name])
    return env


def standard_spec(root) -> list:
    """The stream kinds the portability checks use, from the repository at ``root``:
    a tiny VDM's two-image and tiled streams (tests/golden), and the default model's
    two Fashion-MNIST examples and one alone by pixel groups (6 steps, to be quick)."""
    root = Path(root)
    golden, examples = root / "tests" / "golden", [str(root / "examples" / f"fashion_test_{k}.png") for k in range(2)]
    two = [str(golden / "in_grey.png"), str(golden / "in_rgb.png")]
    tiny = str(golden / "tiny_vdm")
    return [
        {"name": "lossless", "model": tiny, "images": two, "kw": {"steps": 3, "classical": "never"}},
        {"name": "tiled", "model": tiny, "images": [str(golden / "in_big.png")],
         "kw": {"steps": 2, "tiles": "always", "classical": "never"}},
        {"name": "default_two", "model": "default", "images": examples, "kw": {"steps": 6, "classical": "never"}},
        {"name": "pixel_groups", "model": "default", "images": examples[:1], "kw": {"steps": 6}},
    ]


def run_matrix(spec: list, workdir: Path, envs=tuple(ENVIRONMENTS), timeout=1800) -> dict:
    """{(encode env, decode env, case name): "ok" | what went wrong} for every pair."""
    workdir = Path(workdir)
    spec_path = workdir / "spec.json"
    spec_path.write_text(json.dumps(spec))
    cmd = [sys.executable, "-m", "ddpm_codec.testing.portability"]
    for e in envs:
        subprocess.run(cmd + ["encode", str(spec_path), str(workdir / e)], env=_env(e), check=True,
                       timeout=timeout, capture_output=True)
    out = {}
    for d in envs:
        r = subprocess.run(cmd + ["decode", str(spec_path), *[str(workdir / e) for e in envs]], env=_env(d),
                           check=True, timeout=timeout, capture_output=True, text=True)
        res = json.loads(r.stdout.strip().splitlines()[-1])
        for e in envs:
            for case in spec:
                out[(e, d, case["name"])] = res[str(workdir / e / f"{case['name']}.ddpmc")]
    return out


if __name__ == "__main__":
    _setup()
    what, spec_file, *rest = sys.argv[1:]
    spec = json.loads(Path(spec_file).read_text())
    if what == "encode":
        _encode(spec, Path(rest[0]))
    else:
        _decode(spec, rest)
