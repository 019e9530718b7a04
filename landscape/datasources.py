"""Data sets users have on disk: a `.npz` file of arrays, an image-folder tree, SVHN `.mat` files.

Each reader checks what it reads and raises :class:`DataError` naming the file and the first
problem; nothing here runs code from a file (`np.load(allow_pickle=False)`, `scipy.io.loadmat`,
Pillow decoding). Readers return :class:`Arrays`; :mod:`landscape.data` turns them into data sets.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from landscape.datafiles import (
    NUM_CLASSES,
    DataError,
    check_labels,
    expected_files,
    find_files,
    read_cifar,
    read_mnist,
)

__all__ = [
    "DATASETS",
    "IMAGE_SUFFIXES",
    "NPZ_KEYS",
    "SOURCES",
    "Arrays",
    "DataSource",
    "expected",
    "find_imagefolder",
    "find_npz",
    "find_svhn",
    "read_imagefolder",
    "read_npz",
    "read_svhn",
    "source_options",
    "split_name",
]

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_SVHN_FILES = ("train_32x32.mat", "test_32x32.mat")


@dataclasses.dataclass(frozen=True, eq=False)
class Arrays:
    """What a reader found: images (N, C, H, W) uint8 (scaled by 1/255 later) or float32."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    info: dict[str, Any] = dataclasses.field(default_factory=dict)  # JSON-able, for describe()
    stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None  # (mean, std) of the file
    classes_from_labels: bool = False  # num_classes is max label + 1, not declared


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _images(name: str, what: str, x: np.ndarray) -> np.ndarray:
    """`x` as (N, C, H, W): (N, H, W) gains C = 1; (N, H, W, C) with C in 1/3 is transposed."""
    if x.dtype != np.uint8 and not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"{name}: {what} must be float or uint8 images, got dtype {x.dtype}")
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)  # channels-last to channels-first
    elif x.ndim != 4:
        raise DataError(
            f"{name}: {what} has shape {x.shape}; expected (N, C, H, W), (N, H, W) or "
            f"(N, H, W, C) with C in 1 or 3"
        )
    if len(x) == 0 or min(x.shape[1:]) < 1:
        raise DataError(f"{name}: {what} has shape {x.shape}: no images")
    if x.dtype != np.uint8:
        x = x.astype(np.float32)
        if not np.isfinite(x).all():
            raise DataError(f"{name}: {what} holds NaN or infinite values")
    return np.ascontiguousarray(x)


def _labels(name: str, what: str, y: np.ndarray, n: int) -> np.ndarray:
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataError(
            f"{name}: {what} must be a 1-D integer array of labels, got shape {y.shape} "
            f"dtype {y.dtype}"
        )
    if len(y) != n:
        raise DataError(f"{name}: {what} holds {len(y)} labels but there are {n} images")
    if y.size and y.min() < 0:
        raise DataError(f"{name}: {what} has negative labels (min {y.min()})")
    return y


def _class_count(path: Path, classes: np.ndarray | None, top: int) -> tuple[int, list | None]:
    """(number of classes, class names or None) from an explicit `classes` array or the labels."""
    if classes is None:
        return top + 1, None
    if classes.ndim == 0 and np.issubdtype(classes.dtype, np.integer):
        count, names = int(classes), None
    elif classes.ndim == 1:
        count, names = len(classes), [str(c) for c in classes.tolist()]
    else:
        raise DataError(
            f"npz: {path}: 'classes' must be a class count or a 1-D array of class names, "
            f"got shape {classes.shape}"
        )
    if count < 1 or top >= count:
        raise DataError(
            f"npz: {path}: labels go up to {top} but 'classes' declares {count} classes; "
            f"labels must lie in [0, {count - 1}]"
        )
    return count, names


def _stats(path: Path, arrays: dict[str, np.ndarray], channels: int) -> tuple | None:
    if "mean" not in arrays and "std" not in arrays:
        return None
    if "mean" not in arrays or "std" not in arrays:
        raise DataError(f"npz: {path}: 'mean' and 'std' go together; found only one of them")
    out = []
    for key in ("mean", "std"):
        v = np.broadcast_to(np.asarray(arrays[key], dtype=np.float64).reshape(-1), (channels,))
        if v.shape != (channels,) or not np.isfinite(v).all():
            raise DataError(f"npz: {path}: {key!r} must be {channels} finite values")
        out.append(tuple(float(a) for a in v))
    if min(out[1]) <= 0:
        raise DataError(f"npz: {path}: 'std' must be positive, got {list(out[1])}")
    return out[0], out[1]


def find_npz(path: Path) -> list[Path]:
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise DataError(
            f"npz: {path} {what}; name a .npz file holding {', '.join(NPZ_KEYS)} "
            f"(optional: classes, mean, std)"
        )
    return [path]


def _open_npz(path: Path) -> dict[str, np.ndarray]:
    # np.load would take any other file for a pickle (or a bare .npy): check it is a zip first.
    if not zipfile.is_zipfile(path):
        raise DataError(f"npz: cannot read {path}: not a .npz (zip) archive of arrays")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ValueError as e:  # what numpy raises for an object array when pickles are refused
        raise DataError(
            f"npz: {path} holds a pickled object array, which is refused (it could run code); "
            f"save plain numeric arrays: {e}"
        ) from e
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"npz: cannot read {path} as a .npz file: {e}") from e


def read_npz(path: Path, limit: int | None) -> Arrays:
    """The arrays of a `.npz` file: x_train, y_train, x_test, y_test; optional classes, mean, std."""
    arrays = _open_npz(find_npz(path)[0])
    missing = [k for k in NPZ_KEYS if k not in arrays]
    if missing:
        raise DataError(
            f"npz: {path} lacks {', '.join(missing)} (found: {', '.join(sorted(arrays)) or 'none'})"
        )
    x_tr = _images("npz", f"{path}: x_train", arrays["x_train"])
    x_te = _images("npz", f"{path}: x_test", arrays["x_test"])
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise DataError(
            f"npz: {path}: train images {x_tr.shape[1:]} and test images {x_te.shape[1:]} "
            f"differ in shape (C, H, W)"
        )
    y_tr = _labels("npz", f"{path}: y_train", arrays["y_train"], len(x_tr))
    y_te = _labels("npz", f"{path}: y_test", arrays["y_test"], len(x_te))
    if x_tr.dtype != x_te.dtype:
        raise DataError(f"npz: {path}: x_train is {x_tr.dtype} but x_test is {x_te.dtype}")
    top = int(max(y_tr.max(), y_te.max()))
    count, names = _class_count(path, arrays.get("classes"), top)
    info: dict[str, Any] = {"sha256": _sha256(path)}
    if names is not None:
        info["classes"] = names
    return Arrays(
        x_tr[:limit],
        y_tr[:limit],
        x_te[:limit],
        y_te[:limit],
        count,
        info,
        _stats(path, arrays, x_tr.shape[1]),
        classes_from_labels="classes" not in arrays,
    )


def find_svhn(folder: Path) -> list[Path]:
    """SVHN's `train_32x32.mat` and `test_32x32.mat`, in `folder` (torchvision's root)."""
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise DataError(f"svhn: folder {folder} {what}; expected files: {', '.join(_SVHN_FILES)}")
    for cand in (folder, folder / "SVHN", folder / "svhn"):
        if all((cand / f).is_file() for f in _SVHN_FILES):
            return [cand / f for f in _SVHN_FILES]
    missing = [f for f in _SVHN_FILES if not (folder / f).is_file()]
    raise DataError(f"svhn: folder {folder} does not contain {', '.join(missing)}")


def _read_svhn_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from scipy.io import loadmat  # scipy is slow to import; only svhn needs it

    try:
        mat = loadmat(path, variable_names=["X", "y"])
    except Exception as e:  # a corrupt or v7.3 (HDF5) file raises many kinds
        raise DataError(f"svhn: cannot read {path} as a MATLAB (v5) file: {e}") from e
    x, y = mat.get("X"), mat.get("y")
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4 or x.shape[2] != 3:
        raise DataError(
            f"svhn: {path}: 'X' must be a (32, 32, 3, N) uint8 array, got "
            f"{getattr(x, 'dtype', type(x).__name__)} {getattr(x, 'shape', '')}"
        )
    if not isinstance(y, np.ndarray) or not np.issubdtype(y.dtype, np.number):
        raise DataError(f"svhn: {path}: 'y' must be a numeric array of labels")
    y = y.reshape(-1).astype(np.int64)
    if len(y) != x.shape[3]:
        raise DataError(f"svhn: {path} holds {x.shape[3]} images but {len(y)} labels")
    y[y == 10] = 0  # SVHN writes the digit 0 as label 10, as torchvision maps it
    check_labels("svhn", str(path), y)
    return x.transpose(3, 2, 0, 1), y  # (H, W, C, N) -> (N, C, H, W)


def read_svhn(folder: Path, limit: int | None) -> Arrays:
    (x_tr, y_tr), (x_te, y_te) = (_read_svhn_file(p) for p in find_svhn(folder))
    return Arrays(
        np.ascontiguousarray(x_tr[:limit]),
        y_tr[:limit],
        np.ascontiguousarray(x_te[:limit]),
        y_te[:limit],
        10,
    )


def _class_folders(split_dir: Path) -> dict[str, list[Path]]:
    return {
        d.name: sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        for d in sorted(split_dir.iterdir())
        if d.is_dir() and not d.name.startswith(".")
    }


def _image_tree(root: Path) -> tuple[list[str], dict[str, dict[str, list[Path]]]]:
    """(sorted class names, {split: {class: sorted image paths}}) of `root/{train,test}/<class>`."""
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise DataError(f"imagefolder: {root} {what}; expected train/<class>/*.png|jpg and test/")
    tree = {}
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise DataError(f"imagefolder: {root} has no {split}/ folder of class folders")
        tree[split] = _class_folders(root / split)
        empty = [c for c, files in tree[split].items() if not files]
        if not tree[split] or empty:
            raise DataError(
                f"imagefolder: {root / split} needs class folders holding .png/.jpg images"
                + (f"; empty: {', '.join(empty)}" if empty else "")
            )
    classes = sorted(tree["train"])
    extra = sorted(set(tree["test"]) - set(classes))
    if extra:
        raise DataError(f"imagefolder: test classes {extra} have no train/ folder in {root}")
    return classes, tree


def find_imagefolder(root: Path) -> list[Path]:
    _, tree = _image_tree(root)
    return [p for split in tree.values() for files in split.values() for p in files]


def _fingerprint(root: Path, files: list[Path]) -> str:
    """sha256 of the sorted (relative path, size, mtime) of the images: changes with the data."""
    h = hashlib.sha256()
    for p in sorted(files):
        st = p.stat()
        h.update(f"{p.relative_to(root).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _decode(path: Path, size: tuple[int, int] | None, channels: int | None) -> np.ndarray:
    """One image as (C, H, W) uint8, converted to `channels` and resized to `size` (H, W)."""
    try:
        from PIL import Image
    except ImportError as e:
        raise DataError("imagefolder: reading images needs Pillow (pip install pillow)") from e
    try:
        with Image.open(path) as im:
            if channels is None:
                channels = 1 if im.mode in ("1", "L", "I", "I;16", "F") else 3
            im = im.convert("L" if channels == 1 else "RGB")
            if size is not None and im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            a = np.asarray(im, dtype=np.uint8)
    except Exception as e:  # truncated, not an image, decompression bomb, ...
        raise DataError(f"imagefolder: cannot read image {path}: {e}") from e
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)  # (C, H, W)


def read_imagefolder(
    root: Path,
    limit: int | None,
    *,
    size: tuple[int, int] | None = None,
    channels: int | None = None,
) -> Arrays:
    """`root/train/<class>/*` and `root/test/<class>/*` as uint8 images of `size` (H, W).

    Labels index the class folders sorted by name. `size` defaults to the first training image's
    size; `channels` (1 grey, 3 RGB) to the first training image's mode.
    """
    classes, tree = _image_tree(root)
    first = tree["train"][classes[0]][0]
    probe = _decode(first, size, channels)
    size, channels = size or tuple(probe.shape[1:]), channels or probe.shape[0]
    out = []
    for split in ("train", "test"):
        pairs = [(p, classes.index(c)) for c, files in tree[split].items() for p in files]
        pairs = pairs[:limit]
        x = np.stack([_decode(p, size, channels) for p, _ in pairs])  # (N, C, H, W)
        out += [x, np.array([lab for _, lab in pairs], dtype=np.int64)]
    info = {
        "classes": classes,
        "size": list(size),
        "channels": int(channels),
        "fingerprint": _fingerprint(root, find_imagefolder(root)),
    }
    return Arrays(*out, len(classes), info)


@dataclasses.dataclass(frozen=True)
class DataSource:
    """How one named data set on disk is found and read (an entry of `SOURCES`)."""

    find: Callable[[Path], list[Path]]  # the files a load reads; DataError when missing
    read: Callable[..., Arrays]  # (root, limit, **options) -> Arrays
    options: tuple[str, ...] = ()  # keyword options of load_dataset it takes
    record_root: bool = False  # the name alone does not say what the data is: keep root in meta


def _idx_source(name: str) -> DataSource:
    def read(root: Path, limit: int | None) -> Arrays:
        return Arrays(*read_mnist(root, limit, name), NUM_CLASSES[name])

    return DataSource(functools.partial(find_files, name), read)


def _cifar_source(name: str) -> DataSource:
    def read(root: Path, limit: int | None) -> Arrays:
        return Arrays(*read_cifar(name, root, limit), NUM_CLASSES[name])

    return DataSource(functools.partial(find_files, name), read)


SOURCES: dict[str, DataSource] = {
    "mnist": _idx_source("mnist"),
    "fashionmnist": _idx_source("fashionmnist"),
    "cifar10": _cifar_source("cifar10"),
    "cifar100": _cifar_source("cifar100"),
    "svhn": DataSource(find_svhn, read_svhn),
    "npz": DataSource(find_npz, read_npz, record_root=True),
    "imagefolder": DataSource(
        find_imagefolder, read_imagefolder, options=("size", "channels"), record_root=True
    ),
}


def split_name(name: str) -> tuple[str, str | None]:
    """("npz", "<path>") for the spelling `npz:<path>` (also `imagefolder:<dir>`); else (name, None)."""
    base, sep, rest = name.partition(":")
    if sep and rest and base in SOURCES and SOURCES[base].record_root:
        return base, rest
    return name, None


class _Names(tuple):
    """The data set names; `in` also accepts `npz:<path>` and `imagefolder:<dir>`, the spellings
    that carry the file in the name (so argparse choices and metadata checks take them)."""

    def __contains__(self, item: object) -> bool:
        if isinstance(item, str) and split_name(item)[1] is not None:
            return True
        return tuple.__contains__(self, item)


# torch-free, so the command line checks --data before torch loads
DATASETS: tuple[str, ...] = _Names(("digits", *SOURCES))


def expected(name: str) -> str:
    if name == "npz":
        return "a .npz file with x_train, y_train, x_test, y_test"
    if name == "imagefolder":
        return "a folder with train/<class>/*.png|jpg and test/<class>/..."
    if name == "svhn":
        return "train_32x32.mat, test_32x32.mat"
    return expected_files(name)


def source_options(name: str, size: Any, channels: Any) -> tuple[tuple[str, Any], ...]:
    """The source options, checked, as a hashable cache key: (("channels", 3), ("size", (H, W)))."""
    given = {k: v for k, v in (("size", size), ("channels", channels)) if v is not None}
    allowed = SOURCES[name].options if name in SOURCES else ()
    extra = sorted(set(given) - set(allowed))
    if extra:
        raise DataError(f"{name}: takes no option {', '.join(extra)} (only imagefolder does)")
    if "size" in given:
        given["size"] = _size(name, given["size"])
    if "channels" in given and (isinstance(channels, bool) or channels not in (1, 3)):
        raise DataError(f"{name}: channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    return tuple(sorted(given.items()))


def _size(name: str, size: Any) -> tuple[int, int]:
    if isinstance(size, str):
        parts = size.lower().replace(",", "x").split("x")
        size = [p.strip() for p in parts] if len(parts) == 2 else parts[0].strip()
        try:
            size = [int(p) for p in size] if isinstance(size, list) else int(size)
        except ValueError:
            size = None
    if isinstance(size, int | np.integer) and not isinstance(size, bool):
        size = (size, size)
    ok = isinstance(size, tuple | list) and len(size) == 2
    if not ok or not all(isinstance(v, int | np.integer) and 0 < v <= 4096 for v in size):
        raise DataError(f"{name}: size must be (H, W), an int or 'HxW' in 1..4096, got {size!r}")
    return int(size[0]), int(size[1])
