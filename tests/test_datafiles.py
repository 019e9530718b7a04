"""Tests for landscape.datafiles: the MNIST idx and CIFAR pickle readers, on synthetic files."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from landscape.data import DataError, load_dataset
from tests.data_files import (
    CIFAR_FILES,
    CIFAR_SETS,
    MNIST_FILES,
    cifar_batch,
    make_cifar,
    make_mnist,
    naive_cifar_images,
    write_idx,
)


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
@pytest.mark.parametrize(
    ("dataset", "victim", "title"),
    [("cifar10", "data_batch_2", "CIFAR-10"), ("cifar100", "train", "CIFAR-100")],
)
def test_cifar_malicious_pickle_is_rejected(
    tmp_path: Path, how: str, dataset: str, victim: str, title: str
) -> None:
    make_cifar(tmp_path, dataset=dataset)
    marker = tmp_path / "pwned"
    evil = cifar_batch(dataset, np.zeros((4, 3072), np.uint8), _TouchMarker(marker, how))
    with open(tmp_path / victim, "wb") as f:
        pickle.dump(evil, f)
    with pytest.raises(DataError, match="forbidden global") as err:
        load_dataset(dataset, root=tmp_path)
    msg = str(err.value)
    assert msg.startswith(f"{dataset}: ") and f"in a {title} batch" in msg
    assert victim in msg
    assert ("io.open" if how == "open" else ".system") in msg
    assert not marker.exists()
    # The payload is real: plain pickle.load would have run it.
    control = tmp_path / "control"
    result = pickle.loads(pickle.dumps(_TouchMarker(control, how)))
    if how == "open":
        result.close()
    assert control.exists()


def _bad_batch(dataset: str, case: str) -> bytes:
    """The bytes of a broken batch file of `dataset`."""
    classes = CIFAR_SETS[dataset][2]
    zeros = np.zeros((2, 3072), np.uint8)
    if case == "not a pickle":
        return b"not a pickle"
    if case == "a list":
        return pickle.dumps([1, 2, 3])
    if case == "no labels":
        # CIFAR-100's coarse labels are no stand-in for the fine ones.
        return pickle.dumps({b"data": zeros, b"coarse_labels": [0, 1]})
    if case == "short rows":
        return pickle.dumps(cifar_batch(dataset, np.zeros((2, 100), np.uint8), [0, 1]))
    if case == "label count":
        return pickle.dumps(cifar_batch(dataset, zeros, [0]))
    if case == "label too big":
        return pickle.dumps(cifar_batch(dataset, zeros, [0, classes]))
    assert case == "label negative"
    return pickle.dumps(cifar_batch(dataset, zeros, [-1, 0]))


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("not a pickle", "is not a readable {title} pickle batch"),
        ("a list", "holds a list, expected a dict"),
        ("no labels", "lacks the keys b'data' and/or {key}"),
        ("short rows", r"shape \(2, 100\), expected \(N, 3072\)"),
        ("label count", "holds 2 images but 1 labels"),
        ("label too big", r"labels in \[0, {classes}\], expected \[0, {top}\]"),
        ("label negative", r"labels in \[-1, 0\], expected \[0, {top}\]"),
    ],
)
def test_cifar_wrong_format(tmp_path: Path, dataset: str, case: str, match: str) -> None:
    files, key, classes, _ = CIFAR_SETS[dataset]
    make_cifar(tmp_path, dataset=dataset)
    (tmp_path / files[-1]).write_bytes(_bad_batch(dataset, case))
    title = "CIFAR-10" if dataset == "cifar10" else "CIFAR-100"
    pattern = match.format(title=title, key=repr(key), classes=classes, top=classes - 1)
    with pytest.raises(DataError, match=pattern) as err:
        load_dataset(dataset, root=tmp_path)
    assert str(err.value).startswith(f"{dataset}: {tmp_path / files[-1]}")


@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize("subfolder", [False, True])
def test_cifar100_values(tmp_path: Path, protocol: int, subfolder: bool) -> None:
    folder = tmp_path / "cifar-100-python" if subfolder else tmp_path
    written = make_cifar(folder, n=5, protocol=protocol, dataset="cifar100")
    ds = load_dataset("cifar100", root=tmp_path, seed=3)
    assert ds.name == "cifar100" and ds.num_classes == 100 and ds.split_seed == 3
    assert ds.x_train.shape == (5, 3, 32, 32) and ds.x_test.shape == (5, 3, 32, 32)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    for x, fname in ((ds.x_train, "train"), (ds.x_test, "test")):
        data = written[fname][0]
        expected = data.reshape(len(data), 3, 32, 32).astype(np.float32) / np.float32(255)
        assert torch.equal(x, torch.from_numpy(expected))  # bit for bit, as for cifar10
        np.testing.assert_allclose(x.numpy(), naive_cifar_images(data), rtol=0, atol=1e-7)
    # The fine labels, both ends of [0, 100) included; not the coarse ones.
    assert ds.y_train.tolist() == written["train"][1]
    assert ds.y_test.tolist() == written["test"][1]
    assert ds.y_train.tolist()[:2] == [99, 0]
    assert ds.describe()["name"] == "cifar100" and ds.describe()["num_classes"] == 100


def test_cifar100_limit(tmp_path: Path) -> None:
    written = make_cifar(tmp_path, n=6, dataset="cifar100")
    ds = load_dataset("cifar100", root=tmp_path, limit=2)
    assert len(ds.x_train) == 2 and len(ds.y_test) == 2
    assert ds.y_train.tolist() == written["train"][1][:2]
    assert ds.y_test.tolist() == written["test"][1][:2]
    full = load_dataset("cifar100", root=tmp_path)
    assert torch.equal(ds.x_test, full.x_test[:2])


@pytest.mark.parametrize("subfolder", [False, True])
def test_cifar100_missing_file(tmp_path: Path, subfolder: bool) -> None:
    folder = tmp_path / "cifar-100-python" if subfolder else tmp_path
    make_cifar(folder, dataset="cifar100")
    (folder / "test").unlink()
    with pytest.raises(DataError) as err:
        load_dataset("cifar100", root=tmp_path)
    msg = str(err.value)
    assert msg.startswith("cifar100: neither folder")
    assert str(tmp_path / "cifar-100-python") in msg
    assert "contains test; expected files: train, test" in msg


def test_cifar100_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist; expected files: train, test"):
        load_dataset("cifar100", root=tmp_path / "nope")
    with pytest.raises(DataError, match="folder is needed.*Expected files: train, test"):
        load_dataset("cifar100")


def test_cifar100_replaced_files_are_reread(tmp_path: Path) -> None:
    make_cifar(tmp_path, dataset="cifar100")
    first = load_dataset("cifar100", root=tmp_path)
    data = np.zeros((4, 3072), np.uint8)
    with open(tmp_path / "train", "wb") as f:
        pickle.dump(cifar_batch("cifar100", data, [42] * 4), f)
    os.utime(tmp_path / "train", ns=(1, 1))  # a different mtime even on coarse clocks
    second = load_dataset("cifar100", root=tmp_path)
    assert second is not first and second.y_train.tolist() == [42] * 4
