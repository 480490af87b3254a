"""The Python API's argument checks (what the CLI passes through)."""
import numpy as np
import pytest

from ddpm_codec.api import Codec
from ddpm_codec.format.container import CodecError


@pytest.fixture(scope="module")
def codec(tiny_path):
    return Codec(str(tiny_path))


@pytest.mark.parametrize("steps", [0, -3, 1001, 2.5, True])
def test_bad_steps_are_refused_not_replaced_by_the_default(codec, steps):
    img = np.zeros((4, 4), np.uint8)
    with pytest.raises(CodecError, match="--steps must be"):
        codec.compress([img], steps=steps)


def test_steps_none_is_the_models_recommended_chain(tmp_path):
    from helpers import random_model

    from ddpm_codec.format.container import parse
    from ddpm_codec.io.checkpoint import save_model
    save_model(random_model("tiny", 0), tmp_path / "tiny3", {"recommended_steps": 3})
    codec = Codec(str(tmp_path / "tiny3"))
    rng = np.random.default_rng(0)
    imgs = [rng.integers(100, 140, (8, 8), dtype=np.uint8) for _ in range(12)]
    header = parse(codec.compress(imgs, steps=None, classical="never")[0]).header
    assert header.get("groups"), "the chain was not used: the check below would be vacuous"
    assert header["steps"] == 3
