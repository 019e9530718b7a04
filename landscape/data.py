"""Data sets: `digits` (bundled with scikit-learn); `mnist`, `cifar10`, `cifar100` from a folder.

Nothing is ever downloaded: `mnist`, `cifar10` and `cifar100` are read from a folder the user
names. Every data set comes back as a frozen `Dataset` of float32 images, shape (N, C, H, W), and
int64 labels. Images are in [0, 1] unless a per-channel normalisation from `NORMALIZATIONS` is
asked for (`load_dataset(..., normalize="vgg")`), which maps each channel to `(x - mean) / std`
as the mode-connectivity research code does for CIFAR. Loads are cached, so the returned tensors
are shared between callers and must be treated as read-only (never modify them in place;
`.clone()` first if you need to).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from landscape.datafiles import (
    NUM_CLASSES,
    DataError,
    expected_files,
    find_files,
    read_cifar,
    read_mnist,
)

__all__ = ["DATASETS", "NORMALIZATIONS", "DataError", "Dataset", "batches", "load_dataset"]

DATASETS: tuple[str, ...] = ("digits", "mnist", "cifar10", "cifar100")

# Per-channel (mean, std) of images in [0, 1], as timgaripov/dnn-mode-connectivity `data.py`
# (and gRDA-Optimizer `Connectivity_Projection/data.py`) normalise CIFAR-10 and CIFAR-100 with
# its transforms "VGG" and "ResNet"; None leaves the images in [0, 1].
NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]] | None] = {
    "none": None,
    "vgg": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # the ImageNet statistics
    "resnet": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),  # CIFAR-10's, as published
}


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """An image classification data set with a fixed train/test split.

    The tensors are shared through the load cache: treat them as read-only.

    Attributes:
        name: one of `DATASETS`.
        x_train: (N, C, H, W) float32 images: in [0, 1] if `normalize` is "none", else
            `(x - mean[c]) / std[c]` of those with the (mean, std) of `NORMALIZATIONS[normalize]`.
        y_train: (N,) int64 labels in [0, num_classes).
        x_test: (M, C, H, W) float32 images, scaled like `x_train`.
        y_test: (M,) int64 labels.
        num_classes: number of classes.
        split_seed: seed of the train/test split (recorded even where the split is official).
        normalize: key of `NORMALIZATIONS` that was applied to the images; "none" by default.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    split_seed: int
    normalize: str = "none"  # a default, so Datasets built by hand stay in [0, 1] as before

    def __post_init__(self) -> None:
        # Catch hand-built data sets with the wrong layout here, not deep inside a training step.
        for split, x, y in (
            ("train", self.x_train, self.y_train),
            ("test", self.x_test, self.y_test),
        ):
            if x.ndim != 4 or x.dtype != torch.float32:
                raise DataError(
                    f"{self.name}: x_{split} must be a (N, C, H, W) float32 tensor, "
                    f"got shape {tuple(x.shape)} dtype {x.dtype}"
                )
            if y.ndim != 1 or y.dtype != torch.int64:
                raise DataError(
                    f"{self.name}: y_{split} must be a (N,) int64 tensor, "
                    f"got shape {tuple(y.shape)} dtype {y.dtype}"
                )
            if len(x) != len(y):
                raise DataError(f"{self.name}: {len(x)} {split} images but {len(y)} labels")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise DataError(
                f"{self.name}: train images {tuple(self.x_train.shape[1:])} and test images "
                f"{tuple(self.x_test.shape[1:])} differ in shape"
            )
        _normalization(self.name, self.normalize, self.input_shape[0])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        c, h, w = self.x_train.shape[1:]
        return (int(c), int(h), int(w))

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary, for checkpoint metadata and result keys.

        Returns:
            {"name", "split_seed", "n_train", "n_test", "input_shape", "num_classes",
            "normalize"}, plus "mean" and "std" when `normalize` is not "none"; sequences are
            lists so the dict survives a JSON round trip unchanged.
        """
        desc: dict[str, Any] = {
            "name": self.name,
            "split_seed": int(self.split_seed),
            "n_train": int(len(self.y_train)),
            "n_test": int(len(self.y_test)),
            "input_shape": list(self.input_shape),
            "num_classes": int(self.num_classes),
            "normalize": self.normalize,
        }
        stats = NORMALIZATIONS[self.normalize]
        if stats is not None:
            # The values themselves, so a result still says what was done if the table changes.
            desc["mean"], desc["std"] = list(stats[0]), list(stats[1])
        return desc


def load_dataset(
    name: str,
    *,
    root: str | Path | None = None,
    seed: int = 0,
    limit: int | None = None,
    normalize: str = "none",
) -> Dataset:
    """Load a data set by name; nothing is downloaded.

    Args:
        name: one of `DATASETS`.
        root: folder holding the files of `mnist` / `cifar10` / `cifar100` (ignored for
            `digits`).
            mnist: train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte,
            t10k-labels-idx1-ubyte, each plain or with a `.gz` suffix.
            cifar10: data_batch_1..5 and test_batch, in `root` or `root/cifar-10-batches-py`.
            cifar100: train and test, in `root` or `root/cifar-100-python`; the labels are the
            100 fine labels.
        seed: seed of the stratified train/test split of `digits`; mnist, cifar10 and cifar100
            use their official split and only record the seed.
        limit: keep only the first `limit` training and the first `limit` test samples.
        normalize: a key of `NORMALIZATIONS`: "none" keeps images in [0, 1]; "vgg" and "resnet"
            map channel c to `(x - mean[c]) / std[c]` and need 3-channel images.

    Returns:
        A cached, frozen `Dataset`; its tensors are shared, so never modify them in place.

    Raises:
        DataError: unknown name, bad arguments, a normalisation that does not fit the images,
            missing folder or files, or a wrong file format.
    """
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}; choose one of: {', '.join(DATASETS)}")
    # Checked before any file is read; whether the channels fit is checked once images are in.
    _normalization(name, normalize, None)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise DataError(f"{name}: seed must be an int, got {seed!r}")
    if limit is not None and (
        isinstance(limit, bool) or not isinstance(limit, int | np.integer) or limit < 1
    ):
        raise DataError(f"{name}: limit must be a positive int or None, got {limit!r}")
    seed = int(seed)
    limit = None if limit is None else int(limit)

    if name == "digits":
        # root is ignored, so keep it out of the cache key: one copy however it is called.
        return _load_cached(name, None, seed, limit, normalize, ())

    if root is None:
        raise DataError(
            f"{name}: a folder is needed (root=...); {name} is read from local files and never "
            f"downloaded. Expected files: {expected_files(name)}"
        )
    folder = Path(root).expanduser().resolve()
    files = find_files(name, folder)
    # Size and mtime in the key: files replaced in the same folder are read again, not served
    # stale from the cache.
    stamp = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    return _load_cached(name, str(folder), seed, limit, normalize, stamp)


def batches(
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Iterate over (xb, yb) mini-batches; every sample appears exactly once per pass.

    Args:
        x: (N, ...) inputs.
        y: (N, ...) targets.
        batch_size: samples per batch; the last batch holds the remainder.
        shuffle: visit samples in the order of `torch.randperm(N, generator=generator)`.
        generator: source of randomness for the shuffle, for reproducible epochs.

    Returns:
        An iterator of (xb, yb); unshuffled batches are views of `x` and `y`.
    """
    # Checked here, not inside the generator, so mistakes surface at the call, not at first next().
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"Invalid batch_size: {batch_size!r}")
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} samples but y has {len(y)}")
    order = None
    if shuffle:
        device = generator.device if generator is not None else torch.device("cpu")
        order = torch.randperm(len(x), generator=generator, device=device).to(x.device)
    return _iter_batches(x, y, batch_size, order)


def _iter_batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, order: torch.Tensor | None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for start in range(0, len(x), batch_size):
        if order is None:
            yield x[start : start + batch_size], y[start : start + batch_size]
        else:
            idx = order[start : start + batch_size]
            yield x[idx], y[idx.to(y.device)]


@functools.lru_cache(maxsize=4)  # small: a full cifar10 in float32 is ~0.7 GB
def _load_cached(
    name: str, root: str | None, seed: int, limit: int | None, normalize: str, stamp: tuple
) -> Dataset:
    if name == "digits":
        ds = _load_digits(seed, limit)
    else:
        assert root is not None
        read = read_mnist if name == "mnist" else functools.partial(read_cifar, name)
        ds = _from_arrays(name, read(Path(root), limit), seed)
    return _normalized(ds, normalize)


def _normalization(
    name: str, normalize: str, channels: int | None
) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The (mean, std) of `normalize`, or None for "none"; `channels=None` skips that check."""
    if not isinstance(normalize, str) or normalize not in NORMALIZATIONS:
        raise DataError(
            f"{name}: unknown normalize {normalize!r}; choose one of: {', '.join(NORMALIZATIONS)}"
        )
    stats = NORMALIZATIONS[normalize]
    if stats is not None and channels is not None and channels != len(stats[0]):
        raise DataError(
            f"{name}: normalize={normalize!r} needs images with {len(stats[0])} channels, "
            f"but {name} images have {channels} channel{'s' if channels != 1 else ''}"
        )
    return stats


def _normalized(ds: Dataset, normalize: str) -> Dataset:
    stats = _normalization(ds.name, normalize, ds.input_shape[0])
    if stats is None:
        return ds
    mean = torch.tensor(stats[0], dtype=torch.float32).view(-1, 1, 1)  # (C, 1, 1)
    std = torch.tensor(stats[1], dtype=torch.float32).view(-1, 1, 1)  # (C, 1, 1)
    # In place: `ds` was just loaded and never left `_load_cached`, so nothing else holds its
    # tensors, and a full data set is not held twice. Float32 arithmetic, as torchvision's
    # Normalize on a ToTensor image.
    for x in (ds.x_train, ds.x_test):
        x.sub_(mean).div_(std)  # (N, C, H, W)
    return dataclasses.replace(ds, normalize=normalize)


def _to_images(a: np.ndarray, scale: float) -> torch.Tensor:
    # Convert to float32 before dividing, so values equal torch's `uint8_tensor.float() / 255`;
    # the conversion copies, which also detaches the result from read-only file bytes.
    return torch.from_numpy(np.array(a, dtype=np.float32) / np.float32(scale))


def _to_labels(a: np.ndarray) -> torch.Tensor:
    # Always a copy: the source may be a read-only view of file bytes, which torch warns about.
    return torch.from_numpy(np.array(a, dtype=np.int64))


def _load_digits(seed: int, limit: int | None) -> Dataset:
    # Imported here: scikit-learn is slow to import and only `digits` needs it.
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = bunch.images[:, None, :, :]  # (1797, 1, 8, 8), values 0..16
    labels = bunch.target
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, labels, test_size=0.25, stratify=labels, random_state=seed
    )
    return Dataset(
        name="digits",
        x_train=_to_images(x_tr[:limit], 16.0),
        y_train=_to_labels(y_tr[:limit]),
        x_test=_to_images(x_te[:limit], 16.0),
        y_test=_to_labels(y_te[:limit]),
        num_classes=NUM_CLASSES["digits"],
        split_seed=seed,
    )


def _from_arrays(name: str, arrays: tuple[np.ndarray, ...], seed: int) -> Dataset:
    x_tr, y_tr, x_te, y_te = arrays
    return Dataset(
        name=name,
        x_train=_to_images(x_tr, 255.0),
        y_train=_to_labels(y_tr),
        x_test=_to_images(x_te, 255.0),
        y_test=_to_labels(y_te),
        num_classes=NUM_CLASSES[name],
        split_seed=seed,
    )
