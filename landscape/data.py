"""Data sets: `digits` (bundled with scikit-learn) and the sources users have on disk.

Nothing is ever downloaded. `SOURCES` says how each name is found and read: `mnist`,
`fashionmnist`, `cifar10`, `cifar100`, `svhn` from a folder in torchvision's layouts (or the bare
files), `npz` from one `.npz` file, `imagefolder` from a `train/<class>/`, `test/<class>/` tree. Every data set comes back as a frozen `Dataset` of float32 images, shape (N, C, H, W), and
int64 labels. Images are in [0, 1] unless a per-channel normalisation from `NORMALIZATIONS` is
asked for (`load_dataset(..., normalize="vgg")`), which maps each channel to `(x - mean) / std`
as the mode-connectivity research code does for CIFAR. Loads are cached, so the returned tensors
are shared between callers and must be treated as read-only (never modify them in place;
`.clone()` first if you need to).
"""

from __future__ import annotations

import dataclasses
import functools
import io
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from landscape.datafiles import NUM_CLASSES, DataError
from landscape.datasources import (
    DATASETS,
    SOURCES,
    Arrays,
    DataSource,
    expected,
    source_options,
    split_name,
)

__all__ = [
    "DATASETS",
    "NORMALIZATIONS",
    "SOURCES",
    "DataError",
    "DataSource",
    "Dataset",
    "batches",
    "check_classes",
    "dataset_from_meta",
    "load_dataset",
    "source_meta",
    "split_name",
]


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
        normalize: key of `NORMALIZATIONS` that was applied to the images; "none" by default;
            "file" when the (mean, std) came with the data (`stats`, from an npz file).
        stats: the per-channel (mean, std) applied when `normalize` is "file".
        info: JSON-able facts about the source for `describe()`: a content fingerprint (npz:
            "sha256"; imagefolder: "fingerprint"), class names, image size.
        classes_from_labels: `num_classes` is the largest label + 1, not declared by the data.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    split_seed: int
    normalize: str = "none"  # a default, so Datasets built by hand stay in [0, 1] as before
    stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None  # when normalize == "file"
    info: dict[str, Any] = dataclasses.field(default_factory=dict)  # merged into describe()
    classes_from_labels: bool = False  # num_classes inferred as max label + 1

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
        if self.normalize == "file":
            if self.stats is None or len(self.stats[0]) != self.input_shape[0]:
                raise DataError(f"{self.name}: normalize='file' needs one (mean, std) a channel")
        else:
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
            "normalize"}, plus "mean" and "std" when `normalize` is not "none", plus `info`
            (fingerprint, classes, size); sequences are lists so the dict survives a JSON round
            trip unchanged.
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
        stats = self.stats if self.normalize == "file" else NORMALIZATIONS[self.normalize]
        if stats is not None:
            # The values themselves, so a result still says what was done if the table changes.
            desc["mean"], desc["std"] = list(stats[0]), list(stats[1])
        return {**desc, **self.info}


def load_dataset(
    name: str,
    *,
    root: str | Path | None = None,
    seed: int = 0,
    limit: int | None = None,
    normalize: str = "none",
    size: int | str | tuple[int, int] | None = None,
    channels: int | None = None,
) -> Dataset:
    """Load a data set by name; nothing is downloaded.

    Args:
        name: one of `DATASETS`; `npz:<path>` and `imagefolder:<dir>` name the root too.
        root: where the files are (ignored for `digits`; `landscape.datasources.SOURCES`):
            mnist / fashionmnist: the four idx files (plain or `.gz`) in `root`,
            `root/MNIST/raw` (`root/FashionMNIST/raw`, torchvision's layout) or `root/raw`.
            cifar10 / cifar100: the pickled batches in `root` or `root/cifar-10-batches-py`
            (`root/cifar-100-python`; its 100 fine labels). svhn: train_32x32.mat and
            test_32x32.mat. npz: the `.npz` file (x_train, y_train, x_test, y_test; optional
            classes, mean, std: then `normalize` is "file"). imagefolder: a folder with
            train/<class>/*.png|jpg and test/<class>/..., labels by sorted class name.
        seed: seed of the stratified train/test split of `digits`; the others have their split
            and only record the seed.
        limit: keep only the first `limit` training and the first `limit` test samples.
        normalize: a key of `NORMALIZATIONS`: "none" keeps images in [0, 1]; "vgg" and "resnet"
            map channel c to `(x - mean[c]) / std[c]` and need 3-channel images.
        size: imagefolder: resize every image to (H, W) (an int or "HxW" also do); default:
            the first training image's size.
        channels: imagefolder: 1 (grey) or 3 (RGB); default: the first training image's.

    Returns:
        A cached, frozen `Dataset`; its tensors are shared, so never modify them in place.

    Raises:
        DataError: unknown name, bad arguments, a normalisation that does not fit the images,
            missing folder or files, or a wrong file format (shapes, dtypes, label range).
    """
    name, named_root = split_name(name) if isinstance(name, str) else (name, None)
    root = named_root if named_root is not None and root is None else root
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}; choose one of: {', '.join(DATASETS)}")
    # Checked before any file is read; whether the channels fit is checked once images are in.
    _normalization(name, normalize, None)
    seed, limit = _int_args(name, seed, limit)
    options = source_options(name, size, channels)
    if name == "digits":
        # root is ignored, so keep it out of the cache key: one copy however it is called.
        return _load_cached(name, None, seed, limit, normalize, (), ())
    if root is None:
        raise DataError(
            f"{name}: {'a file' if name == 'npz' else 'a folder'} is needed (root=...); {name} "
            f"is read from local files and never downloaded. Expected files: {expected(name)}"
        )
    folder = Path(root).expanduser().resolve()
    files = SOURCES[name].find(folder)
    # Size and mtime in the key: files replaced in the same folder are read again, not served
    # stale from the cache.
    stamp = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    return _load_cached(name, str(folder), seed, limit, normalize, stamp, options)


def _int_args(name: str, seed: Any, limit: Any) -> tuple[int, int | None]:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise DataError(f"{name}: seed must be an int, got {seed!r}")
    if limit is not None and (
        isinstance(limit, bool) or not isinstance(limit, int | np.integer) or limit < 1
    ):
        raise DataError(f"{name}: limit must be a positive int or None, got {limit!r}")
    return int(seed), None if limit is None else int(limit)


def dataset_from_meta(data: Mapping[str, Any], *, data_root: str | Path | None = None) -> Dataset:
    """The data set a checkpoint's metadata `data` dict names ({name, split_seed, root?,
    normalize?, size?, channels?}); `data_root` overrides the recorded root."""
    opts = {k: data[k] for k in ("size", "channels") if data.get(k) is not None}
    return load_dataset(
        str(data["name"]),
        root=data_root if data_root is not None else data.get("root"),
        seed=int(data.get("split_seed", 0)),
        normalize=str(data.get("normalize", "none")),
        **opts,
    )


def source_meta(name: str, root: str | Path | None, ds: Dataset) -> dict[str, Any]:
    """What checkpoint metadata must add to {name, split_seed} to find `ds` again: the canonical
    name, and for npz / imagefolder the absolute root and the imagefolder options used."""
    name, named_root = split_name(name)
    root = root if root is not None else named_root
    src = SOURCES.get(name)
    if src is None or not src.record_root or root is None:
        return {"name": name}
    meta = {"name": name, "root": str(Path(root).expanduser().resolve())}
    return {**meta, **{k: ds.info[k] for k in src.options if k in ds.info}}


def check_classes(ds: Dataset, outputs: int, *, what: str = "model") -> None:
    """Raise DataError unless a model with `outputs` logits fits the classes of `ds`.

    A data set whose class count is only its largest label + 1 may use fewer classes than the
    model outputs; any other difference is an error.
    """
    if outputs == ds.num_classes or (ds.classes_from_labels and outputs > ds.num_classes):
        return
    raise DataError(
        f"{what} outputs {outputs} classes but the data set {ds.name} has {ds.num_classes}"
    )


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
    name: str,
    root: str | None,
    seed: int,
    limit: int | None,
    normalize: str,
    stamp: tuple,
    options: tuple,
) -> Dataset:
    if name == "digits":
        return _normalized(_load_digits(seed, limit), normalize)
    assert root is not None
    arrays = SOURCES[name].read(Path(root), limit, **dict(options))
    if arrays.stats is not None and normalize != "none":
        raise DataError(
            f"{name}: {root} carries its own mean/std, so normalize must be 'none' (got "
            f"{normalize!r}); the file's statistics are applied"
        )
    ds = _from_arrays(name, arrays, seed)
    return _normalized(ds, "file" if arrays.stats is not None else normalize)


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
    file_stats = normalize == "file"
    stats = ds.stats if file_stats else _normalization(ds.name, normalize, ds.input_shape[0])
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
    x_tr, x_te, y_tr, y_te = _digits_split(seed)
    return Dataset(
        name="digits",
        x_train=_to_images(x_tr[:limit], 16.0),
        y_train=_to_labels(y_tr[:limit]),
        x_test=_to_images(x_te[:limit], 16.0),
        y_test=_to_labels(y_te[:limit]),
        num_classes=NUM_CLASSES["digits"],
        split_seed=seed,
    )


_SPLIT = ("x_train", "x_test", "y_train", "y_test")


def _digits_split(seed: int) -> tuple[np.ndarray, ...]:
    """scikit-learn's digits (1797 8x8 images, values 0..16) split 75/25, stratified, with
    ``seed``: (x_train, x_test, y_train, y_test). Kept in ``home()/cache`` once computed:
    importing scikit-learn took ~1 s of every command and training process on digits."""
    from importlib.metadata import version

    from landscape.store import atomic_write, home

    path = home() / "cache" / f"digits-split{seed}-sklearn{version('scikit-learn')}.npz"
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = tuple(f[k] for k in _SPLIT)
        if sum(len(a) for a in arrays[:2]) == 1797 and arrays[0].shape[1:] == (1, 8, 8):
            return arrays
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        pass  # missing or unreadable: split again (and rewrite it)
    # Imported here: scikit-learn is slow to import and only `digits` needs it.
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = bunch.images[:, None, :, :]  # (1797, 1, 8, 8), values 0..16
    arrays = tuple(
        train_test_split(images, bunch.target, test_size=0.25, stratify=bunch.target,
                         random_state=seed)
    )  # fmt: skip
    blob = io.BytesIO()
    np.savez(blob, **dict(zip(_SPLIT, arrays, strict=True)))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, blob.getvalue())
    except OSError:
        pass  # a read-only home: split again next time
    return arrays


def _from_arrays(name: str, arrays: Arrays, seed: int) -> Dataset:
    def images(x: np.ndarray) -> torch.Tensor:
        # uint8 files hold 0..255; float files are taken as they are.
        return _to_images(x, 255.0 if x.dtype == np.uint8 else 1.0)

    return Dataset(
        name=name,
        x_train=images(arrays.x_train),
        y_train=_to_labels(arrays.y_train),
        x_test=images(arrays.x_test),
        y_test=_to_labels(arrays.y_test),
        num_classes=arrays.num_classes,
        split_seed=seed,
        stats=arrays.stats,
        info=dict(arrays.info),
        classes_from_labels=arrays.classes_from_labels,
    )
