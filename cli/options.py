"""Options several commands share, spelled once: what --model accepts, the splits,
and the chain length a model recommends."""
from __future__ import annotations

import click

MODEL_HELP = "model: 'default' (the shipped one) or PATH of PATH.safetensors + PATH.json"

# every data loader (ddpm_codec.data.datasets.load_dataset) knows these two
SPLITS = ("train", "test")

RECOMMENDED = "default: the model's recommended chain, recommended_steps in its JSON; 100 for the shipped one"


def model_option(f):
    """--model, as every command that reads a model takes it."""
    return click.option("--model", "model_path", default="default", show_default=True, metavar="MODEL",
                        help=MODEL_HELP)(f)


def split_option(f):
    """--split, one of SPLITS (test by default)."""
    return click.option("--split", type=click.Choice(SPLITS), default="test", show_default=True,
                        help="dataset split")(f)


def recommended_steps(meta: dict, model_path) -> int:
    """The chain a model recommends: its JSON's recommended_steps, as the codec
    (ddpm_codec.api.Codec.default_steps) reads it."""
    from ddpm_codec.api import DEFAULT_STEPS
    from ddpm_codec.io.checkpoint import CheckpointError
    rs = meta.get("recommended_steps", DEFAULT_STEPS)
    if not isinstance(rs, int) or isinstance(rs, bool) or rs < 1:
        raise CheckpointError(f"model {model_path}: recommended_steps {rs!r} in its config is not a positive integer")
    return rs
