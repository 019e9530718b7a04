"""Read, write and validate checkpoints.

A checkpoint is one ``.safetensors`` file: the model's full state dict (parameters and buffers)
plus JSON metadata (format version, architecture, data set, optimizer, step/epoch, seed,
metrics). ``.pt``/``.pth`` state dicts are read only through ``torch.load(weights_only=True)``,
which refuses any pickle that would import or call code, and need an architecture from the
caller. Every failure raises :class:`CheckpointError` with a specific message.

Files are untrusted (uploads): every cost is bounded before it is paid. The safetensors header
length and the zip records' declared sizes are checked before anything is read or inflated,
an architecture's size is bounded by the tensors the file holds before a model is built, and
values are checked after the cast to float32 (a float64 of 1e300 becomes inf).
"""

from __future__ import annotations

import hashlib
import json
import pickle
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import nn

from landscape.data import Dataset, load_dataset
from landscape.models import MODELS, build_model, min_tensors
from landscape.store import atomic_write

__all__ = [
    "FORMAT_VERSION",
    "MAX_BYTES",
    "MAX_HEADER_BYTES",
    "MAX_TENSORS",
    "MAX_ZIP_RATIO",
    "STATE_WRAPPERS",
    "check_file",
    "Checkpoint",
    "checkpoint_dataset",
    "CheckpointError",
    "content_hash",
    "load_checkpoint",
    "read_torch_object",
    "save_checkpoint",
    "state_from_object",
    "validate_state",
]

FORMAT_VERSION = 1
MAX_BYTES = (
    1024 * 1024 * 1024
)  # default size limit: a WideResNet28x10 curve file with 3 bends is ~0.6 GB
# A checkpoint's safetensors header is a few kilobytes (a WideResNet28x10 curve file: ~50 KB).
MAX_HEADER_BYTES = 16 * 1024 * 1024
# Tensors in one file: PreResNet1001 has ~6,000; building 10,000 (on the meta device) takes ~1 s.
MAX_TENSORS = 10_000
# torch.save stores its zip records uncompressed; deflate reaches ~1000:1 on zeros (a zip bomb).
MAX_ZIP_RATIO = 100
# Tensors an architecture may have beyond the file's and still be built on the meta device, so
# a wrong choice (PreResNet110 for a WideResNet file) is told its missing keys: ~0.1 s.
_BUILD_ALLOWANCE = 1000
_META_KEY = "landscape"
_ZIP_MAGIC = b"PK\x03\x04"  # torch.load takes a file for a zip archive when it starts with it


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message says which file and why."""


@dataclass
class Checkpoint:
    """A validated checkpoint.

    Attributes:
        state: full state dict (parameters and buffers), CPU tensors.
        meta: metadata dict (format_version, arch, data, optimizer, step, epoch, seed, metrics).
        hash: content hash of the tensors (see :func:`content_hash`).
        path: the file it was read from, if any.
    """

    state: dict[str, torch.Tensor]
    meta: dict[str, Any]
    hash: str
    path: Path | None = None
    name: str = field(default="")

    @property
    def arch(self) -> dict[str, Any]:
        return self.meta["arch"]

    def build_model(self) -> nn.Module:
        """Rebuild the architecture named in the metadata and load the weights into it."""
        model = build_model(self.arch["name"], **self.arch.get("kwargs", {}))
        model.load_state_dict(self.state)
        return model


def content_hash(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 (first 16 hex digits) over names, dtypes, shapes and bytes, in sorted order.

    Metadata is not hashed: two files with the same weights are the same point in weight space.
    """
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        # reshape(-1): a 0-dim tensor (BN's num_batches_tracked) cannot view() as bytes.
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def save_checkpoint(
    path: str | Path, state: dict[str, torch.Tensor] | nn.Module, meta: dict[str, Any]
) -> str:
    """Write a ``.safetensors`` checkpoint atomically (temp file, then rename).

    Args:
        path: destination file.
        state: a state dict or a module (its ``state_dict()`` is saved).
        meta: metadata; must contain ``arch`` ({name, kwargs}). ``format_version`` is added.

    Returns:
        The content hash of the saved tensors.
    """
    if isinstance(state, nn.Module):
        state = state.state_dict()
    if "arch" not in meta or "name" not in meta["arch"]:
        raise CheckpointError("metadata needs arch = {name, kwargs}")
    # float32 throughout, so the hash returned here equals the one load_checkpoint computes.
    tensors = {
        k: (v.float() if v.is_floating_point() else v).detach().cpu().contiguous().clone()
        for k, v in state.items()
    }
    full_meta = {"format_version": FORMAT_VERSION, **meta}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, save(tensors, metadata={_META_KEY: json.dumps(full_meta, sort_keys=True)}))
    return content_hash(tensors)


def check_file(path: Path, max_bytes: int) -> None:
    """Raise CheckpointError unless ``path`` is a non-empty file of at most ``max_bytes``."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path}: empty file")
    if size > max_bytes:
        raise CheckpointError(
            f"{path}: file is {size} bytes, over the size limit of {max_bytes} bytes"
        )


def _check_header(path: Path) -> None:
    """Refuse a safetensors header longer than MAX_HEADER_BYTES before it is read."""
    with path.open("rb") as f:
        prefix = f.read(8)
    if len(prefix) < 8:
        raise CheckpointError(f"{path}: not a valid safetensors file (truncated or garbage)")
    (length,) = struct.unpack("<Q", prefix)  # little-endian u64: the JSON header's length
    if length > MAX_HEADER_BYTES:
        raise CheckpointError(
            f"{path}: not a valid safetensors file: header of {length} bytes, over the limit "
            f"of {MAX_HEADER_BYTES} bytes (a checkpoint's header is a few kilobytes)"
        )
    if length + 8 > path.stat().st_size:
        raise CheckpointError(
            f"{path}: not a valid safetensors file (truncated: the header claims {length} bytes)"
        )


def _check_count(n: int, source: str) -> None:
    if n > MAX_TENSORS:
        raise CheckpointError(
            f"{source}: {n} tensors, over the limit of {MAX_TENSORS} tensors in one file"
        )


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    _check_header(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            raw_meta = f.metadata() or {}
            keys = list(f.keys())
            _check_count(len(keys), str(path))
            state = {k: f.get_tensor(k) for k in keys}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(
            f"{path}: not a valid safetensors file (truncated or garbage): {err}"
        ) from err
    meta: dict[str, Any] = {}
    if _META_KEY in raw_meta:
        try:
            meta = json.loads(raw_meta[_META_KEY])
        except (json.JSONDecodeError, RecursionError) as err:
            raise CheckpointError(f"{path}: metadata is not valid JSON: {err}") from err
        if not isinstance(meta, dict):
            raise CheckpointError(f"{path}: metadata must be a JSON object")
    return state, meta


def _check_archive(path: Path, max_bytes: int) -> None:
    """Refuse a torch zip archive whose records would inflate past ``max_bytes`` (or whose
    compression ratio no torch.save produces), from the declared sizes alone.

    The legacy (non-zip) format is not compressed: what it reads is bounded by the file size.
    """
    with path.open("rb") as f:
        if f.read(4) != _ZIP_MAGIC:
            return
    try:
        with zipfile.ZipFile(path) as archive:
            records = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise CheckpointError(
            f"{path}: not a readable PyTorch state dict (truncated or garbage zip): {err}"
        ) from err
    _check_count(len(records), str(path))
    total = sum(r.file_size for r in records)
    if total > max_bytes:
        raise CheckpointError(
            f"{path}: its records expand to {total} bytes, over the size limit of "
            f"{max_bytes} bytes (refused before inflating: a zip bomb?)"
        )
    for r in records:
        if r.compress_type != zipfile.ZIP_STORED and r.file_size > MAX_ZIP_RATIO * max(
            r.compress_size, 1024
        ):
            raise CheckpointError(
                f"{path}: record {r.filename} expands {r.compress_size} bytes to {r.file_size} "
                f"(over {MAX_ZIP_RATIO}:1; torch.save does not compress): refused as a zip bomb"
            )


def read_torch_object(path: Path, *, max_bytes: int = MAX_BYTES) -> Any:
    """``torch.load(weights_only=True)`` of a ``.pt``/``.pth`` file, with specific errors.

    The restricted unpickler refuses any pickle that would import or call code, so a hostile
    file raises here and nothing runs. Both torch's zip format and the legacy format are read;
    a zip archive's declared sizes are checked against ``max_bytes`` before anything inflates.
    """
    _check_archive(path, max_bytes)
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's message goes on to suggest weights_only=False: show only the reason.
        reasons = [ln.strip() for ln in str(err).splitlines() if "Unpickler error" in ln]
        raise CheckpointError(
            f"{path}: refused to unpickle (only plain tensor state dicts are accepted; "
            f"the file asks for code to run or unknown objects)"
            + (f": {reasons[0].split('error:', 1)[-1].strip()}" if reasons else "")
        ) from err
    except Exception as err:  # torch.load raises many types on garbage
        raise CheckpointError(
            f"{path}: not a readable PyTorch state dict (truncated or garbage): {err}"
        ) from err


# Keys under which training scripts nest the model's state dict; "model_state" is what the
# mode-connectivity research code (and the gRDA fork of it) saves.
STATE_WRAPPERS = ("state_dict", "model", "model_state_dict", "model_state")


def state_from_object(obj: Any, path: Path | str) -> dict[str, torch.Tensor]:
    """The state dict inside a loaded ``.pt`` object (a bare one or a training dict)."""
    if isinstance(obj, dict):
        for wrapper in STATE_WRAPPERS:
            if isinstance(obj.get(wrapper), dict):
                obj = obj[wrapper]
                break
    if (
        not isinstance(obj, dict)
        or not obj
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    ):
        raise CheckpointError(f"{path}: expected a dict of name -> tensor (a state dict)")
    # Checkpoints saved from DataParallel/DDP prefix every key with "module.".
    if all(k.startswith("module.") for k in obj):
        obj = {k.removeprefix("module."): v for k, v in obj.items()}
    return obj


def _check_arch(arch: Any, n_tensors: int, source: str) -> None:
    """Check an architecture from a file before building it: its shape, its name, and that its
    arguments do not ask for far more tensors than the file holds (building is then bounded
    by the file: at most MAX_TENSORS + _BUILD_ALLOWANCE tensors, about a second)."""
    if (
        not isinstance(arch, dict)
        or not isinstance(arch.get("name"), str)
        or not isinstance(arch.get("kwargs", {}), dict)
    ):
        raise CheckpointError(
            f"{source}: architecture must be {{name: str, kwargs: dict}}: {arch!r}"[:500]
        )
    name = arch["name"]
    if name not in MODELS:
        raise CheckpointError(
            f"{source}: unknown architecture {name!r}; known: {', '.join(sorted(MODELS))}"[:500]
        )
    _check_count(n_tensors, source)
    kwargs = arch.get("kwargs", {})
    needed = min_tensors(name, kwargs)
    if needed > n_tensors + _BUILD_ALLOWANCE:
        args = ", ".join(f"{k}={_short(v)}" for k, v in kwargs.items())
        raise CheckpointError(
            f"{source}: architecture {name}({args}) has at least {needed} tensors, but the "
            f"file holds only {n_tensors} tensors (refused before building it)"[:1000]
        )


def _short(value: Any) -> str:
    """A kwarg for a message: long lists abbreviated (a file can name 100,000 widths)."""
    if isinstance(value, list | tuple) and len(value) > 4:
        return f"[{', '.join(map(repr, value[:3]))}, ... ({len(value)} items)]"
    return repr(value)[:40]


def _reference(arch: dict[str, Any], source: str) -> dict[str, torch.Tensor]:
    """The architecture's state dict on the meta device: names, shapes and dtypes without
    allocating (or initialising) the weights, which for a WideResNet28x10 would cost seconds."""
    try:
        with torch.device("meta"):
            return build_model(arch["name"], **arch.get("kwargs", {})).state_dict()
    except Exception as err:  # kwargs from a file: a bad value can fail in any layer's init
        # torch's messages can carry a C++ stack trace: its first line says what went wrong.
        raise CheckpointError(f"{source}: {str(err).splitlines()[0][:500]}") from err


def _keys_message(source: str, what: str, name: str, keys: list[str]) -> str:
    more = f" (and {len(keys) - 5} more)" if len(keys) > 5 else ""
    return f"{source}: {what} keys for {name}: {', '.join(keys[:5])}{more}"


def validate_state(
    state: dict[str, torch.Tensor], arch: dict[str, Any], *, source: str = "checkpoint"
) -> None:
    """Check a state dict against an architecture; raise CheckpointError on the first problem.

    The architecture (from a file's metadata) is bounded by the file's tensor count before any
    model is built; floating-point values must be finite once cast to float32, the dtype every
    loader keeps.
    """
    _check_arch(arch, len(state), source)
    name = arch["name"]
    reference = _reference(arch, source)
    missing = [k for k in reference if k not in state]
    if missing:
        raise CheckpointError(_keys_message(source, "missing", name, missing))
    unexpected = [k for k in state if k not in reference]
    if unexpected:
        raise CheckpointError(_keys_message(source, "unexpected", name, unexpected))
    for k, ref in reference.items():
        if tuple(state[k].shape) != tuple(ref.shape):
            raise CheckpointError(
                f"{source}: wrong shape for {k}: file has {tuple(state[k].shape)}, "
                f"{name} expects {tuple(ref.shape)}"
            )
        if state[k].is_floating_point() != ref.is_floating_point():
            raise CheckpointError(f"{source}: wrong dtype for {k}: {state[k].dtype}")
        # After the cast: a float64 of 1e300 is finite, its float32 is inf.
        if state[k].is_floating_point() and not torch.isfinite(state[k].float()).all():
            raise CheckpointError(
                f"{source}: non-finite values (nan or inf) in {k} (as float32: values beyond "
                f"+-3.4e38 overflow to inf)"
            )


def load_checkpoint(
    path: str | Path,
    *,
    arch: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
    max_bytes: int = MAX_BYTES,
) -> Checkpoint:
    """Read and validate a checkpoint.

    Args:
        path: a ``.safetensors`` file (architecture from its metadata, unless ``arch`` is given)
            or a ``.pt``/``.pth`` state dict (``arch`` required).
        arch: ``{"name": ..., "kwargs": {...}}``; overrides the metadata's architecture.
        data: ``{"name": ..., "split_seed": ...}`` for files whose metadata lacks it.
        max_bytes: files larger than this are refused before reading.

    Returns:
        A validated :class:`Checkpoint` with float32 CPU tensors.

    Raises:
        CheckpointError: with a message naming the file and the first problem found.
    """
    path = Path(path)
    check_file(path, max_bytes)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        state, meta = _read_safetensors(path)
    elif suffix in (".pt", ".pth"):
        if arch is None:
            raise CheckpointError(f"{path}: a .pt/.pth state dict needs an architecture")
        state = state_from_object(read_torch_object(path, max_bytes=max_bytes), path)
        meta = {"format_version": FORMAT_VERSION}
    else:
        raise CheckpointError(f"{path}: unsupported file type {suffix!r} (.safetensors, .pt, .pth)")
    if arch is not None:
        meta["arch"] = arch
    if "arch" not in meta:
        raise CheckpointError(f"{path}: metadata names no architecture; choose one")
    if data is not None:
        meta["data"] = data
    if not isinstance(meta.get("format_version", FORMAT_VERSION), int):
        raise CheckpointError(
            f"{path}: format version {meta['format_version']!r} is not an integer"
        )
    if meta.get("format_version", FORMAT_VERSION) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format version {meta['format_version']} is newer than {FORMAT_VERSION}"
        )
    # Cast first, then validate what is kept (a float64 of 1e300 becomes inf here).
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    validate_state(state, meta["arch"], source=str(path))
    return Checkpoint(state=state, meta=meta, hash=content_hash(state), path=path, name=path.stem)


def checkpoint_dataset(ckpt: Checkpoint, *, data_root: str | None = None) -> Dataset:
    """The data set named in a checkpoint's metadata, with its split seed.

    Args:
        ckpt: the checkpoint.
        data_root: folder of mnist/cifar10 files; default: the one its metadata records
            (uploads of such checkpoints name one).

    Raises:
        CheckpointError: the metadata names no data set.
    """
    data = ckpt.meta.get("data")
    if not isinstance(data, dict) or "name" not in data:
        raise CheckpointError(
            f"{ckpt.path or ckpt.name or 'checkpoint'}: metadata names no data set"
        )
    root = data_root if data_root is not None else data.get("root")
    return load_dataset(
        data["name"],
        root=root,
        seed=int(data.get("split_seed", 0)),
        normalize=str(data.get("normalize", "none")),
    )
