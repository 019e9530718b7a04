"""Read, write and validate checkpoints.

A checkpoint is one ``.safetensors`` file: the model's full state dict (parameters and buffers)
plus JSON metadata (format version, architecture, data set, optimizer, step/epoch, seed,
metrics). ``.pt``/``.pth`` state dicts are read only through ``torch.load(weights_only=True)``,
which refuses any pickle that would import or call code, and need an architecture from the
caller. Every failure raises :class:`CheckpointError` with a specific message.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import nn

from landscape.data import Dataset, load_dataset
from landscape.models import MODELS, build_model
from landscape.store import atomic_write

__all__ = [
    "FORMAT_VERSION",
    "MAX_BYTES",
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
_META_KEY = "landscape"


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


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            raw_meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no iter)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(
            f"{path}: not a valid safetensors file (truncated or garbage): {err}"
        ) from err
    meta: dict[str, Any] = {}
    if _META_KEY in raw_meta:
        try:
            meta = json.loads(raw_meta[_META_KEY])
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{path}: metadata is not valid JSON: {err}") from err
        if not isinstance(meta, dict):
            raise CheckpointError(f"{path}: metadata must be a JSON object")
    return state, meta


def read_torch_object(path: Path) -> Any:
    """``torch.load(weights_only=True)`` of a ``.pt``/``.pth`` file, with specific errors.

    The restricted unpickler refuses any pickle that would import or call code, so a hostile
    file raises here and nothing runs. Both torch's zip format and the legacy format are read.
    """
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


def validate_state(
    state: dict[str, torch.Tensor], arch: dict[str, Any], *, source: str = "checkpoint"
) -> None:
    """Check a state dict against an architecture; raise CheckpointError on the first problem."""
    # The architecture comes from a file's metadata: check its shape before using it.
    if (
        not isinstance(arch, dict)
        or not isinstance(arch.get("name"), str)
        or not isinstance(arch.get("kwargs", {}), dict)
    ):
        raise CheckpointError(
            f"{source}: architecture must be {{name: str, kwargs: dict}}: {arch!r}"
        )
    name = arch["name"]
    if name not in MODELS:
        raise CheckpointError(
            f"{source}: unknown architecture {name!r}; known: {', '.join(sorted(MODELS))}"
        )
    try:
        # On the meta device: names, shapes and dtypes without allocating (or initialising)
        # the weights, which for a WideResNet28x10 would cost seconds.
        with torch.device("meta"):
            reference = build_model(name, **arch.get("kwargs", {})).state_dict()
    except Exception as err:  # kwargs from a file: a bad value can fail in any layer's init
        raise CheckpointError(f"{source}: {err}") from err
    missing = [k for k in reference if k not in state]
    if missing:
        raise CheckpointError(
            f"{source}: missing keys for {name}: {', '.join(missing[:5])}"
            + (f" (and {len(missing) - 5} more)" if len(missing) > 5 else "")
        )
    unexpected = [k for k in state if k not in reference]
    if unexpected:
        raise CheckpointError(
            f"{source}: unexpected keys for {name}: {', '.join(unexpected[:5])}"
            + (f" (and {len(unexpected) - 5} more)" if len(unexpected) > 5 else "")
        )
    for k, ref in reference.items():
        if tuple(state[k].shape) != tuple(ref.shape):
            raise CheckpointError(
                f"{source}: wrong shape for {k}: file has {tuple(state[k].shape)}, "
                f"{name} expects {tuple(ref.shape)}"
            )
        if state[k].is_floating_point() != ref.is_floating_point():
            raise CheckpointError(f"{source}: wrong dtype for {k}: {state[k].dtype}")
        if state[k].is_floating_point() and not torch.isfinite(state[k]).all():
            raise CheckpointError(f"{source}: non-finite values (nan or inf) in {k}")


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
        state = state_from_object(read_torch_object(path), path)
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
    validate_state(state, meta["arch"], source=str(path))
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
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
