"""Shared fixtures: a few real Fashion-MNIST images (skipped where the dataset is absent)."""
import gzip
import os
import struct

import numpy as np
import pytest

FMNIST_ROOT = "/usr/share/datasets/fashion-mnist"


@pytest.fixture(scope="session")
def fmnist_images():
    """The first 64 Fashion-MNIST test images, uint8 (64, 1, 28, 28)."""
    if not os.path.isfile(os.path.join(FMNIST_ROOT, "t10k-images-idx3-ubyte.gz")):
        pytest.skip(f"Fashion-MNIST not installed at {FMNIST_ROOT} (package dataset-fashion-mnist)")
    from ddpm_codec.data.datasets import load_fashion_mnist
    return np.ascontiguousarray(load_fashion_mnist("test", FMNIST_ROOT)[:64])


@pytest.fixture(scope="session")
def fmnist_idx(fmnist_images, tmp_path_factory):
    """Those 64 images as one gzipped IDX file (a `--data PATH` for CLI tests)."""
    path = tmp_path_factory.mktemp("fmnist") / "images-idx3-ubyte.gz"
    arr = fmnist_images[:, 0]
    path.write_bytes(gzip.compress(bytes([0, 0, 0x08, 3]) + struct.pack(">3I", *arr.shape) + arr.tobytes()))
    return path


@pytest.fixture(scope="session")
def tiny_path(tmp_path_factory):
    """A 'tiny' model with small random weights (seed 0), saved as PATH.{safetensors,json}."""
    from helpers import random_model

    from ddpm_codec.io.checkpoint import save_model
    m = random_model("tiny", 0, scale=0.02)
    path = tmp_path_factory.mktemp("model") / "tiny"
    save_model(m, path, {"ema": True})
    return path
