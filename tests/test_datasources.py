"""Tests for the data sets users have: npz files, image folders, torchvision layouts, SVHN."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from landscape.checkpoints import Checkpoint, checkpoint_dataset, load_checkpoint
from landscape.cli import main
from landscape.data import DATASETS, DataError, load_dataset
from tests.data_files import make_cifar, make_imagefolder, make_mnist, make_npz, make_svhn


@pytest.mark.parametrize("layout", ["first", "last", "uint8", "grey"])
def test_npz_round_trip(tmp_path: Path, layout: str) -> None:
    arrays = make_npz(tmp_path / "d.npz", layout=layout)
    ds = load_dataset("npz", root=tmp_path / "d.npz", seed=4)
    x = torch.from_numpy(arrays["x"]).float()
    x = x / 255 if layout == "uint8" else x
    x = x[:, None] if layout == "grey" else x  # (N, C, H, W)
    assert torch.equal(torch.cat([ds.x_train, ds.x_test]), x)
    assert torch.cat([ds.y_train, ds.y_test]).tolist() == arrays["y"].tolist()
    assert ds.num_classes == 3 and ds.split_seed == 4 and ds.classes_from_labels
    desc = ds.describe()
    assert desc["name"] == "npz" and desc["input_shape"] == [1 if layout == "grey" else 3, 5, 4]
    assert len(desc["sha256"]) == 64 and json.loads(json.dumps(desc)) == desc


def test_npz_spelled_in_the_name_and_fingerprint_follows_content(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    make_npz(path)
    assert f"npz:{path}" in DATASETS and "npz:" not in DATASETS and "nope" not in DATASETS
    first = load_dataset(f"npz:{path}").describe()
    assert first == load_dataset("npz", root=path).describe()
    make_npz(path, layout="uint8")
    os.utime(path, ns=(1, 1))  # a different stamp even on coarse file clocks
    assert load_dataset(f"npz:{path}").describe()["sha256"] != first["sha256"]


def test_npz_classes_and_file_statistics(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    names = np.array(["cat", "dog", "eel", "fox"])
    mean, std = np.array([0.5, 0.4, 0.3]), np.array([0.2, 0.25, 0.5])
    arrays = make_npz(path, classes=names, mean=mean, std=std)
    ds = load_dataset("npz", root=path)
    assert ds.num_classes == 4 and not ds.classes_from_labels
    assert ds.normalize == "file" and ds.describe()["classes"] == ["cat", "dog", "eel", "fox"]
    assert ds.describe()["mean"] == mean.tolist() and ds.describe()["std"] == std.tolist()
    x = torch.from_numpy(arrays["x"][:6])
    m, s = (torch.tensor(v, dtype=torch.float32).view(3, 1, 1) for v in (mean, std))
    assert torch.allclose(ds.x_train, (x - m) / s)
    with pytest.raises(DataError, match="carries its own mean/std"):
        load_dataset("npz", root=path, normalize="vgg")


def _bad(path: Path, what: str) -> None:
    x = np.zeros((4, 1, 3, 3), dtype=np.float32)
    y = np.array([0, 1, 0, 1])
    arrays = {"x_train": x, "y_train": y, "x_test": x, "y_test": y}
    if what == "pickled":
        arrays["y_test"] = np.array([0, 1, "a", None], dtype=object)
    elif what == "missing":
        del arrays["y_test"]
    elif what == "negative":
        arrays["y_train"] = np.array([0, -1, 0, 1])
    elif what == "classes":
        arrays["classes"] = np.array(2)
        arrays["y_test"] = np.array([0, 1, 2, 1])
    elif what == "count":
        arrays["y_train"] = y[:3]
    elif what == "shapes":
        arrays["x_test"] = np.zeros((4, 1, 3, 4), dtype=np.float32)
    elif what == "dtype":
        arrays["x_train"] = x.astype(np.int32)
    elif what == "rank":
        arrays["x_train"] = np.zeros((4, 9), dtype=np.float32)
    elif what == "float labels":
        arrays["y_train"] = y.astype(np.float32)
    np.savez(path, **arrays)


@pytest.mark.parametrize(
    ("what", "message"),
    [
        ("pickled", "pickled object array, which is refused"),
        ("missing", "lacks y_test"),
        ("negative", "y_train has negative labels"),
        ("classes", r"labels go up to 2 but 'classes' declares 2 classes"),
        ("count", "y_train holds 3 labels but there are 4 images"),
        ("shapes", r"train images \(1, 3, 3\) and test images \(1, 3, 4\) differ"),
        ("dtype", "x_train must be float or uint8 images, got dtype int32"),
        ("rank", r"x_train has shape \(4, 9\); expected \(N, C, H, W\)"),
        ("float labels", "y_train must be a 1-D integer array"),
    ],
)
def test_bad_npz(tmp_path: Path, what: str, message: str) -> None:
    _bad(tmp_path / "bad.npz", what)
    with pytest.raises(DataError, match=message):
        load_dataset("npz", root=tmp_path / "bad.npz")


def test_npz_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist; name a .npz file"):
        load_dataset("npz", root=tmp_path / "none.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="cannot read"):
        load_dataset("npz", root=tmp_path / "junk.npz")
    with pytest.raises(DataError, match="a file is needed"):
        load_dataset("npz")


def test_imagefolder_labels_sizes_and_fingerprint(tmp_path: Path) -> None:
    # "b_small" sorts after "a_big": labels follow folder names, not creation order.
    labels = make_imagefolder(tmp_path, {"b_small": (4, 3), "a_big": (10, 7)})
    ds = load_dataset("imagefolder", root=tmp_path, size=(6, 5))
    assert ds.x_train.shape == (6, 1, 6, 5) and ds.x_test.shape == (4, 1, 6, 5)
    assert ds.y_train.tolist() == labels["train"] == [0, 0, 0, 1, 1, 1]
    assert ds.y_test.tolist() == labels["test"]
    # Uniform grey images stay uniform when resized: class c is c * 80 / 255 everywhere.
    assert torch.allclose(ds.x_train[:, 0, 0, 0], ds.y_train.float() * 80 / 255)
    desc = ds.describe()
    assert desc["classes"] == ["a_big", "b_small"] and desc["num_classes"] == 2
    assert desc["size"] == [6, 5] and desc["channels"] == 1
    rgb = load_dataset(f"imagefolder:{tmp_path}", size="8x8", channels=3)
    assert rgb.input_shape == (3, 8, 8)
    first = load_dataset("imagefolder", root=tmp_path)  # the first image's size: (H, W) = (7, 10)
    assert first.input_shape == (1, 7, 10)
    make_imagefolder(tmp_path / "more", {"x": (2, 2)})
    (tmp_path / "more" / "train" / "x" / "0.png").rename(tmp_path / "test" / "a_big" / "9.png")
    assert (
        load_dataset("imagefolder", root=tmp_path).describe()["fingerprint"]
        != (first.describe()["fingerprint"])
    )


def test_imagefolder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="has no train/ folder"):
        load_dataset("imagefolder", root=tmp_path)
    make_imagefolder(tmp_path, {"a": (3, 3)})
    (tmp_path / "test" / "zz").mkdir()
    (tmp_path / "test" / "zz" / "0.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"test classes \['zz'\] have no train/ folder"):
        load_dataset("imagefolder", root=tmp_path)
    (tmp_path / "train" / "zz").mkdir()
    (tmp_path / "train" / "zz" / "0.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot read image .*zz/0.png"):
        load_dataset("imagefolder", root=tmp_path, size=4)
    with pytest.raises(DataError, match="channels must be 1"):
        load_dataset("imagefolder", root=tmp_path, channels=2)
    with pytest.raises(DataError, match="size must be"):
        load_dataset("imagefolder", root=tmp_path, size="4xq")
    with pytest.raises(DataError, match="takes no option size"):
        load_dataset("digits", size=4)


@pytest.mark.parametrize(("name", "sub"), [("mnist", "MNIST"), ("fashionmnist", "FashionMNIST")])
def test_torchvision_idx_layouts(tmp_path: Path, name: str, sub: str) -> None:
    arrays = make_mnist(tmp_path / sub / "raw", compress=True)
    ds = load_dataset(name, root=tmp_path)
    assert ds.name == name and ds.num_classes == 10 and ds.x_train.shape == (5, 1, 28, 28)
    assert ds.y_test.tolist() == arrays["test_y"].tolist()
    other = "fashionmnist" if name == "mnist" else "mnist"
    with pytest.raises(DataError, match=f"{other}: folder .* does not contain"):
        load_dataset(other, root=tmp_path)


@pytest.mark.parametrize(
    ("name", "sub"), [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python")]
)
def test_torchvision_cifar_layouts(tmp_path: Path, name: str, sub: str) -> None:
    written = make_cifar(tmp_path / sub, dataset=name)
    ds = load_dataset(name, root=tmp_path)
    assert ds.input_shape == (3, 32, 32) and ds.y_test.tolist() == list(
        written["test" if name == "cifar100" else "test_batch"][1]
    )


def test_svhn_mat_files(tmp_path: Path) -> None:
    written = make_svhn(tmp_path)
    ds = load_dataset("svhn", root=tmp_path)
    x, y = written["train"]
    assert ds.num_classes == 10 and ds.input_shape == (3, 32, 32)
    assert torch.equal(ds.x_train, torch.from_numpy(x.transpose(3, 2, 0, 1)).float() / 255)
    assert ds.y_train.tolist() == [0, 2, 3, 4]  # 10 is the digit 0
    from scipy.io import savemat

    savemat(tmp_path / "test_32x32.mat", {"X": x, "y": np.full((4, 1), 11)})
    with pytest.raises(DataError, match=r"svhn: .*test_32x32.mat has labels in \[11, 11\]"):
        load_dataset("svhn", root=tmp_path)
    (tmp_path / "half").mkdir()
    (tmp_path / "train_32x32.mat").rename(tmp_path / "half" / "train_32x32.mat")
    with pytest.raises(DataError, match="does not contain test_32x32.mat"):
        load_dataset("svhn", root=tmp_path / "half")


def _checkpoint(data: dict, classes: int) -> Checkpoint:
    arch = {"name": "mlp", "kwargs": {"in_shape": [3, 5, 4], "num_classes": classes}}
    return Checkpoint(state={}, meta={"arch": arch, "data": data}, hash="0", name="t")


def test_class_count_against_the_model(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    make_npz(path, classes=np.array(12))
    with pytest.raises(DataError, match="model outputs 10 classes but the data set npz has 12"):
        checkpoint_dataset(_checkpoint({"name": "npz", "root": str(path)}, 10))
    assert checkpoint_dataset(_checkpoint({"name": f"npz:{path}"}, 12)).num_classes == 12
    # Classes only inferred from the labels (0..2): a model with more outputs still fits.
    make_npz(path)
    assert checkpoint_dataset(_checkpoint({"name": "npz", "root": str(path)}, 10)).num_classes == 3
    with pytest.raises(DataError, match="model outputs 2 classes but the data set npz has 3"):
        checkpoint_dataset(_checkpoint({"name": "npz", "root": str(path)}, 2))
    with pytest.raises(DataError, match="outputs 12 classes but the data set digits has 10"):
        checkpoint_dataset(_checkpoint({"name": "digits"}, 12))


TRAIN = ["train", "--arch", "mlp", "--arch-kwargs", '{"widths": [8]}', "--epochs", "1"]


@pytest.mark.slow
def test_cli_trains_on_npz(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "d.npz"
    make_npz(path, layout="last")
    out = tmp_path / "run"
    assert (
        main(
            [
                *TRAIN,
                "--snapshots",
                "2",
                "--data",
                "npz",
                "--data-root",
                str(path),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    final = load_checkpoint(out / "final.safetensors")
    assert final.meta["data"] == {"name": "npz", "split_seed": 0, "root": str(path.resolve())}
    ds = checkpoint_dataset(final)
    record = json.loads((out / "run.json").read_text())
    assert record["data"] == ds.describe() and record["data"]["n_train"] == 6
    # The name may carry the path too.
    assert (
        main([*TRAIN, "--snapshots", "2", "--data", f"npz:{path}", "--out", str(tmp_path / "r2")])
        == 0
    )
    assert load_checkpoint(tmp_path / "r2" / "final.safetensors").meta["data"]["root"] == str(
        path.resolve()
    )


@pytest.mark.slow
def test_cli_trains_on_an_image_folder(tmp_path: Path) -> None:
    make_imagefolder(tmp_path / "imgs", {"a": (9, 9), "b": (5, 7)})
    out = tmp_path / "run"
    args = ["--data", "imagefolder", "--data-root", str(tmp_path / "imgs"), "--image-size", "6x4"]
    assert (
        main([*TRAIN, "--snapshots", "2", *args, "--image-channels", "3", "--out", str(out)]) == 0
    )
    final = load_checkpoint(out / "final.safetensors")
    data = final.meta["data"]
    assert data["name"] == "imagefolder" and data["size"] == [6, 4] and data["channels"] == 3
    assert final.meta["arch"]["kwargs"]["in_shape"] == [3, 6, 4]
    ds = checkpoint_dataset(final)
    assert ds.input_shape == (3, 6, 4) and ds.describe()["classes"] == ["a", "b"]
