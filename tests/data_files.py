"""Synthetic data files in the official MNIST (idx) and CIFAR (pickle batch) layouts (for tests)."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np

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


def naive_cifar_images(data: np.ndarray) -> np.ndarray:
    """(N, 3072) uint8 rows to (N, 3, 32, 32) float64 in [0, 1], one index at a time."""
    out = np.zeros((len(data), 3, 32, 32))
    for i in range(len(data)):
        for k in range(3072):
            # A row: 1024 red, then 1024 green, then 1024 blue values, each plane row-major.
            c, r, col = k // 1024, (k % 1024) // 32, k % 32
            out[i, c, r, col] = data[i, k] / 255
    return out


def make_npz(path: Path, *, layout: str = "first", n: int = 6, **extra: np.ndarray) -> dict:
    """An .npz data set of (n, 3, 5, 4) images in `layout` first / last / uint8 / grey; 3 classes."""
    rng = np.random.default_rng(2)
    x = rng.random((2 * n, 3, 5, 4), dtype=np.float32)  # (N, C, H, W) in [0, 1)
    if layout == "uint8":
        x = rng.integers(0, 256, size=x.shape, dtype=np.uint8)
    elif layout == "grey":
        x = x[:, 0]  # (N, H, W)
    y = np.arange(2 * n, dtype=np.int64) % 3
    stored = x.transpose(0, 2, 3, 1) if layout == "last" else x  # (N, H, W, C)
    arrays = {"x_train": stored[:n], "y_train": y[:n], "x_test": stored[n:], "y_test": y[n:]}
    arrays = {**arrays, **extra}
    np.savez(path, **arrays)
    return {"x": x, "y": y, **arrays}


def make_imagefolder(root: Path, sizes: dict[str, tuple[int, int]]) -> dict[str, list[int]]:
    """PNGs under root/{train,test}/<class>/ of the given (W, H) sizes; class c is all c*80 grey.

    Returns the labels per split in load order (class folders sorted by name, files by name).
    """
    from PIL import Image

    labels: dict[str, list[int]] = {"train": [], "test": []}
    for label, cls in enumerate(sorted(sizes)):
        for split, count in (("train", 3), ("test", 2)):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                Image.new("L", sizes[cls], color=label * 80).save(folder / f"{i}.png")
            labels[split] += [label] * count
    return labels


def make_svhn(folder: Path, *, n: int = 4) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """train_32x32.mat / test_32x32.mat as SVHN writes them: X (32, 32, 3, N), y (N, 1) 1..10."""
    from scipy.io import savemat

    rng = np.random.default_rng(3)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split in ("train", "test"):
        x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
        y = (np.arange(n) % 10 + 1).astype(np.uint8)[:, None]  # 10 is the digit 0
        y[0] = 10
        savemat(folder / f"{split}_32x32.mat", {"X": x, "y": y})
        out[split] = (x, y)
    return out
