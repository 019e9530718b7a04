"""Tests for landscape.data: bundled digits, normalisation, caching and batches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from landscape import data as data_mod
from landscape.data import DATASETS, NORMALIZATIONS, DataError, Dataset, batches, load_dataset
from tests.data_files import (
    CIFAR_SETS,
    make_cifar,
    make_mnist,
    naive_cifar_images,
)

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


def test_digits_split_file_is_sklearns_split_and_a_bad_one_is_redone(tmp_path, monkeypatch):
    """The split kept in home()/cache is scikit-learn's, bit for bit; a damaged file is split
    again and rewritten."""
    from sklearn.model_selection import train_test_split

    monkeypatch.setenv("LANDSCAPE_HOME", str(tmp_path))
    ref = load_digits()
    want = train_test_split(
        ref.images[:, None], ref.target, test_size=0.25, stratify=ref.target, random_state=4
    )
    first = data_mod._digits_split(4)  # computed and written
    (path,) = (tmp_path / "cache").glob("digits-split4-*.npz")
    path.write_bytes(path.read_bytes()[:100])  # torn
    again = data_mod._digits_split(4)  # split again, rewritten
    from_file = data_mod._digits_split(4)  # read
    for arrays in (first, again, from_file):
        for got, ref_array in zip(arrays, want, strict=True):
            np.testing.assert_array_equal(got, ref_array)
    assert np.load(path)["x_train"].shape == (1347, 1, 8, 8)


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
