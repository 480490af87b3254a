"""Datasets as uint8 arrays of shape (N, C, H, W).

Every loader returns the raw pixels (0..255) in a fixed order, so that
training, evaluation and benchmarks see the same images; scaling to the
model's [-1, 1] happens elsewhere. Nothing is downloaded: a missing dataset
ends in `DataMissingError` saying how to get it, a damaged file in
`DataFormatError`.

Sources:

- 'fashion_mnist': IDX files (gzip or plain) under
  $DDPM_CODEC_FASHION_MNIST or /usr/share/datasets/fashion-mnist
  (Debian package dataset-fashion-mnist); splits 'train' (60k), 'test' (10k).
- 'cifar10': the python batches (data_batch_1..5, test_batch) under
  $DDPM_CODEC_CIFAR10. They are pickles, so they are read with an unpickler
  that can build only dicts, lists, strings, numbers and numpy arrays.
- 'imagenet32' / 'imagenet64': Downsampled ImageNet npz files
  (train_data_batch_*.npz, val_data.npz; key 'data', rows in CHW order)
  under $DDPM_CODEC_IMAGENET32 / $DDPM_CODEC_IMAGENET64, read without pickle.
  Split 'test' is an alias of 'val'.
- a path: a directory of any of the above or of PNG files (auto-detected),
  or a single IDX, npz or CIFAR batch file (then `split` is ignored).
"""
from __future__ import annotations

import glob
import os
import re

import numpy as np

from ddpm_codec.data.files import (
    DataError,
    DataFormatError,
    DataMissingError,
    DataRequestError,
    _cifar_batch,
    _idx_images,
    _npz_data_shape,
    _npz_images,
    _png_files,
    read_idx,
)

__all__ = ["DataError", "DataFormatError", "DataMissingError", "DataRequestError", "read_idx",
           "load_dataset", "load_fashion_mnist", "load_cifar10", "load_imagenet", "load_png_folder",
           "iterate_batches", "shard_bounds", "shard", "ENV_VARS", "FASHION_MNIST_ROOT"]

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
ENV_VARS = {
    "fashion_mnist": "DDPM_CODEC_FASHION_MNIST",
    "cifar10": "DDPM_CODEC_CIFAR10",
    "imagenet32": "DDPM_CODEC_IMAGENET32",
    "imagenet64": "DDPM_CODEC_IMAGENET64",
}
_HOW_TO_GET = {
    "fashion_mnist": "install it with `apt-get install dataset-fashion-mnist`",
    "cifar10": "extract cifar-10-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html)",
    "imagenet32": "get Imagenet32_train_npz/Imagenet32_val_npz from https://image-net.org",
    "imagenet64": "get Imagenet64_train_npz/Imagenet64_val_npz from https://image-net.org",
}


def _missing(name: str, where: str) -> DataMissingError:
    return DataMissingError(f"{_pretty(name)} not found at {where}: {_HOW_TO_GET[name]}, "
                            f"set {ENV_VARS[name]} or pass --data PATH")


def _pretty(name: str) -> str:
    return {"fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10",
            "imagenet32": "ImageNet32", "imagenet64": "ImageNet64"}[name]


def _root(name: str, root) -> str:
    if root is not None:
        return os.fspath(root)
    env = os.environ.get(ENV_VARS[name])
    if env:
        return env
    if name == "fashion_mnist":
        return FASHION_MNIST_ROOT
    raise DataMissingError(f"{_pretty(name)}: no location given: {_HOW_TO_GET[name]}, "
                           f"then set {ENV_VARS[name]} or pass --data PATH")


def _window(total: int, n: int | None, offset: int, what: str) -> tuple[int, int]:
    """[start, stop) of the n items at `offset` among `total`, checked."""
    if offset < 0 or (n is not None and n < 0):
        raise DataRequestError(f"n and offset must be non-negative (n={n}, offset={offset})")
    stop = total if n is None else offset + n
    if stop > total or offset > total:
        raise DataRequestError(f"{what} has {total} images; n={n} at offset={offset} is out of range")
    return offset, stop


_FMNIST_FILES = {"train": "train-images-idx3-ubyte", "test": "t10k-images-idx3-ubyte"}


def load_fashion_mnist(split: str = "train", root=None) -> np.ndarray:
    """Fashion-MNIST images (N, 1, 28, 28); split 'train' or 'test'."""
    split = {"t10k": "test"}.get(split, split)
    if split not in _FMNIST_FILES:
        raise DataRequestError(f"Fashion-MNIST split must be 'train' or 'test', got {split!r}")
    where = _root("fashion_mnist", root)
    stem = os.path.join(where, _FMNIST_FILES[split])
    for path in (stem + ".gz", stem):
        if os.path.isfile(path):
            return _idx_images(path)
    raise _missing("fashion_mnist", where)


_CIFAR_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


def load_cifar10(split: str = "train", root=None) -> np.ndarray:
    """CIFAR-10 images (N, 3, 32, 32) from the python batches; 'train' or 'test'."""
    if split not in _CIFAR_FILES:
        raise DataRequestError(f"CIFAR-10 split must be 'train' or 'test', got {split!r}")
    where = _root("cifar10", root)
    if os.path.isdir(os.path.join(where, "cifar-10-batches-py")):
        where = os.path.join(where, "cifar-10-batches-py")
    paths = [os.path.join(where, f) for f in _CIFAR_FILES[split]]
    absent = [os.path.basename(p) for p in paths if not os.path.isfile(p)]
    if absent:
        raise _missing("cifar10", f"{where} (missing {', '.join(absent)})")
    return np.concatenate([_cifar_batch(p) for p in paths])


def _batch_number(path: str) -> int:
    m = re.search(r"(\d+)\.npz$", path)
    return int(m.group(1)) if m else 0


def _imagenet_files(where: str, split: str) -> list[str]:
    if split == "train":
        return sorted(glob.glob(os.path.join(where, "train_data_batch_*.npz")),
                      key=_batch_number)
    if split in ("val", "test"):
        p = os.path.join(where, "val_data.npz")
        return [p] if os.path.isfile(p) else []
    raise ValueError(f"ImageNet split must be 'train' or 'val' ('test'), got {split!r}")


def _load_npz_split(files: list[str], side, n, offset, what) -> np.ndarray:
    """Concatenate the [offset, offset+n) window of several npz files, loading only those needed."""
    counts = [_npz_data_shape(p)[0] for p in files]
    start, stop = _window(sum(counts), n, offset, what)
    parts, base = [], 0
    for p, c in zip(files, counts):
        lo, hi = max(start - base, 0), min(stop - base, c)
        if lo < hi:
            parts.append(_npz_images(p, side)[lo:hi])
        base += c
    if not parts:
        return _npz_images(files[0], side)[:0]
    return np.concatenate(parts)


def load_imagenet(side: int, split: str = "train", root=None, n=None, offset=0) -> np.ndarray:
    """Downsampled ImageNet (N, 3, side, side), side 32 or 64; 'train' or 'val'."""
    name = f"imagenet{side}"
    if name not in ENV_VARS:
        raise ValueError(f"ImageNet side must be 32 or 64, got {side}")
    where = _root(name, root)
    files = _imagenet_files(where, split)
    if not files:
        raise _missing(name, f"{where} (no {split} npz files)")
    return _load_npz_split(files, side, n, offset, f"{_pretty(name)} {split}")


# ---------------------------------------------------------------- PNG folders

def load_png_folder(path, split: str = "train", n=None, offset=0) -> np.ndarray:
    """PNGs of one size and mode, sorted by file name, as (N, C, H, W).

    If `path` has subfolders train/ and test/, the split picks one; otherwise
    the folder itself is the data for every split.
    """
    from ddpm_codec.io.images import UnsupportedImageError, read_image

    path = os.fspath(path)
    folder = path
    if os.path.isdir(os.path.join(path, "train")) and os.path.isdir(os.path.join(path, "test")):
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        folder = os.path.join(path, split)
    files = _png_files(folder)
    if not files:
        raise DataMissingError(f"no PNG files found at {folder}")
    start, stop = _window(len(files), n, offset, folder)
    arrays, first = [], None
    for f in files[start:stop] or files[:1]:
        try:
            im = read_image(f)
        except UnsupportedImageError as e:
            raise DataFormatError(str(e)) from None
        if first is None:
            first = im
        elif (im.mode, im.pixels.shape) != (first.mode, first.pixels.shape):
            raise DataFormatError(
                f"{f}: {im.mode} {im.width}x{im.height} differs from {first.name}: "
                f"{first.mode} {first.width}x{first.height}; all PNGs must share size and mode")
        arrays.append(im.pixels.transpose(2, 0, 1))
    return np.stack(arrays)[: stop - start]  # n=0 still reads one file for the shape


# ---------------------------------------------------------------- dispatch

def _detect_dir(path: str) -> str:
    def has(pattern):
        return bool(glob.glob(os.path.join(path, pattern)))
    if has("data_batch_1") or has("test_batch") or has("cifar-10-batches-py"):
        return "cifar10"
    if has("*-idx3-ubyte") or has("*-idx3-ubyte.gz"):
        return "idx"
    if has("train_data_batch_*.npz") or has("val_data.npz"):
        return "npz"
    if _png_files(path) or (os.path.isdir(os.path.join(path, "train"))
                            and os.path.isdir(os.path.join(path, "test"))):
        return "png"
    raise DataFormatError(f"{path}: cannot tell what dataset this is (expected CIFAR-10 "
                          "batches, IDX files, ImageNet npz files or PNGs)")


def _detect_file(path: str) -> str:
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:2] == b"\x1f\x8b" or (head[:2] == b"\0\0" and len(head) == 4):
        return "idx"
    if head[:4] == b"PK\x03\x04":
        return "npz"
    if head[:1] == b"\x80":
        return "pickle"
    raise DataFormatError(f"{path}: not an IDX, npz or CIFAR-10 batch file")


def _load_path(path: str, split: str, n, offset) -> np.ndarray:
    if not os.path.exists(path):
        raise DataMissingError(f"dataset path {path} does not exist")
    if os.path.isfile(path):
        kind = _detect_file(path)
        if kind == "npz":
            return _load_npz_split([path], None, n, offset, path)
        arr = _idx_images(path) if kind == "idx" else _cifar_batch(path)
    else:
        kind = _detect_dir(path)
        if kind == "png":
            return load_png_folder(path, split, n, offset)
        if kind == "npz":
            files = _imagenet_files(path, split)
            if not files:
                raise DataMissingError(f"{path}: no {split} npz files (want "
                                       "train_data_batch_*.npz or val_data.npz)")
            return _load_npz_split(files, None, n, offset, f"{path} {split}")
        arr = (load_cifar10(split, path) if kind == "cifar10"
               else load_fashion_mnist(split, path))
    start, stop = _window(len(arr), n, offset, path)
    return arr[start:stop]


def load_dataset(name_or_path: str, split: str = "train", n: int | None = None,
                 offset: int = 0, root=None) -> np.ndarray:
    """uint8 (N, C, H, W) images `offset .. offset+n` of a dataset split.

    `name_or_path` is 'fashion_mnist', 'cifar10', 'imagenet32', 'imagenet64'
    (located by `root`, else an environment variable, see ENV_VARS) or a path
    whose content decides the format. n=None means to the end.
    """
    name = name_or_path.lower().replace("-", "_") if isinstance(name_or_path, str) else None
    if name in ("imagenet32", "imagenet64"):
        return load_imagenet(int(name[-2:]), split, root, n, offset)
    if name == "fashion_mnist":
        arr = load_fashion_mnist(split, root)
    elif name == "cifar10":
        arr = load_cifar10(split, root)
    else:
        return _load_path(os.fspath(name_or_path), split, n, offset)
    start, stop = _window(len(arr), n, offset, f"{_pretty(name)} {split}")
    return arr[start:stop]


# ---------------------------------------------------------------- batching

def iterate_batches(array: np.ndarray, batch_size: int, shuffle: bool = True,
                    seed: int = 0, drop_last: bool = False):
    """Yield batches (views or copies) of the first axis for one epoch.

    The order comes from numpy's default_rng(seed) only, so a run is
    reproducible; pass a different seed per epoch (e.g. seed + epoch).
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    count = len(array)
    order = np.random.default_rng(seed).permutation(count) if shuffle else None
    end = count - count % batch_size if drop_last else count
    for i in range(0, end, batch_size):
        yield array[order[i:i + batch_size]] if shuffle else array[i:i + batch_size]


def shard_bounds(total: int, index: int, count: int) -> tuple[int, int]:
    """[start, stop) of shard `index` of `count` contiguous shards over `total` items.

    Shard i is [i*total//count, (i+1)*total//count): sizes differ by at most
    one and the shards, in order, cover every item exactly once.
    """
    if count <= 0 or not 0 <= index < count:
        raise ValueError(f"need 0 <= index < count, got index={index}, count={count}")
    return index * total // count, (index + 1) * total // count


def shard(array: np.ndarray, index: int, count: int) -> np.ndarray:
    """Contiguous shard `index` of `count` of the first axis (see shard_bounds)."""
    start, stop = shard_bounds(len(array), index, count)
    return array[start:stop]
