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
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import nn

from landscape.data import Dataset, check_classes, dataset_from_meta
from landscape.layouts import (
    STATE_WRAPPERS,
    CheckpointError,
    check_archive,
    check_header,
    fill_counters,
    key_candidates,
    mismatch,
    unwrap,
)
from landscape.models import MODELS, build_model, min_tensors
from landscape.sources import EXPORT, check_source, is_external, load_exported, trust_export
from landscape.store import atomic_write

__all__ = [
    "FORMAT_VERSION",
    "MAX_BYTES",
    "MAX_HEADER_BYTES",
    "MAX_TENSORS",
    "MAX_ZIP_RATIO",
    "STATE_WRAPPERS",
    "TORCH_SUFFIXES",
    "check_file",
    "Checkpoint",
    "checkpoint_dataset",
    "CheckpointError",
    "content_hash",
    "fit_state",
    "load_checkpoint",
    "read_torch_object",
    "save_checkpoint",
    "state_from_object",
    "validate_state",
]

FORMAT_VERSION = 1
MAX_BYTES = 1024**3  # default size limit: a WideResNet28x10 curve file with 3 bends is ~0.6 GB
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
FILLED = "num_batches_tracked = 0 for {n} BatchNorm layers (the file has none: torch <= 0.4)"


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

    def skeleton(self) -> nn.Module:
        """The architecture without weights (on the meta device: nothing allocated)."""
        device = nullcontext() if self.arch["name"].startswith(EXPORT) else torch.device("meta")
        with device:
            return build_model(self.arch["name"], **self.arch.get("kwargs", {}))

    @cached_property
    def param_hash(self) -> str:
        """:func:`content_hash` of the parameters only (no buffers), in sorted name order.

        Equal for two files of one weight point whose buffers differ: a research curve's
        endpoints carry the curve's single set of BatchNorm statistics, the model files they
        were fitted from their own; every evaluation recomputes those statistics anyway.
        """
        names = {n for n, _ in self.skeleton().named_parameters()}
        return content_hash({k: v for k, v in self.state.items() if k in names})


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


def _check_count(n: int, source: str) -> None:
    if n > MAX_TENSORS:
        raise CheckpointError(
            f"{source}: {n} tensors, over the limit of {MAX_TENSORS} tensors in one file"
        )


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    check_header(path, MAX_HEADER_BYTES)
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


def read_torch_object(path: Path, *, max_bytes: int = MAX_BYTES) -> Any:
    """``torch.load(weights_only=True)`` of a ``.pt``/``.pth`` file, with specific errors.

    The restricted unpickler refuses any pickle that would import or call code, so a hostile
    file raises here and nothing runs. Both torch's zip format and the legacy format are read;
    a zip archive's declared sizes are checked against ``max_bytes`` before anything inflates.
    """
    _check_count(check_archive(path, max_bytes, MAX_ZIP_RATIO), str(path))
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's message goes on to suggest weights_only=False: show only the reason, the
        # first line after "Unpickler error:" (it may sit on a line of its own).
        after = str(err).split("Unpickler error:", 1)[1:]
        reason = next((ln.strip() for ln in "".join(after).splitlines() if ln.strip()), "")
        why = "the file asks for code to run or unknown objects"
        if reason.startswith("Unsupported operand"):  # not a pickle at all
            why = "the file is not a pickle of tensors: truncated or garbage"
        raise CheckpointError(
            f"{path}: refused to unpickle (only plain tensor state dicts are accepted; {why})"
            + (f": {reason}" if reason else "")
        ) from err
    except Exception as err:  # torch.load raises many types on garbage
        # Their texts are internals ("pop from empty list"): name the kind of problem only.
        raise CheckpointError(
            f"{path}: not a readable PyTorch state dict (truncated or garbage)"
        ) from err


def state_from_object(obj: Any, path: Path | str) -> dict[str, torch.Tensor]:
    """The state dict inside a loaded ``.pt`` object (a bare one or a training dict; see
    :mod:`landscape.layouts`). Key prefixes are removed later, against the architecture."""
    state = unwrap(obj)
    if state is None:
        raise CheckpointError(f"{path}: expected a dict of name -> tensor (a state dict)")
    return state


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
    if is_external(name):
        try:
            check_source(name)
        except ValueError as err:
            raise CheckpointError(f"{source}: {err}"[:1000]) from err
        _check_count(n_tensors, source)
        return  # a torchvision model has a fixed depth; a trusted file's size is its author's
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
    # An exported program brings its tensors; everything else is built without allocating.
    device = nullcontext() if arch["name"].startswith(EXPORT) else torch.device("meta")
    try:
        with device:
            return build_model(arch["name"], **arch.get("kwargs", {})).state_dict()
    except Exception as err:  # kwargs from a file: a bad value can fail in any layer's init
        # torch's messages can carry a C++ stack trace: its first line says what went wrong.
        raise CheckpointError(f"{source}: {str(err).splitlines()[0][:500]}") from err


def fit_state(
    state: dict[str, torch.Tensor],
    arch: dict[str, Any],
    *,
    source: str = "checkpoint",
    strip: bool = True,
    notes: dict[str, Any] | None = None,
) -> dict[str, torch.Tensor]:
    """Check a state dict against an architecture and return it under the model's key names.

    The architecture (from a file's metadata) is bounded by the file's tensor count before any
    model is built. With ``strip``, prefixes shared by every key (``module.``, ``_orig_mod.``,
    ``model.``) are removed when, and only when, the result matches the model's keys exactly;
    otherwise the error lists the nearest missing and unexpected keys. Floating-point values
    must be finite once cast to float32, the dtype every loader keeps. BatchNorm counters
    (``num_batches_tracked``) a file of torch <= 0.4 lacks are filled with zeros and, when
    ``notes`` is given, ``notes["filled"]`` says so (for the checkpoint's metadata).

    Raises:
        CheckpointError: the first problem found.
    """
    _check_arch(arch, len(state), source)
    name = arch["name"]
    reference = _reference(arch, source)
    candidates = key_candidates(state) if strip else [("", state)]
    filled = [(p, *fill_counters(c, reference)) for p, c in candidates]
    matched = [(c, f) for _, c, f in filled if c.keys() == reference.keys()]
    if not matched:
        raise CheckpointError(mismatch(candidates, reference, name, source)[:2000])
    state = matched[0][0]
    if matched[0][1] and notes is not None:
        notes["filled"] = FILLED.format(n=len(matched[0][1]))
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
    return state


def validate_state(
    state: dict[str, torch.Tensor], arch: dict[str, Any], *, source: str = "checkpoint"
) -> None:
    """Check a state dict, keys exactly as the model names them (:func:`fit_state`)."""
    fit_state(state, arch, source=source, strip=False)


# torch.save files by their usual suffixes: Lightning's .ckpt, Hugging Face's pytorch_model.bin.
TORCH_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")


def _read_any(
    path: Path, arch: dict[str, Any] | None, trust: bool, max_bytes: int
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state, metadata) of a safetensors, torch.save or (trusted) exported-program file."""
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return _read_safetensors(path)
    if suffix in TORCH_SUFFIXES:
        if arch is None:
            raise CheckpointError(f"{path}: a {suffix} state dict needs an architecture (--arch)")
        state = state_from_object(read_torch_object(path, max_bytes=max_bytes), path)
        return state, {"format_version": FORMAT_VERSION}
    if suffix == ".pt2":
        if not trust:
            raise CheckpointError(
                f"{path}: an exported program is opened only from the command line with "
                f"--trust: torch.export.load unpickles parts of the file with "
                f"weights_only=False, so a hostile .pt2 runs code"
            )
        trust_export(path)
        try:
            state, exported = load_exported(path)
        except ValueError as err:
            raise CheckpointError(str(err)[:1000]) from err
        return state, {"format_version": FORMAT_VERSION, "arch": exported}
    raise CheckpointError(
        f"{path}: unsupported file type {suffix!r} (.safetensors, {', '.join(TORCH_SUFFIXES)}, "
        f".pt2 with --trust)"
    )


def load_checkpoint(
    path: str | Path,
    *,
    arch: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
    max_bytes: int = MAX_BYTES,
    trust: bool = False,
) -> Checkpoint:
    """Read and validate a checkpoint.

    Args:
        path: a ``.safetensors`` file (architecture from its metadata, unless ``arch`` is given),
            a ``torch.save`` state dict (``.pt``, ``.pth``, ``.ckpt``, ``.bin``; ``arch``
            required) in any layout of :mod:`landscape.layouts`, or with ``trust`` an exported
            program (``.pt2``, architecture ``export:<path>``).
        arch: ``{"name": ..., "kwargs": {...}}``; overrides the metadata's architecture.
        data: ``{"name": ..., "split_seed": ...}`` for files whose metadata lacks it.
        max_bytes: files larger than this are refused before reading.
        trust: open a ``.pt2`` (loading one can run code stored in it: command line only).

    Returns:
        A validated :class:`Checkpoint` with float32 CPU tensors.

    Raises:
        CheckpointError: with a message naming the file and the first problem found.
    """
    path = Path(path)
    check_file(path, max_bytes)
    state, meta = _read_any(path, arch, trust, max_bytes)
    if arch is not None and path.suffix.lower() != ".pt2":  # a program brings its own
        meta["arch"] = arch
    if "arch" not in meta:
        raise CheckpointError(f"{path}: metadata names no architecture; choose one (--arch)")
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
    state = fit_state(state, meta["arch"], source=str(path), notes=meta)
    return Checkpoint(state=state, meta=meta, hash=content_hash(state), path=path, name=path.stem)


def checkpoint_dataset(ckpt: Checkpoint, *, data_root: str | None = None) -> Dataset:
    """The data set named in a checkpoint's metadata, with its split seed and options.

    Args:
        ckpt: the checkpoint.
        data_root: where the data set's files are (folder, or the .npz file); default: the
            root its metadata records (npz / imagefolder runs and uploads record one).

    Raises:
        CheckpointError: the metadata names no data set.
        DataError: the data cannot be read, or its class count does not fit the model's
            outputs ("model outputs 10 classes but the data set npz has 12").
    """
    data = ckpt.meta.get("data")
    if not isinstance(data, dict) or "name" not in data:
        raise CheckpointError(
            f"{ckpt.path or ckpt.name or 'checkpoint'}: metadata names no data set"
        )
    ds = dataset_from_meta(data, data_root=data_root)
    outputs = _outputs(ckpt)
    if outputs is not None:
        check_classes(ds, outputs, what=f"{ckpt.path or ckpt.name or 'checkpoint'}: model")
    return ds


def _outputs(ckpt: Checkpoint) -> int | None:
    """The model's class count: its ``num_classes`` argument, else the out_features of its
    last Linear layer (from the shapes: built on the meta device); None if it has neither."""
    arch = ckpt.meta.get("arch")
    outputs = arch.get("kwargs", {}).get("num_classes") if isinstance(arch, dict) else None
    if isinstance(outputs, int) and not isinstance(outputs, bool):
        return outputs
    linears = [m for m in ckpt.skeleton().modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else None
