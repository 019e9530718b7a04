"""The files of MNIST (idx, optionally gzipped) and CIFAR-10/100 (python pickles), read safely.

Each reader checks what it reads and raises :class:`DataError` with the file and the first
problem; CIFAR pickles go through an unpickler that allows numpy arrays and lists only, so a
hostile file cannot run code. :mod:`landscape.data` turns the arrays into data sets.
"""

from __future__ import annotations

import dataclasses
import gzip
import importlib
import io
import pickle
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "NUM_CLASSES",
    "DataError",
    "check_labels",
    "expected_files",
    "find_files",
    "read_cifar",
    "read_mnist",
]

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

NUM_CLASSES = {
    "digits": 10,
    "mnist": 10,
    "fashionmnist": 10,
    "cifar10": 10,
    "cifar100": 100,
    "svhn": 10,
}
# Where torchvision's MNIST / FashionMNIST keep the idx files under its root folder.
_IDX_SUBFOLDERS = {"mnist": "MNIST", "fashionmnist": "FashionMNIST"}


class DataError(ValueError):
    """A data set cannot be loaded: unknown name, missing folder or files, or a wrong format."""


# eq=False: tensor fields make a generated __eq__ ambiguous.
def expected_files(name: str) -> str:
    if name in _IDX_SUBFOLDERS:
        files = ", ".join(f"{f}[.gz]" for f in _MNIST_FILES)
        return f"{files} (in the folder or in its {_IDX_SUBFOLDERS[name]}/raw/)"
    if name in _CIFAR:
        return ", ".join((*_CIFAR[name].train_files, _CIFAR[name].test_file))
    return "(none: bundled with scikit-learn)"


def check_labels(name: str, what: str, labels: np.ndarray) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES[name]):
        raise DataError(
            f"{name}: {what} has labels in [{labels.min()}, {labels.max()}], "
            f"expected [0, {NUM_CLASSES[name] - 1}]"
        )


def _find_mnist(folder: Path, name: str = "mnist") -> list[Path]:
    """The four idx files of `name` (mnist, fashionmnist) in `folder` or torchvision's layout."""
    expected = expected_files(name)
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise DataError(f"{name}: folder {folder} {what}; expected files: {expected}")
    # torchvision's root holds MNIST/raw/ (FashionMNIST/raw/); accept it, raw/ and the folder.
    best: tuple[list[Path], list[str]] | None = None
    for cand in (folder, folder / _IDX_SUBFOLDERS[name] / "raw", folder / "raw"):
        found, missing = [], []
        for base in _MNIST_FILES:
            # Plain first: if both exist the plain file is what the user unpacked last.
            candidates = [cand / base, cand / f"{base}.gz"]
            path = next((p for p in candidates if p.is_file()), None)
            if path is None:
                missing.append(f"{base}[.gz]")
            else:
                found.append(path)
        if not missing:
            return found
        if best is None or len(missing) < len(best[1]):
            best = (found, missing)
    assert best is not None
    raise DataError(
        f"{name}: folder {folder} does not contain {', '.join(best[1])}; expected files: {expected}"
    )


def _read_bytes(name: str, path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{name}: cannot read {path}: {e}") from e


def _read_idx(path: Path, magic: int, ndim: int, name: str = "mnist") -> np.ndarray:
    """Parse one idx file (big-endian int32 header, then unsigned bytes) into a uint8 array."""
    raw = _read_bytes(name, path)
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(
            f"{name}: {path} is truncated: {len(raw)} bytes, shorter than the {header}-byte header"
        )
    got = int.from_bytes(raw[:4], "big")
    if got != magic:
        hint = ""
        if raw[:2] == b"\x1f\x8b":  # gzip's own magic: a compressed file without the suffix
            hint = "; it looks gzip-compressed, name it with a .gz suffix"
        raise DataError(
            f"{name}: {path} is not an idx file of the expected kind: magic number {got}, "
            f"expected {magic}{hint}"
        )
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    if any(d < 1 for d in dims):
        raise DataError(f"{name}: {path} has invalid dimensions {dims} in its header")
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        state = "truncated" if len(raw) < expected else "longer than its header says"
        raise DataError(
            f"{name}: {path} is {state}: {len(raw)} bytes, the header {dims} needs {expected}"
        )
    # A read-only view of the bytes: only the samples kept after `limit` are copied later.
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find_cifar(name: str, folder: Path) -> list[Path]:
    """The batch files of `name` (a key of `_CIFAR`): the training batches, then the test batch."""
    layout = _CIFAR[name]
    names = (*layout.train_files, layout.test_file)
    expected = expected_files(name)
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
    check_labels(name, str(path), labels)
    return data, labels


def find_files(name: str, folder: Path) -> list[Path]:
    """The files a load of ``name`` (mnist, fashionmnist, cifar10, cifar100) reads."""
    return _find_mnist(folder, name) if name in _IDX_SUBFOLDERS else _find_cifar(name, folder)


def read_mnist(folder: Path, limit: int | None, name: str = "mnist") -> tuple[np.ndarray, ...]:
    """(x_train (N, 1, H, W) uint8, y_train, x_test, y_test) of the idx files in ``folder``."""
    tr_img, tr_lab, te_img, te_lab = _find_mnist(folder, name)
    splits = []
    for img_path, lab_path in ((tr_img, tr_lab), (te_img, te_lab)):
        # Counts are compared on the full files, before `limit` cuts them.
        images = _read_idx(img_path, _IDX_IMAGES_MAGIC, 3, name)
        labels = _read_idx(lab_path, _IDX_LABELS_MAGIC, 1, name)
        if len(images) != len(labels):
            raise DataError(
                f"{name}: {img_path} holds {len(images)} images but {lab_path} holds "
                f"{len(labels)} labels"
            )
        check_labels(name, str(lab_path), labels)
        splits.append((images[:limit, None, :, :], labels[:limit]))  # (N, 1, H, W)
    (x_tr, y_tr), (x_te, y_te) = splits
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise DataError(
            f"{name}: train images are {x_tr.shape[2:]} but test images are {x_te.shape[2:]} "
            f"({tr_img}, {te_img})"
        )
    return x_tr, y_tr, x_te, y_te


def read_cifar(name: str, folder: Path, limit: int | None) -> tuple[np.ndarray, ...]:
    """(x_train (N, 3, 32, 32) uint8, y_train, x_test, y_test) of the batches in ``folder``."""
    paths = _find_cifar(name, folder)
    # Every batch is read (and validated) even with `limit`, so a limited load never hides a
    # broken file that the full load would reject.
    train = [_read_cifar_batch(name, p) for p in paths[:-1]]
    x_te, y_te = _read_cifar_batch(name, paths[-1])
    x_tr = np.concatenate([d for d, _ in train])[:limit]
    y_tr = np.concatenate([lab for _, lab in train])[:limit]
    # Rows are 1024 red, 1024 green, 1024 blue values, each a row-major 32x32 plane.
    return x_tr.reshape(-1, 3, 32, 32), y_tr, x_te[:limit].reshape(-1, 3, 32, 32), y_te[:limit]
