"""Tests for landscape.data: bundled digits, synthetic idx (mnist) and pickle (cifar10) files."""

from __future__ import annotations

import gzip
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from landscape import data as data_mod
from landscape.data import DATASETS, DataError, Dataset, batches, load_dataset

MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
CIFAR_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")


def test_digits_shapes_dtypes_range() -> None:
    ds = load_dataset("digits")
    assert ds.name == "digits" and ds.num_classes == 10 and ds.split_seed == 0
    assert ds.x_train.shape == (1347, 1, 8, 8) and ds.x_test.shape == (450, 1, 8, 8)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert ds.y_test.dtype == torch.int64
    for x in (ds.x_train, ds.x_test):
        assert x.min() >= 0 and x.max() <= 1
    assert ds.x_train.max() == 1  # /16 maps the brightest pixel to exactly 1
    assert ds.input_shape == (1, 8, 8)
    desc = ds.describe()
    assert desc == {
        "name": "digits",
        "split_seed": 0,
        "n_train": 1347,
        "n_test": 450,
        "input_shape": [1, 8, 8],
        "num_classes": 10,
    }
    assert json.loads(json.dumps(desc)) == desc


def test_digits_values_are_the_scaled_sklearn_images() -> None:
    ds = load_dataset("digits", seed=3)
    ref = load_digits()
    images = torch.from_numpy(ref.images.reshape(len(ref.images), -1) / 16).float()
    # Every split image is one of the original images, with its own label (independent check).
    both = torch.cat([ds.x_train, ds.x_test]).flatten(1)
    labels = torch.cat([ds.y_train, ds.y_test])
    match = (both[:, None, :] == images[None, :, :]).all(-1)  # (1797, 1797)
    assert match.any(1).all()
    target = torch.from_numpy(ref.target)
    for i in range(0, len(both), 97):
        assert (target[match[i]] == labels[i]).all()
    assert sorted(labels.tolist()) == sorted(ref.target.tolist())


def test_digits_split_is_stratified() -> None:
    ds = load_dataset("digits", seed=1)
    train = torch.bincount(ds.y_train, minlength=10).double() / len(ds.y_train)
    test = torch.bincount(ds.y_test, minlength=10).double() / len(ds.y_test)
    assert (train - test).abs().max() < 0.01


def test_digits_seed_fixes_the_split() -> None:
    a = load_dataset("digits", seed=5)
    data_mod._load_cached.cache_clear()  # a fresh load, not the cached object
    b = load_dataset("digits", seed=5)
    assert a is not b
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    c = load_dataset("digits", seed=6)
    assert c.split_seed == 6
    assert not torch.equal(a.x_train, c.x_train)


def test_digits_is_cached_and_ignores_root(tmp_path: Path) -> None:
    a = load_dataset("digits", seed=2)
    assert load_dataset("digits", seed=2, root=tmp_path) is a


def test_dataset_is_frozen() -> None:
    ds = load_dataset("digits")
    with pytest.raises(AttributeError):
        ds.name = "other"  # type: ignore[misc]


def test_dataset_rejects_bad_layout() -> None:
    x = torch.zeros(3, 1, 2, 2)
    y = torch.zeros(3, dtype=torch.int64)
    with pytest.raises(DataError, match="x_train"):
        Dataset("t", torch.zeros(3, 4), y, x, y, 10, 0)
    with pytest.raises(DataError, match="2 labels"):
        Dataset("t", x, y[:2], x, y, 10, 0)


def test_limit_keeps_the_first_samples() -> None:
    full = load_dataset("digits", seed=4)
    small = load_dataset("digits", seed=4, limit=7)
    assert len(small.x_train) == 7 and len(small.y_test) == 7
    assert torch.equal(small.x_train, full.x_train[:7])
    assert torch.equal(small.y_test, full.y_test[:7])
    assert small.describe()["n_train"] == 7


@pytest.mark.parametrize("limit", [0, -1, 1.5, True])
def test_bad_limit(limit: object) -> None:
    with pytest.raises(DataError, match="limit"):
        load_dataset("digits", limit=limit)  # type: ignore[arg-type]


def test_unknown_name_lists_datasets() -> None:
    with pytest.raises(DataError) as err:
        load_dataset("imagenet")
    for name in DATASETS:
        assert name in str(err.value)


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_folder_datasets_need_a_root(name: str) -> None:
    with pytest.raises(DataError, match="folder is needed"):
        load_dataset(name)


def write_idx(path: Path, array: np.ndarray, magic: int, *, compress: bool = False) -> None:
    """Write `array` (uint8) as an idx file: big-endian int32 magic and dims, then the bytes."""
    header = np.array([magic, *array.shape], dtype=">i4").tobytes()
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)


def make_mnist(
    folder: Path, *, compress: bool = False, hw: tuple[int, int] = (28, 28)
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "train_x": rng.integers(0, 256, size=(5, *hw), dtype=np.uint8),
        "train_y": rng.integers(0, 10, size=5, dtype=np.uint8),
        "test_x": rng.integers(0, 256, size=(3, *hw), dtype=np.uint8),
        "test_y": rng.integers(0, 10, size=3, dtype=np.uint8),
    }
    arrays["train_x"][0, 0, 0] = 255  # make sure the top of the range is covered
    folder.mkdir(parents=True, exist_ok=True)
    for fname, key, magic in zip(
        MNIST_FILES,
        ["train_x", "train_y", "test_x", "test_y"],
        [2051, 2049, 2051, 2049],
        strict=True,
    ):
        write_idx(folder / fname, arrays[key], magic, compress=compress)
    return arrays


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_values(tmp_path: Path, compress: bool) -> None:
    arrays = make_mnist(tmp_path, compress=compress)
    ds = load_dataset("mnist", root=tmp_path, seed=9)
    assert ds.name == "mnist" and ds.split_seed == 9 and ds.num_classes == 10
    assert ds.x_train.shape == (5, 1, 28, 28) and ds.x_test.shape == (3, 1, 28, 28)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    expected = torch.from_numpy(arrays["train_x"]).float()[:, None] / 255
    assert torch.equal(ds.x_train, expected)
    assert torch.equal(ds.x_test, torch.from_numpy(arrays["test_x"]).float()[:, None] / 255)
    assert ds.y_train.tolist() == arrays["train_y"].tolist()
    assert ds.y_test.tolist() == arrays["test_y"].tolist()
    assert ds.x_train.max() == 1.0


def test_mnist_other_image_size_and_limit(tmp_path: Path) -> None:
    arrays = make_mnist(tmp_path, hw=(4, 6))
    ds = load_dataset("mnist", root=str(tmp_path), limit=2)
    assert ds.input_shape == (1, 4, 6)
    assert len(ds.x_train) == 2 and len(ds.y_test) == 2
    assert ds.y_train.tolist() == arrays["train_y"][:2].tolist()


def test_mnist_wrong_magic(tmp_path: Path) -> None:
    arrays = make_mnist(tmp_path)
    write_idx(tmp_path / MNIST_FILES[0], arrays["train_x"], 2049)  # labels magic on images
    with pytest.raises(DataError, match="magic number 2049, expected 2051"):
        load_dataset("mnist", root=tmp_path)


def test_mnist_gzip_without_suffix_gets_a_hint(tmp_path: Path) -> None:
    make_mnist(tmp_path, compress=True)
    gz = tmp_path / f"{MNIST_FILES[0]}.gz"
    gz.rename(tmp_path / MNIST_FILES[0])
    with pytest.raises(DataError, match="gzip"):
        load_dataset("mnist", root=tmp_path)


@pytest.mark.parametrize("keep", [3, 10, -1])  # inside the magic, inside the dims, a pixel short
def test_mnist_truncated(tmp_path: Path, keep: int) -> None:
    make_mnist(tmp_path)
    path = tmp_path / MNIST_FILES[2]
    path.write_bytes(path.read_bytes()[:keep])
    with pytest.raises(DataError, match="truncated") as err:
        load_dataset("mnist", root=tmp_path)
    assert MNIST_FILES[2] in str(err.value)


def test_mnist_truncated_gzip(tmp_path: Path) -> None:
    make_mnist(tmp_path, compress=True)
    path = tmp_path / f"{MNIST_FILES[0]}.gz"
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(DataError, match=MNIST_FILES[0]):
        load_dataset("mnist", root=tmp_path)


def test_mnist_label_count_mismatch(tmp_path: Path) -> None:
    make_mnist(tmp_path)
    write_idx(tmp_path / MNIST_FILES[1], np.zeros(4, dtype=np.uint8), 2049)
    with pytest.raises(DataError, match="5 images but .* 4 labels"):
        load_dataset("mnist", root=tmp_path)


def test_mnist_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(DataError) as err:
        load_dataset("mnist", root=missing)
    msg = str(err.value)
    assert str(missing) in msg and "does not exist" in msg
    for fname in MNIST_FILES:
        assert f"{fname}[.gz]" in msg


def test_mnist_missing_file(tmp_path: Path) -> None:
    make_mnist(tmp_path)
    (tmp_path / MNIST_FILES[3]).unlink()
    with pytest.raises(DataError) as err:
        load_dataset("mnist", root=tmp_path)
    msg = str(err.value)
    assert f"does not contain {MNIST_FILES[3]}[.gz]; expected files:" in msg
    for fname in MNIST_FILES:
        assert fname in msg


def test_mnist_replaced_files_are_reread(tmp_path: Path) -> None:
    make_mnist(tmp_path)
    first = load_dataset("mnist", root=tmp_path)
    write_idx(tmp_path / MNIST_FILES[1], np.full(5, 7, dtype=np.uint8), 2049)
    os.utime(tmp_path / MNIST_FILES[1], ns=(1, 1))  # a different mtime even on coarse clocks
    second = load_dataset("mnist", root=tmp_path)
    assert second is not first and second.y_train.tolist() == [7] * 5


def make_cifar(
    folder: Path, *, n: int = 4, protocol: int = pickle.DEFAULT_PROTOCOL
) -> dict[str, tuple[np.ndarray, list[int]]]:
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    batches_written = {}
    for fname in CIFAR_FILES:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n).tolist()
        batch = {b"batch_label": b"synthetic", b"data": data, b"labels": labels}
        with open(folder / fname, "wb") as f:
            pickle.dump(batch, f, protocol=protocol)
        batches_written[fname] = (data, labels)
    return batches_written


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_values(tmp_path: Path, protocol: int) -> None:
    written = make_cifar(tmp_path, protocol=protocol)
    ds = load_dataset("cifar10", root=tmp_path)
    assert ds.x_train.shape == (20, 3, 32, 32) and ds.x_test.shape == (4, 3, 32, 32)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    train = np.concatenate([written[f][0] for f in CIFAR_FILES[:5]])
    expected = torch.from_numpy(train).float().reshape(20, 3, 32, 32) / 255
    assert torch.equal(ds.x_train, expected)
    # Channel layout: the first 1024 values of a row are the red plane.
    assert torch.equal(
        ds.x_test[1, 0].flatten(),
        torch.from_numpy(written["test_batch"][0][1, :1024]).float() / 255,
    )
    labels = sum((written[f][1] for f in CIFAR_FILES[:5]), [])
    assert ds.y_train.tolist() == labels
    assert ds.y_test.tolist() == written["test_batch"][1]
    assert ds.input_shape == (3, 32, 32) and ds.num_classes == 10


def test_cifar10_subfolder_and_limit(tmp_path: Path) -> None:
    written = make_cifar(tmp_path / "cifar-10-batches-py")
    ds = load_dataset("cifar10", root=tmp_path, limit=6)
    assert len(ds.x_train) == 6 and len(ds.x_test) == 4
    # The first 6 training samples span data_batch_1 and data_batch_2.
    assert ds.y_train.tolist() == written["data_batch_1"][1] + written["data_batch_2"][1][:2]


def test_cifar10_old_numpy_names(tmp_path: Path) -> None:
    """Files pickled by numpy 1 name numpy.core.multiarray._reconstruct."""
    written = make_cifar(tmp_path, protocol=2)
    for fname in CIFAR_FILES:
        path = tmp_path / fname
        path.write_bytes(
            path.read_bytes().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        )
    ds = load_dataset("cifar10", root=tmp_path)
    assert torch.equal(
        ds.x_test, torch.from_numpy(written["test_batch"][0]).float().reshape(4, 3, 32, 32) / 255
    )


def test_cifar10_missing_files(tmp_path: Path) -> None:
    make_cifar(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", root=tmp_path)
    msg = str(err.value)
    assert str(tmp_path) in msg and "contains data_batch_3;" in msg
    for fname in CIFAR_FILES:
        assert fname in msg


def test_cifar10_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist; expected files: data_batch_1"):
        load_dataset("cifar10", root=tmp_path / "nope")


class _TouchMarker:
    """Pickles to a call that would create a marker file when loaded."""

    def __init__(self, marker: Path, how: str) -> None:
        self.marker, self.how = marker, how

    def __reduce__(self) -> tuple:
        if self.how == "open":
            return (open, (str(self.marker), "w"))
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("how", ["open", "system"])
def test_cifar10_malicious_pickle_is_rejected(tmp_path: Path, how: str) -> None:
    make_cifar(tmp_path)
    marker = tmp_path / "pwned"
    evil = {b"data": np.zeros((4, 3072), np.uint8), b"labels": _TouchMarker(marker, how)}
    with open(tmp_path / "data_batch_2", "wb") as f:
        pickle.dump(evil, f)
    with pytest.raises(DataError, match="forbidden global") as err:
        load_dataset("cifar10", root=tmp_path)
    assert "data_batch_2" in str(err.value)
    assert ("io.open" if how == "open" else ".system") in str(err.value)
    assert not marker.exists()
    # The payload is real: plain pickle.load would have run it.
    control = tmp_path / "control"
    result = pickle.loads(pickle.dumps(_TouchMarker(control, how)))
    if how == "open":
        result.close()
    assert control.exists()


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"not a pickle", "not a readable"),
        (pickle.dumps([1, 2, 3]), "expected a dict"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)}), "b'labels'"),
        (pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}), "3072"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}), "1 labels"),
        (pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [10]}), "labels in"),
    ],
)
def test_cifar10_wrong_format(tmp_path: Path, content: bytes, match: str) -> None:
    make_cifar(tmp_path)
    (tmp_path / "test_batch").write_bytes(content)
    with pytest.raises(DataError, match=match):
        load_dataset("cifar10", root=tmp_path)


@pytest.mark.parametrize("batch_size", [1, 3, 7, 10, 50])
def test_batches_cover_every_sample_once(batch_size: int) -> None:
    x = torch.arange(10, dtype=torch.float32)[:, None] * torch.ones(1, 2)  # (10, 2)
    y = torch.arange(10)
    seen = []
    gen = torch.Generator().manual_seed(0)
    for xb, yb in batches(x, y, batch_size, shuffle=True, generator=gen):
        assert len(xb) == len(yb) <= batch_size
        assert torch.equal(xb[:, 0].long(), yb)  # pairs stay together
        seen += yb.tolist()
    assert sorted(seen) == list(range(10))


def test_batches_order() -> None:
    x, y = torch.arange(10), torch.arange(10)
    plain = [yb.tolist() for _, yb in batches(x, y, 4)]
    assert plain == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    runs = [
        [
            yb.tolist()
            for _, yb in batches(x, y, 4, shuffle=True, generator=torch.Generator().manual_seed(s))
        ]
        for s in (1, 1, 2)
    ]
    assert runs[0] == runs[1] and runs[0] != runs[2]
    assert runs[0] != plain


def test_batches_bad_arguments() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        batches(torch.zeros(3), torch.zeros(3), 0)
    with pytest.raises(ValueError, match="samples"):
        batches(torch.zeros(3), torch.zeros(2), 2)
