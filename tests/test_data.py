"""Dataset loaders on small files written here, plus real Fashion-MNIST if installed."""
import gzip
import os
import pickle
import struct

import numpy as np
import pytest
from PIL import Image as PILImage

from ddpm_codec.data import datasets as data
from ddpm_codec.data.datasets import (
    DataFormatError,
    DataMissingError,
    iterate_batches,
    load_dataset,
    shard,
    shard_bounds,
)


def _idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    return bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + \
        arr.astype(np.uint8).tobytes()


def _images(n, c, h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, c, h, w), dtype=np.uint8)


# ---------------------------------------------------------------- IDX

@pytest.fixture
def fmnist_dir(tmp_path):
    train, test = _images(7, 1, 28, 28, 1)[:, 0], _images(3, 1, 28, 28, 2)[:, 0]
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(train)))
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(_idx_bytes(test))  # plain, not gzip
    return tmp_path, train, test


def test_fashion_mnist_from_idx_files(fmnist_dir, monkeypatch):
    root, train, test = fmnist_dir
    got = load_dataset("fashion_mnist", "train", root=root)
    assert got.shape == (7, 1, 28, 28) and got.dtype == np.uint8
    np.testing.assert_array_equal(got[:, 0], train)
    np.testing.assert_array_equal(load_dataset("fashion_mnist", "test", root=root)[:, 0], test)
    np.testing.assert_array_equal(load_dataset("fashion_mnist", "train", n=2, offset=4,
                                               root=root)[:, 0], train[4:6])
    assert got.flags.writeable  # callers may augment in place
    monkeypatch.setenv("DDPM_CODEC_FASHION_MNIST", str(root))
    assert load_dataset("fashion-mnist", "test").shape == (3, 1, 28, 28)
    np.testing.assert_array_equal(load_dataset(str(root), "train")[:, 0], train)  # detected
    single = root / "t10k-images-idx3-ubyte"
    np.testing.assert_array_equal(load_dataset(str(single), "ignored")[:, 0], test)


def test_fashion_mnist_missing_says_how_to_get_it(tmp_path):
    with pytest.raises(DataMissingError) as info:
        load_dataset("fashion_mnist", "test", root=tmp_path / "none")
    msg = str(info.value)
    assert "Fashion-MNIST not found at" in msg and "apt-get install dataset-fashion-mnist" in msg
    assert "--data PATH" in msg and "\n" not in msg


@pytest.mark.parametrize("payload, match", [
    (b"\x01\x00\x08\x03" + b"\0" * 12, "bad magic"),
    (_idx_bytes(np.zeros((2, 3, 3)), code=0x0D), "element type"),
    (_idx_bytes(np.zeros((2, 3, 3)))[:-1], "promises 18 bytes"),
    (_idx_bytes(np.zeros((2, 3, 3))) + b"\0", "file holds more"),
    (b"\0\0\x08\x03\0\0", "header truncated"),
    (b"\0\0\x08\x03" + b"\xff" * 12 + b"\0" * 9, "promises"),  # absurd dims, no huge read
    (_idx_bytes(np.zeros((5,))), "3 dimensions"),
    (gzip.compress(_idx_bytes(np.zeros((2, 3, 3))))[:-9], "cannot read"),
])
def test_corrupt_idx_is_a_format_error(tmp_path, payload, match):
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(payload)
    with pytest.raises(DataFormatError, match=match):
        load_dataset("fashion_mnist", "test", root=tmp_path)


def test_out_of_range_window(fmnist_dir):
    root, _, _ = fmnist_dir
    with pytest.raises(ValueError, match="has 3 images"):
        load_dataset("fashion_mnist", "test", n=2, offset=2, root=root)
    assert load_dataset("fashion_mnist", "test", n=0, offset=3, root=root).shape[0] == 0


# ---------------------------------------------------------------- CIFAR-10

def _cifar_dir(path, protocol=2, str_keys=False, sizes=(2, 3, 1, 2, 2, 3), numpy1=False):
    path.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    arrays = []
    for i, (name, n) in enumerate(zip(names, sizes)):
        imgs = _images(n, 3, 32, 32, seed=10 + i)
        arrays.append(imgs)
        key = "data" if str_keys else b"data"
        batch = {key: imgs.reshape(n, 3072), b"labels": list(range(n)),
                 b"batch_label": b"batch", b"filenames": [b"f.png"] * n}
        blob = pickle.dumps(batch, protocol=protocol)
        if numpy1:  # what the published batches name: numpy 1.x module paths
            assert protocol == 2 and b"numpy._core." in blob
            blob = blob.replace(b"numpy._core.", b"numpy.core.")
        (path / name).write_bytes(blob)
    return np.concatenate(arrays[:5]), arrays[5]


@pytest.mark.parametrize("protocol, str_keys, numpy1",
                         [(2, False, True), (2, False, False), (4, True, False), (5, False, False)])
def test_cifar10_batches(tmp_path, protocol, str_keys, numpy1, monkeypatch):
    train, test = _cifar_dir(tmp_path / "cifar-10-batches-py", protocol, str_keys,
                             numpy1=numpy1)
    got = load_dataset("cifar10", "train", root=tmp_path)  # parent of the batch dir works
    assert got.shape == (10, 3, 32, 32)
    np.testing.assert_array_equal(got, train)
    monkeypatch.setenv("DDPM_CODEC_CIFAR10", str(tmp_path / "cifar-10-batches-py"))
    np.testing.assert_array_equal(load_dataset("cifar10", "test", n=2, offset=1), test[1:3])
    np.testing.assert_array_equal(load_dataset(str(tmp_path), "test"), test)


def test_cifar10_rows_are_channel_planes(tmp_path):
    _cifar_dir(tmp_path, sizes=(1,) * 6)
    row = pickle.loads((tmp_path / "test_batch").read_bytes())[b"data"][0]
    img = load_dataset("cifar10", "test", root=tmp_path)[0]
    np.testing.assert_array_equal(img[0].ravel(), row[:1024])  # red plane first
    np.testing.assert_array_equal(img[2, 31], row[-32:])


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_cifar10_pickle_cannot_run_code(tmp_path):
    target = str(tmp_path / "pwned")
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": _Evil(target)}))
    with pytest.raises(DataFormatError, match="posix.mkdir is not allowed"):
        load_dataset(str(tmp_path / "test_batch"), "test")
    assert not os.path.exists(target)


def test_cifar10_bad_and_missing_batches(tmp_path):
    _cifar_dir(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(DataMissingError, match="missing data_batch_3"):
        load_dataset("cifar10", "train", root=tmp_path)
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8)}))
    with pytest.raises(DataFormatError, match=r"uint8 \(N, 3072\)"):
        load_dataset("cifar10", "test", root=tmp_path)
    (tmp_path / "test_batch").write_bytes(b"\x80\x04garbage")
    with pytest.raises(DataFormatError, match="not a CIFAR-10 python batch"):
        load_dataset("cifar10", "test", root=tmp_path)


def test_cifar10_without_location(monkeypatch):
    monkeypatch.delenv("DDPM_CODEC_CIFAR10", raising=False)
    with pytest.raises(DataMissingError, match="DDPM_CODEC_CIFAR10"):
        load_dataset("cifar10", "train")


# ---------------------------------------------------------------- ImageNet npz

def _imagenet_dir(path, side, sizes=(3, 2, 4), val=5):
    path.mkdir(parents=True, exist_ok=True)
    parts = []
    for i, n in zip((1, 2, 10), sizes):  # batch 10 must sort after batch 2
        imgs = _images(n, 3, side, side, seed=i)
        parts.append(imgs)
        np.savez(path / f"train_data_batch_{i}.npz", data=imgs.reshape(n, -1),
                 labels=np.arange(n))
    val_imgs = _images(val, 3, side, side, seed=99)
    np.savez_compressed(path / "val_data.npz", data=val_imgs.reshape(val, -1))
    return np.concatenate(parts), val_imgs


@pytest.mark.parametrize("side", [32, 64])
def test_imagenet_npz(tmp_path, side, monkeypatch):
    train, val = _imagenet_dir(tmp_path, side)
    got = load_dataset(f"imagenet{side}", "train", root=tmp_path)
    assert got.shape == (9, 3, side, side)
    np.testing.assert_array_equal(got, train)
    np.testing.assert_array_equal(  # a window across file boundaries
        load_dataset(f"imagenet{side}", "train", n=5, offset=2, root=tmp_path), train[2:7])
    monkeypatch.setenv(f"DDPM_CODEC_IMAGENET{side}", str(tmp_path))
    np.testing.assert_array_equal(load_dataset(f"imagenet{side}", "val"), val)
    np.testing.assert_array_equal(load_dataset(f"imagenet{side}", "test"), val)
    np.testing.assert_array_equal(load_dataset(str(tmp_path), "test", n=2), val[:2])
    np.testing.assert_array_equal(load_dataset(str(tmp_path / "val_data.npz"), "x"), val)


def test_imagenet_bad_files(tmp_path):
    np.savez(tmp_path / "val_data.npz", data=np.array([{"a": 1}], dtype=object))
    with pytest.raises(DataFormatError):  # object arrays would need pickle: refused
        load_dataset("imagenet32", "val", root=tmp_path)
    np.savez(tmp_path / "val_data.npz", data=np.zeros((2, 3 * 32 * 32), np.uint8))
    with pytest.raises(DataFormatError, match="3\\*64\\*64"):
        load_dataset("imagenet64", "val", root=tmp_path)
    np.savez(tmp_path / "val_data.npz", other=np.zeros(3))
    with pytest.raises(DataFormatError, match="no 'data'"):
        load_dataset("imagenet32", "val", root=tmp_path)
    (tmp_path / "val_data.npz").write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(DataFormatError, match="not a readable npz"):
        load_dataset("imagenet32", "val", root=tmp_path)
    with pytest.raises(DataMissingError, match="ImageNet32 not found"):
        load_dataset("imagenet32", "train", root=tmp_path)


# ---------------------------------------------------------------- PNG folders

def _png_folder(folder, images, names=None):
    folder.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(images):
        name = names[i] if names else f"{i:03d}.png"
        arr = im[0] if im.shape[0] == 1 else im.transpose(1, 2, 0)
        PILImage.fromarray(arr).save(folder / name)


def test_png_folder_sorted_by_name(tmp_path):
    imgs = _images(3, 3, 5, 7)
    _png_folder(tmp_path, imgs, names=["b.png", "c.PNG", "a.png"])
    (tmp_path / "notes.txt").write_text("ignored")
    got = load_dataset(str(tmp_path), "train")
    assert got.shape == (3, 3, 5, 7)
    np.testing.assert_array_equal(got, imgs[[2, 0, 1]])  # a, b, c
    np.testing.assert_array_equal(load_dataset(str(tmp_path), "test", n=1, offset=2), imgs[[1]])


def test_png_folder_with_splits(tmp_path):
    train, test = _images(4, 1, 6, 6, 1), _images(2, 1, 6, 6, 2)
    _png_folder(tmp_path / "train", train)
    _png_folder(tmp_path / "test", test)
    np.testing.assert_array_equal(load_dataset(str(tmp_path), "train"), train)
    np.testing.assert_array_equal(load_dataset(str(tmp_path), "test"), test)
    assert load_dataset(str(tmp_path), "test", n=0).shape == (0, 1, 6, 6)


def test_png_folder_errors(tmp_path):
    _png_folder(tmp_path / "size", [_images(1, 1, 4, 4)[0], _images(1, 1, 4, 5)[0]])
    with pytest.raises(DataFormatError, match="share size and mode"):
        load_dataset(str(tmp_path / "size"), "train")
    _png_folder(tmp_path / "mode", [_images(1, 1, 4, 4)[0], _images(1, 3, 4, 4)[0]])
    with pytest.raises(DataFormatError, match="share size and mode"):
        load_dataset(str(tmp_path / "mode"), "train")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"not a png")
    with pytest.raises(DataFormatError, match="x.png"):
        load_dataset(str(tmp_path / "bad"), "train")


def test_unknown_and_missing_paths(tmp_path):
    (tmp_path / "stuff.txt").write_text("hello")
    with pytest.raises(DataFormatError, match="cannot tell"):
        load_dataset(str(tmp_path), "train")
    with pytest.raises(DataFormatError, match="not an IDX, npz or CIFAR-10"):
        load_dataset(str(tmp_path / "stuff.txt"), "train")
    with pytest.raises(DataMissingError, match="does not exist"):
        load_dataset(str(tmp_path / "nowhere"), "train")
    assert issubclass(DataMissingError, Exception) and issubclass(DataFormatError, Exception)


# ---------------------------------------------------------------- batching, sharding

def test_iterate_batches_is_a_seeded_permutation():
    arr = np.arange(10)
    batches = list(iterate_batches(arr, 3, shuffle=True, seed=5))
    assert [len(b) for b in batches] == [3, 3, 3, 1]
    assert sorted(np.concatenate(batches)) == list(range(10))
    again = np.concatenate(list(iterate_batches(arr, 3, shuffle=True, seed=5)))
    other = np.concatenate(list(iterate_batches(arr, 3, shuffle=True, seed=6)))
    np.testing.assert_array_equal(np.concatenate(batches), again)
    assert not np.array_equal(again, other)
    assert [len(b) for b in iterate_batches(arr, 3, shuffle=True, seed=5, drop_last=True)] \
        == [3, 3, 3]
    np.testing.assert_array_equal(np.concatenate(list(iterate_batches(arr, 4, shuffle=False))),
                                  arr)
    with pytest.raises(ValueError):
        next(iterate_batches(arr, 0))


@pytest.mark.parametrize("total, count", [(10, 3), (3, 5), (10000, 7), (0, 2)])
def test_shards_are_contiguous_and_cover_everything(total, count):
    arr = np.arange(total)
    parts = [shard(arr, i, count) for i in range(count)]
    np.testing.assert_array_equal(np.concatenate(parts), arr)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    assert shard_bounds(total, 0, count)[0] == 0
    with pytest.raises(ValueError):
        shard(arr, count, count)


# ---------------------------------------------------------------- the real thing

@pytest.mark.skipif(not os.path.isfile(os.path.join(data.FASHION_MNIST_ROOT,
                                                    "t10k-images-idx3-ubyte.gz")),
                    reason="dataset-fashion-mnist is not installed")
def test_real_fashion_mnist(monkeypatch):
    monkeypatch.delenv("DDPM_CODEC_FASHION_MNIST", raising=False)
    test = load_dataset("fashion_mnist", "test")
    assert test.shape == (10000, 1, 28, 28) and test.dtype == np.uint8
    assert test.min() == 0 and test.max() == 255
    assert 60 < test.mean() < 90  # about 73: mostly dark background
    train = load_dataset("fashion_mnist", "train", n=10, offset=59990)
    assert train.shape == (10, 1, 28, 28)
