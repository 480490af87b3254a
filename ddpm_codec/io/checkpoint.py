"""Model files: safetensors weights plus a JSON config, and nothing else.

A model is the pair `NAME.safetensors` + `NAME.json` (config, format version,
provenance).  Its fingerprint hashes the config and every tensor (name, dtype,
shape, bytes) in a canonical order, so it names the model whatever the file
layout; compressed streams record it.  Loading validates the config, then
checks every tensor against the model built from it: a wrong or damaged file
ends in `CheckpointError`, never in a half-loaded model.  No pickle anywhere.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ddpm_codec.diffusion.model import DiffusionModel
from ddpm_codec.errors import DdpmCodecError
from ddpm_codec.io.atomic import atomic_write, atomic_write_bytes

FORMAT = "ddpm-codec-model"
FORMAT_VERSION = 1
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "weights" / "default"


class CheckpointError(DdpmCodecError):
    """A model file that is missing, malformed or does not match its config."""


def fingerprint(model: DiffusionModel) -> str:
    """sha256 (hex) of the canonical config and all weights."""
    h = hashlib.sha256()
    h.update(json.dumps(model.config(), sort_keys=True).encode())
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_model(model: DiffusionModel, path, extra: dict | None = None) -> str:
    """Write PATH.safetensors and PATH.json atomically; returns the fingerprint."""
    base = _base(path)
    base.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    fp = fingerprint(model)
    meta = {"format": FORMAT, "version": FORMAT_VERSION, "config": model.config(),
            "fingerprint": fp, **(extra or {})}
    atomic_write(base.with_suffix(".safetensors"), lambda p: save_file(tensors, p), force=True)
    atomic_write_bytes(base.with_suffix(".json"), (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode(),
                       force=True)
    return fp


def _base(path) -> Path:
    p = Path(path)
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    return p


def resolve(path: str | None) -> Path:
    """'default' / None -> the shipped model; a directory -> its model.*; else PATH."""
    if path in (None, "", "default"):
        return DEFAULT_MODEL
    p = Path(path)
    if p.is_dir():
        p = p / "model"
    return _base(p)


def read_meta(path) -> dict:
    base = resolve(str(path)) if not isinstance(path, Path) else _base(path)
    jpath = base.with_suffix(".json")
    if not jpath.exists():
        raise CheckpointError(f"model config not found: {jpath}")
    try:
        meta = json.loads(jpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"model config {jpath} is not valid JSON ({e.msg if hasattr(e, 'msg') else e})")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{jpath} is not a ddpm-codec model config")
    if meta.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{jpath} has model format version {meta.get('version')!r}; "
                              f"this ddpm-codec reads version {FORMAT_VERSION}")
    if not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{jpath} has no model config")
    return meta


def load_model(path: str | None = None, device="cpu") -> tuple[DiffusionModel, dict]:
    """Load and validate a model; returns (model in eval mode, metadata)."""
    base = resolve(path)
    meta = read_meta(base)
    try:
        model = DiffusionModel.from_config(meta["config"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:   # RuntimeError: torch refusing sizes
        raise CheckpointError(f"invalid model config in {base.with_suffix('.json')}: {e}")
    wpath = base.with_suffix(".safetensors")
    if not wpath.exists():
        raise CheckpointError(f"model weights not found: {wpath}")
    try:
        tensors = load_file(str(wpath))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"model weights {wpath} are damaged: {e}")
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"weights {wpath} do not match the config "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    for k, v in expected.items():
        if tensors[k].shape != v.shape or tensors[k].dtype != v.dtype:
            raise CheckpointError(f"weights {wpath}: tensor {k} has shape {tuple(tensors[k].shape)} "
                                  f"{str(tensors[k].dtype).replace('torch.', '')}, config expects "
                                  f"{tuple(v.shape)} {str(v.dtype).replace('torch.', '')}")
    model.load_state_dict(tensors)
    fp = fingerprint(model)
    if meta.get("fingerprint") not in (None, fp):
        raise CheckpointError(f"weights {wpath} do not match the fingerprint in their config (damaged file?)")
    meta["fingerprint"] = fp
    return model.to(device).eval(), meta


def companion_path(path: str | None) -> Path:
    """Where a model's pixel-group conditional net lives: PATH_groups.{json,safetensors}."""
    base = resolve(path)
    return base.with_name(base.name + "_groups")


def load_companion(path: str | None, base_fingerprint: str, device="cpu"):
    """(conditional net, fingerprint) shipped beside the model at `path`, or None.

    Why a companion and not the model itself: the net is fine-tuned from the
    model (`ddpm_codec.training.groups`) for one job, coding one image alone as
    pixel groups, and streams of several images never need it."""
    comp = companion_path(path)
    if not comp.with_suffix(".json").exists():
        return None
    model, meta = load_model(str(comp.with_suffix(".json")), device)
    if meta.get("base_fingerprint") not in (None, base_fingerprint):
        raise CheckpointError(f"{comp.with_suffix('.json')} was fine-tuned from another model than "
                              f"{resolve(path).with_suffix('.json')}")
    return model, meta["fingerprint"]
