"""Regenerate the golden streams: run only for a deliberate format change.

    python tests/golden/regenerate.py

Golden streams pin the stream format byte for byte (tests/test_golden.py):
once committed, any change that alters an encoded byte is a format change,
so bump the format version, run this script, and say so in the commit.

Cases:
- the README quick-start stream (the four examples, shipped default model);
- one example alone (the default model's pixel-group companion);
- a tiny fixed-weight model (committed here, so no torch RNG is involved):
  two images of two modes, an unencrypted stream, a tiled image, and a
  progressive lossy stream with its full and prefix decodes (float streams:
  its discrete schedule has no exact evaluation);
- a tiny fixed-weight VDM (linear gamma, Fourier features, attention) and its
  pixel-group companion: portable streams (format version 5) of two images and
  a tiled image, which must decode on any machine (the portable pixel-group
  stream is the default model's one example alone);
- the quick-start stream once more as a float stream (``portable=False``).
"""
from __future__ import annotations

import hashlib
import json
import platform
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
MANIFEST = HERE / "manifest.json"
TINY = HERE / "tiny"
TINY_VDM = HERE / "tiny_vdm"
GOLDEN_THREADS = 2


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def cases() -> list[dict]:
    """What each golden is: model, inputs, call and its arguments."""
    ex = [f"examples/fashion_test_{k}.png" for k in range(4)]
    return [
        {"name": "examples", "model": "default", "call": "compress", "inputs": ex, "kw": {}},
        {"name": "one_image_pixel_groups", "model": "default", "call": "compress", "inputs": ex[:1], "kw": {}},
        {"name": "tiny_grey_rgb", "model": "tiny", "call": "compress",
         "inputs": ["tests/golden/in_grey.png", "tests/golden/in_rgb.png"], "kw": {"steps": 3, "classical": "never"}},
        {"name": "tiny_plain", "model": "tiny", "call": "compress",
         "inputs": ["tests/golden/in_grey.png"], "kw": {"steps": 2, "encrypt": False}},
        {"name": "tiny_tiled", "model": "tiny", "call": "compress",
         "inputs": ["tests/golden/in_big.png"], "kw": {"steps": 2, "tiles": "always", "classical": "never"}},
        {"name": "tiny_lossy", "model": "tiny", "call": "compress_lossy",
         "inputs": ["tests/golden/in_grey.png"], "kw": {"steps": 3}, "prefix": "half"},
        {"name": "examples_float", "model": "default", "call": "compress", "inputs": ex, "kw": {"portable": False}},
        {"name": "vdm_grey_rgb", "model": "tiny_vdm", "call": "compress",
         "inputs": ["tests/golden/in_grey.png", "tests/golden/in_rgb.png"], "kw": {"steps": 3, "classical": "never"}},
        {"name": "vdm_tiled", "model": "tiny_vdm", "call": "compress",
         "inputs": ["tests/golden/in_big.png"], "kw": {"steps": 2, "tiles": "always", "classical": "never"}},
    ]


PORTABLE_CASES = ("examples", "one_image_pixel_groups", "vdm_grey_rgb", "vdm_tiled")


def environment() -> dict:
    import torch
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "machine": platform.machine()}


def model_path(name: str) -> str:
    return "default" if name == "default" else str(HERE / name)


def _make_inputs():
    from ddpm_codec.io.images import write_png
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, (6, 5, 1), dtype=np.uint8)
    rgb = rng.integers(0, 256, (4, 7, 3), dtype=np.uint8)
    big = rng.integers(0, 256, (33, 30, 1), dtype=np.uint8)      # 2 x 2 tiles of the tiny model's 28
    for name, px, mode in [("in_grey", grey, "L"), ("in_rgb", rgb, "RGB"), ("in_big", big, "L")]:
        write_png(HERE / f"{name}.png", px, mode, force=True)


def _make_tiny():
    import torch

    from ddpm_codec.diffusion.configs import get_config
    from ddpm_codec.diffusion.model import DiffusionModel
    from ddpm_codec.io.checkpoint import save_model
    from ddpm_codec.training.groups import conditional_from

    def randomized(cfg, seed):
        torch.manual_seed(seed)
        model = DiffusionModel.from_config(cfg)
        with torch.no_grad():                     # a non-trivial eps network (conv_out starts at zero)
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.02)
        return model

    base = randomized(get_config("tiny"), 0)
    fp = save_model(base, TINY)
    save_model(conditional_from(base), TINY.with_name("tiny_groups"), {"base_fingerprint": fp})
    cfg = get_config("tiny")
    cfg["schedule"] = {"type": "linear_gamma", "gamma_min": -13.3, "gamma_max": 5.0, "learned": False}
    cfg["unet"] = {**cfg["unet"], "attn_resolutions": [14], "fourier_n": [7, 8]}
    vdm = randomized(cfg, 1)
    fp = save_model(vdm, TINY_VDM)
    groups = conditional_from(vdm)
    with torch.no_grad():                         # its conditioning conv starts at zero
        groups.unet.cond_in.weight.add_(torch.randn_like(groups.unet.cond_in.weight) * 0.02)
    save_model(groups, TINY_VDM.with_name("tiny_vdm_groups"), {"base_fingerprint": fp})


def run_case(case: dict, codecs: dict):
    """(stream bytes, decoded images, {prefix: decoded images}) for one case."""
    from ddpm_codec.api import Codec
    from ddpm_codec.io.images import read_image
    codec = codecs.setdefault(case["model"], None) or Codec(model_path(case["model"]))
    codecs[case["model"]] = codec
    images = [read_image(ROOT / p) for p in case["inputs"]]
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(GOLDEN_THREADS)     # the lossless header records the encoder's thread count
    try:
        return _run(codec, case, images)
    finally:
        torch.set_num_threads(before)


def _run(codec, case, images):
    if case["call"] == "compress":
        data, _ = codec.compress(images, **case["kw"])
        return data, codec.decompress(data), {}
    data, _ = codec.compress_lossy(images, **case["kw"])
    prefixes = {n: codec.decompress_lossy(data, max_bytes=n) for n in case.get("prefix_bytes", [])}
    if case.get("prefix") == "half":           # regenerate: a prefix halfway into the payload
        from ddpm_codec.format.container import header_end
        n = header_end(data) + (len(data) - header_end(data)) // 2
        case["prefix_bytes"] = [n]
        prefixes = {n: codec.decompress_lossy(data, max_bytes=n)}
    return data, codec.decompress_lossy(data), prefixes


def main():
    sys.path.insert(0, str(ROOT))
    from ddpm_codec.io.images import write_png
    if "--keep-model" not in sys.argv:
        _make_inputs()
        _make_tiny()
    codecs, entries = {}, []
    for case in cases():
        data, decoded, prefixes = run_case(case, codecs)
        (HERE / f"{case['name']}.ddpmc").write_bytes(data)
        entry = dict(case, stream=f"{case['name']}.ddpmc", bytes=len(data), sha256=_sha(data))
        if case["call"] == "compress_lossy":            # lossy: pin the decoded pixels too
            outs = {"full": decoded, **{str(n): v for n, v in prefixes.items()}}
            entry["decoded"] = {}
            for tag, recs in outs.items():
                for k, r in enumerate(recs):
                    f = f"{case['name']}.{tag}.{k}.png"
                    write_png(HERE / f, r.pixels, r.mode, force=True)
                    entry["decoded"].setdefault(tag, []).append(f)
        entries.append(entry)
        print(f"{case['name']}: {len(data)} bytes")
    MANIFEST.write_text(json.dumps({"made_on": environment(), "cases": entries}, indent=1) + "\n")


if __name__ == "__main__":
    main()
