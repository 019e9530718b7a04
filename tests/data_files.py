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
