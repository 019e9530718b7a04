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
import gzip
import importlib
import io
import pickle
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

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

_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions (N, H, W)
_IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension (N,)


@dataclasses.dataclass(frozen=True)
class _CifarLayout:
    """Where one CIFAR data set keeps its pickled batches, and which key holds its labels."""

    title: str  # for messages: "CIFAR-10"
    train_files: tuple[str, ...]
    test_file: str
    subfolder: str  # what the official archive unpacks to
    label_key: str  # looked up as bytes (Python 2 pickles) or str (files re-saved by Python 3)


_CIFAR = {
    "cifar10": _CifarLayout(
        "CIFAR-10",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        "test_batch",
        "cifar-10-batches-py",
        "labels",
    ),
    # The 100 fine labels; the 20 coarse superclasses in b'coarse_labels' are not used.
    "cifar100": _CifarLayout("CIFAR-100", ("train",), "test", "cifar-100-python", "fine_labels"),
}

_NUM_CLASSES = {"digits": 10, "mnist": 10, "cifar10": 10, "cifar100": 100}


class DataError(ValueError):
    """A data set cannot be loaded: unknown name, missing folder or files, or a wrong format."""


# eq=False: tensor fields make a generated __eq__ ambiguous.
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
            f"downloaded. Expected files: {_expected_files(name)}"
        )
    folder = Path(root).expanduser().resolve()
    files = _find_mnist(folder) if name == "mnist" else _find_cifar(name, folder)
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
        if name == "mnist":
            ds = _load_mnist(Path(root), seed, limit)
        else:
            ds = _load_cifar(name, Path(root), seed, limit)
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


def _expected_files(name: str) -> str:
    if name == "mnist":
        return ", ".join(f"{f}[.gz]" for f in _MNIST_FILES)
    if name in _CIFAR:
        return ", ".join((*_CIFAR[name].train_files, _CIFAR[name].test_file))
    return "(none: bundled with scikit-learn)"


def _to_images(a: np.ndarray, scale: float) -> torch.Tensor:
    # Convert to float32 before dividing, so values equal torch's `uint8_tensor.float() / 255`;
    # the conversion copies, which also detaches the result from read-only file bytes.
    return torch.from_numpy(np.array(a, dtype=np.float32) / np.float32(scale))


def _to_labels(a: np.ndarray) -> torch.Tensor:
    # Always a copy: the source may be a read-only view of file bytes, which torch warns about.
    return torch.from_numpy(np.array(a, dtype=np.int64))


def _check_labels(name: str, what: str, labels: np.ndarray) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= _NUM_CLASSES[name]):
        raise DataError(
            f"{name}: {what} has labels in [{labels.min()}, {labels.max()}], "
            f"expected [0, {_NUM_CLASSES[name] - 1}]"
        )


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
        num_classes=_NUM_CLASSES["digits"],
        split_seed=seed,
    )


def _find_mnist(folder: Path) -> list[Path]:
    expected = _expected_files("mnist")
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise DataError(f"mnist: folder {folder} {what}; expected files: {expected}")
    found, missing = [], []
    for base in _MNIST_FILES:
        # Plain first: if both exist the plain file is what the user unpacked last.
        candidates = [folder / base, folder / f"{base}.gz"]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            missing.append(f"{base}[.gz]")
        else:
            found.append(path)
    if missing:
        raise DataError(
            f"mnist: folder {folder} does not contain {', '.join(missing)}; "
            f"expected files: {expected}"
        )
    return found


def _read_bytes(name: str, path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{name}: cannot read {path}: {e}") from e


def _read_idx(path: Path, magic: int, ndim: int) -> np.ndarray:
    """Parse one idx file (big-endian int32 header, then unsigned bytes) into a uint8 array."""
    raw = _read_bytes("mnist", path)
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(
            f"mnist: {path} is truncated: {len(raw)} bytes, shorter than the {header}-byte header"
        )
    got = int.from_bytes(raw[:4], "big")
    if got != magic:
        hint = ""
        if raw[:2] == b"\x1f\x8b":  # gzip's own magic: a compressed file without the suffix
            hint = "; it looks gzip-compressed, name it with a .gz suffix"
        raise DataError(
            f"mnist: {path} is not an idx file of the expected kind: magic number {got}, "
            f"expected {magic}{hint}"
        )
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    if any(d < 1 for d in dims):
        raise DataError(f"mnist: {path} has invalid dimensions {dims} in its header")
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        state = "truncated" if len(raw) < expected else "longer than its header says"
        raise DataError(
            f"mnist: {path} is {state}: {len(raw)} bytes, the header {dims} needs {expected}"
        )
    # A read-only view of the bytes: only the samples kept after `limit` are copied later.
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _load_mnist(folder: Path, seed: int, limit: int | None) -> Dataset:
    paths = _find_mnist(folder)
    tr_img, tr_lab, te_img, te_lab = paths
    splits = []
    for img_path, lab_path in ((tr_img, tr_lab), (te_img, te_lab)):
        # Counts are compared on the full files, before `limit` cuts them.
        images = _read_idx(img_path, _IDX_IMAGES_MAGIC, 3)
        labels = _read_idx(lab_path, _IDX_LABELS_MAGIC, 1)
        if len(images) != len(labels):
            raise DataError(
                f"mnist: {img_path} holds {len(images)} images but {lab_path} holds "
                f"{len(labels)} labels"
            )
        _check_labels("mnist", str(lab_path), labels)
        splits.append((images[:limit, None, :, :], labels[:limit]))  # (N, 1, H, W)
    (x_tr, y_tr), (x_te, y_te) = splits
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise DataError(
            f"mnist: train images are {x_tr.shape[2:]} but test images are {x_te.shape[2:]} "
            f"({tr_img}, {te_img})"
        )
    return Dataset(
        name="mnist",
        x_train=_to_images(x_tr, 255.0),
        y_train=_to_labels(y_tr),
        x_test=_to_images(x_te, 255.0),
        y_test=_to_labels(y_te),
        num_classes=_NUM_CLASSES["mnist"],
        split_seed=seed,
    )


def _find_cifar(name: str, folder: Path) -> list[Path]:
    """The batch files of `name` (a key of `_CIFAR`): the training batches, then the test batch."""
    layout = _CIFAR[name]
    names = (*layout.train_files, layout.test_file)
    expected = _expected_files(name)
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise DataError(f"{name}: folder {folder} {what}; expected files: {expected}")
    # The official archive unpacks to a subfolder, so accept the folder above it too.
    candidates = [folder, folder / layout.subfolder]
    best_missing: list[str] | None = None
    for cand in candidates:
        missing = [n for n in names if not (cand / n).is_file()]
        if not missing:
            return [cand / n for n in names]
        if best_missing is None or len(missing) < len(best_missing):
            best_missing = missing
    assert best_missing is not None
    raise DataError(
        f"{name}: neither folder {folder} nor {folder / layout.subfolder} contains "
        f"{', '.join(best_missing)}; expected files: {expected}"
    )


def _import_attr(module: str, attr: str) -> Callable[..., Any] | None:
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        return None


def _safe_globals() -> dict[tuple[str, str], Any]:
    """The only globals a CIFAR batch may name, each mapped to the object it means."""
    # numpy 2 moved numpy.core to numpy._core; old files (numpy 1, Python 2) name numpy.core.
    # Resolve to whichever this numpy has, importing the deprecated path only as a fallback.
    reconstruct = _import_attr("numpy._core.multiarray", "_reconstruct") or _import_attr(
        "numpy.core.multiarray", "_reconstruct"
    )
    frombuffer = _import_attr("numpy._core.numeric", "_frombuffer") or _import_attr(
        "numpy.core.numeric", "_frombuffer"
    )
    import _codecs

    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        # Builds an ndarray from shape/dtype/bytes: how numpy pickles arrays (protocol <= 4).
        ("numpy.core.multiarray", "_reconstruct"): reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): reconstruct,
        # numpy's protocol-5 path (Python's default protocol): array from a byte buffer.
        ("numpy.core.numeric", "_frombuffer"): frombuffer,
        ("numpy._core.numeric", "_frombuffer"): frombuffer,
        # Python 3 writes bytes as _codecs.encode(str, "latin1") under protocols 0-2.
        ("_codecs", "encode"): _codecs.encode,
        ("builtins", "list"): list,
        ("__builtin__", "list"): list,  # Python 2 spelling
    }
    return {k: v for k, v in allowed.items() if v is not None}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global outside `_safe_globals`.

    A pickle names functions that run while it loads (that is how `__reduce__` works), so plain
    `pickle.load` on a user's file can run any code; here only numpy array construction can.
    """

    _allowed = _safe_globals()

    def __init__(self, file: io.BufferedIOBase, path: Path, dataset: str) -> None:
        super().__init__(file, encoding="bytes")
        self._path = path
        self._dataset = dataset  # a key of `_CIFAR`, for messages

    def find_class(self, module: str, name: str) -> Any:
        obj = self._allowed.get((module, name))
        if obj is None:
            raise DataError(
                f"{self._dataset}: {self._path} refers to the forbidden global {module}.{name}; "
                f"only numpy arrays, lists and dicts are allowed in a "
                f"{_CIFAR[self._dataset].title} batch"
            )
        return obj


def _read_cifar_batch(name: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read and check one pickled batch of `name` (a key of `_CIFAR`): (N, 3072) data, labels."""
    layout = _CIFAR[name]
    key = layout.label_key
    bkey = repr(key.encode())  # b'labels', as the key is spelled in messages
    try:
        with path.open("rb") as f:
            batch = _RestrictedUnpickler(f, path, name).load()
    except DataError:
        raise
    except Exception as e:  # a corrupt pickle raises nearly anything (EOFError, KeyError, ...)
        raise DataError(
            f"{name}: {path} is not a readable {layout.title} pickle batch: {e!r}"
        ) from e
    if not isinstance(batch, dict):
        raise DataError(f"{name}: {path} holds a {type(batch).__name__}, expected a dict")
    # encoding="bytes" keeps Python 2 keys as bytes; files re-saved by Python 3 may use str.
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(key.encode(), batch.get(key))
    if data is None or labels is None:
        raise DataError(
            f"{name}: {path} lacks the keys b'data' and/or {bkey} "
            f"(found {sorted(map(repr, batch))})"
        )
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise DataError(
            f"{name}: {path}: b'data' must be a (N, 3072) uint8 array, got "
            f"{type(data).__name__} {getattr(data, 'dtype', '')} {getattr(data, 'shape', '')}"
        )
    if data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{name}: {path}: b'data' has shape {data.shape}, expected (N, 3072)")
    try:
        labels = np.asarray(labels)
    except Exception as e:
        raise DataError(f"{name}: {path}: {bkey} is not a list of ints: {e!r}") from e
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{name}: {path}: {bkey} must be a list of ints, got {labels.dtype}")
    if len(labels) != len(data):
        raise DataError(f"{name}: {path} holds {len(data)} images but {len(labels)} labels")
    _check_labels(name, str(path), labels)
    return data, labels


def _load_cifar(name: str, folder: Path, seed: int, limit: int | None) -> Dataset:
    paths = _find_cifar(name, folder)
    # Every batch is read (and validated) even with `limit`, so a limited load never hides a
    # broken file that the full load would reject.
    train = [_read_cifar_batch(name, p) for p in paths[:-1]]
    x_te, y_te = _read_cifar_batch(name, paths[-1])
    x_tr = np.concatenate([d for d, _ in train])[:limit]
    y_tr = np.concatenate([lab for _, lab in train])[:limit]
    x_te, y_te = x_te[:limit], y_te[:limit]
    # Rows are 1024 red, 1024 green, 1024 blue values, each a row-major 32x32 plane.
    return Dataset(
        name=name,
        x_train=_to_images(x_tr.reshape(-1, 3, 32, 32), 255.0),
        y_train=_to_labels(y_tr),
        x_test=_to_images(x_te.reshape(-1, 3, 32, 32), 255.0),
        y_test=_to_labels(y_te),
        num_classes=_NUM_CLASSES[name],
        split_seed=seed,
    )
