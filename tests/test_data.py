"""Tests for landscape.data: bundled digits, synthetic idx (mnist) and pickle (cifar) files."""

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
from landscape.data import DATASETS, NORMALIZATIONS, DataError, Dataset, batches, load_dataset

MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
CIFAR_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")
CIFAR100_FILES = ("train", "test")
# Per data set: its files (training ones first, the test file last), label key, classes, subfolder.
CIFAR_SETS = {
    "cifar10": (CIFAR_FILES, b"labels", 10, "cifar-10-batches-py"),
    "cifar100": (CIFAR100_FILES, b"fine_labels", 100, "cifar-100-python"),
}
# Written out here, not taken from landscape.data: dnn-mode-connectivity's transforms "VGG" and
# "ResNet" (transforms.Normalize after ToTensor).
VGG_MEAN, VGG_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
RESNET_MEAN, RESNET_STD = [0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010]
STATS = {"vgg": (VGG_MEAN, VGG_STD), "resnet": (RESNET_MEAN, RESNET_STD)}


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
        "normalize": "none",
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


@pytest.mark.parametrize("name", ["mnist", "cifar10", "cifar100"])
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


def cifar_batch(
    dataset: str, data: np.ndarray, labels: object, extra: dict[bytes, object] | None = None
) -> dict[bytes, object]:
    """A batch dict as the official pickles hold it, labels under `dataset`'s label key."""
    key = CIFAR_SETS[dataset][1]
    return {b"batch_label": b"synthetic", b"data": data, key: labels, **(extra or {})}


def make_cifar(
    folder: Path,
    *,
    n: int = 4,
    protocol: int = pickle.DEFAULT_PROTOCOL,
    dataset: str = "cifar10",
) -> dict[str, tuple[np.ndarray, list[int]]]:
    """Write every batch file of `dataset` with `n` random images; return {file: (data, labels)}."""
    files, _, classes, _ = CIFAR_SETS[dataset]
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    batches_written = {}
    for fname in files:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = rng.integers(0, classes, size=n).tolist()
        extra: dict[bytes, object] = {}
        if dataset == "cifar100":
            labels[:2] = [classes - 1, 0]  # both ends of the range
            # The 20 superclasses, deliberately unlike the fine labels: a reader that took
            # b'coarse_labels' would fail the label checks.
            extra[b"coarse_labels"] = [(lab + 7) % 20 for lab in labels]
            extra[b"filenames"] = [f"img_{i}.png".encode() for i in range(n)]
        with open(folder / fname, "wb") as f:
            pickle.dump(cifar_batch(dataset, data, labels, extra), f, protocol=protocol)
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


def naive_cifar_images(data: np.ndarray) -> np.ndarray:
    """(N, 3072) uint8 rows to (N, 3, 32, 32) float64 in [0, 1], one index at a time."""
    out = np.zeros((len(data), 3, 32, 32))
    for i in range(len(data)):
        for k in range(3072):
            # A row: 1024 red, then 1024 green, then 1024 blue values, each plane row-major.
            c, r, col = k // 1024, (k % 1024) // 32, k % 32
            out[i, c, r, col] = data[i, k] / 255
    return out


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


def naive_normalized(data: np.ndarray, mean: list[float], std: list[float]) -> np.ndarray:
    """(N, 3072) uint8 rows to normalised (N, 3, 32, 32) float64, one pixel at a time."""
    images = naive_cifar_images(data)
    out = np.zeros_like(images)
    for i, c, r, col in np.ndindex(*images.shape):
        out[i, c, r, col] = (images[i, c, r, col] - mean[c]) / std[c]
    return out


def test_normalizations_table() -> None:
    assert NORMALIZATIONS == {
        "none": None,
        "vgg": (tuple(VGG_MEAN), tuple(VGG_STD)),
        "resnet": (tuple(RESNET_MEAN), tuple(RESNET_STD)),
    }


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
@pytest.mark.parametrize("normalize", ["vgg", "resnet"])
def test_normalize_matches_a_per_pixel_loop(tmp_path: Path, dataset: str, normalize: str) -> None:
    files = CIFAR_SETS[dataset][0]
    written = make_cifar(tmp_path, n=2, dataset=dataset)
    ds = load_dataset(dataset, root=tmp_path, normalize=normalize)
    assert ds.normalize == normalize and ds.x_train.dtype == torch.float32
    mean, std = STATS[normalize]
    # The first training file and the test file; a float64 reference, so float32 rounding only.
    for x, fname in ((ds.x_train[:2], files[0]), (ds.x_test, files[-1])):
        expected = naive_normalized(written[fname][0], mean, std)
        np.testing.assert_allclose(x.numpy(), expected, rtol=0, atol=2e-6)
    # torchvision's Normalize on a ToTensor image: float32 (x - mean) / std, bit for bit.
    raw = load_dataset(dataset, root=tmp_path)
    m = torch.tensor(mean).view(3, 1, 1)
    s = torch.tensor(std).view(3, 1, 1)
    assert torch.equal(ds.x_train, (raw.x_train - m) / s)
    assert torch.equal(ds.x_test, (raw.x_test - m) / s)
    assert torch.equal(ds.y_train, raw.y_train) and torch.equal(ds.y_test, raw.y_test)


def test_normalize_with_limit(tmp_path: Path) -> None:
    written = make_cifar(tmp_path, n=3, dataset="cifar100")
    ds = load_dataset("cifar100", root=tmp_path, normalize="resnet", limit=1)
    assert len(ds.x_train) == 1 and len(ds.x_test) == 1
    expected = naive_normalized(written["test"][0][:1], RESNET_MEAN, RESNET_STD)
    np.testing.assert_allclose(ds.x_test.numpy(), expected, rtol=0, atol=2e-6)


def test_normalize_none_leaves_images_unchanged(tmp_path: Path) -> None:
    written = make_cifar(tmp_path)
    ds = load_dataset("cifar10", root=tmp_path)
    assert ds.normalize == "none"
    assert load_dataset("cifar10", root=tmp_path, normalize="none") is ds  # one cache entry
    expected = torch.from_numpy(written["test_batch"][0]).float().reshape(4, 3, 32, 32) / 255
    assert torch.equal(ds.x_test, expected)
    digits = load_dataset("digits", normalize="none")
    assert digits is load_dataset("digits")
    assert digits.x_train.min() == 0 and digits.x_train.max() == 1


def test_normalized_loads_are_cached_apart(tmp_path: Path) -> None:
    make_cifar(tmp_path)
    data_mod._load_cached.cache_clear()
    plain = load_dataset("cifar10", root=tmp_path)
    before = plain.x_train.clone()
    vgg = load_dataset("cifar10", root=tmp_path, normalize="vgg")
    resnet = load_dataset("cifar10", root=tmp_path, normalize="resnet")
    assert len({id(plain), id(vgg), id(resnet)}) == 3
    assert load_dataset("cifar10", root=tmp_path, normalize="vgg") is vgg
    assert load_dataset("cifar10", root=tmp_path) is plain
    # Normalising never touches the tensors of another cached load.
    assert torch.equal(plain.x_train, before)
    assert not torch.equal(vgg.x_train, resnet.x_train)
    assert vgg.x_train.data_ptr() != plain.x_train.data_ptr()


@pytest.mark.parametrize("normalize", ["vgg", "resnet"])
def test_normalize_needs_three_channels(tmp_path: Path, normalize: str) -> None:
    msg = f"digits: normalize='{normalize}' needs images with 3 channels, but digits images have 1"
    with pytest.raises(DataError, match=f"^{msg} channel$"):
        load_dataset("digits", normalize=normalize)
    make_mnist(tmp_path, hw=(4, 4))
    with pytest.raises(DataError, match="have 1 channel"):
        load_dataset("mnist", root=tmp_path, normalize=normalize)
    x = torch.zeros(2, 1, 3, 3)
    y = torch.zeros(2, dtype=torch.int64)
    with pytest.raises(DataError, match="have 1 channel"):
        Dataset("t", x, y, x, y, 10, 0, normalize=normalize)


@pytest.mark.parametrize("normalize", ["imagenet", "VGG", "", None, 1])
def test_unknown_normalize_lists_choices(tmp_path: Path, normalize: object) -> None:
    with pytest.raises(DataError, match="unknown normalize") as err:
        load_dataset("digits", normalize=normalize)  # type: ignore[arg-type]
    assert "choose one of: none, vgg, resnet" in str(err.value)
    # Checked before the folder is looked at.
    with pytest.raises(DataError, match="unknown normalize"):
        load_dataset("cifar100", root=tmp_path / "nope", normalize=normalize)  # type: ignore[arg-type]
    x = torch.zeros(2, 3, 3, 3)
    y = torch.zeros(2, dtype=torch.int64)
    with pytest.raises(DataError, match="unknown normalize"):
        Dataset("t", x, y, x, y, 10, 0, normalize=normalize)  # type: ignore[arg-type]


@pytest.mark.parametrize("normalize", ["none", "vgg", "resnet"])
def test_describe_states_the_normalisation(tmp_path: Path, normalize: str) -> None:
    make_cifar(tmp_path, dataset="cifar100")
    desc = load_dataset("cifar100", root=tmp_path, normalize=normalize).describe()
    assert desc["normalize"] == normalize
    if normalize == "none":
        assert "mean" not in desc and "std" not in desc
    else:
        assert (desc["mean"], desc["std"]) == STATS[normalize]
    assert json.loads(json.dumps(desc)) == desc
    # A hand-built Dataset keeps working and says it is not normalised.
    x = torch.zeros(2, 3, 3, 3)
    y = torch.zeros(2, dtype=torch.int64)
    assert Dataset("t", x, y, x, y, 10, 0).describe()["normalize"] == "none"


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
