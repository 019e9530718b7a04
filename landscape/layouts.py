"""Checkpoint layouts users have: where the state dict sits in a file, and its key prefixes.

Training code nests the state dict (``{"state_dict": ...}``, ``{"model": ...}``,
``{"model_state": ...}``, ``{"model_state_dict": ...}``, Lightning's ``.ckpt`` with
``epoch``, ``optimizer_states``, ... beside ``state_dict``) and prefixes its keys
(DataParallel/DDP ``module.``, ``torch.compile`` ``_orig_mod.``, a LightningModule's attribute
such as ``model.``). :func:`unwrap` finds the state dict; :func:`key_candidates` lists the key
sets reachable by removing prefixes shared by every key, and a caller keeps one only when it
matches the model's keys exactly; :func:`mismatch` says how the nearest one differs;
:func:`fill_counters` adds the BatchNorm counters old files lack. :func:`check_header` and
:func:`check_archive` bound a safetensors header and a torch zip before they are read.
"""

from __future__ import annotations

import difflib
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "STATE_WRAPPERS",
    "CheckpointError",
    "check_archive",
    "check_header",
    "fill_counters",
    "key_candidates",
    "mismatch",
    "unwrap",
]

# Keys under which training scripts nest the model's state dict; "model_state" is what the
# mode-connectivity research code (and the gRDA fork of it) saves; Lightning uses "state_dict".
STATE_WRAPPERS = ("state_dict", "model", "model_state_dict", "model_state")
_MAX_PREFIXES = 4  # e.g. Lightning "model." + DDP "module." + compile "_orig_mod."
_ZIP_MAGIC = b"PK\x03\x04"  # torch.load takes a file for a zip archive when it starts with it


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message says which file and why."""


def check_header(path: Path, limit: int) -> None:
    """Refuse a safetensors header longer than ``limit`` bytes before it is read."""
    with path.open("rb") as f:
        prefix = f.read(8)
    if len(prefix) < 8:
        raise CheckpointError(f"{path}: not a valid safetensors file (truncated or garbage)")
    (length,) = struct.unpack("<Q", prefix)  # little-endian u64: the JSON header's length
    if length > limit:
        raise CheckpointError(
            f"{path}: not a valid safetensors file: header of {length} bytes, over the limit "
            f"of {limit} bytes (a checkpoint's header is a few kilobytes)"
        )
    if length + 8 > path.stat().st_size:
        raise CheckpointError(
            f"{path}: not a valid safetensors file (truncated: the header claims {length} bytes)"
        )


def check_archive(path: Path, max_bytes: int, max_ratio: int) -> int:
    """Refuse a torch zip archive whose records would inflate past ``max_bytes`` (or whose
    compression ratio is over ``max_ratio``: torch.save does not compress), from the declared
    sizes alone. Returns the number of records (0 for the legacy, non-zip, format).

    The legacy (non-zip) format is not compressed: what it reads is bounded by the file size.
    """
    with path.open("rb") as f:
        if f.read(4) != _ZIP_MAGIC:
            return 0
    try:
        with zipfile.ZipFile(path) as archive:
            records = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise CheckpointError(
            f"{path}: not a readable PyTorch state dict (truncated or garbage zip): {err}"
        ) from err
    total = sum(r.file_size for r in records)
    if total > max_bytes:
        raise CheckpointError(
            f"{path}: its records expand to {total} bytes, over the size limit of "
            f"{max_bytes} bytes (refused before inflating: a zip bomb?)"
        )
    for r in records:
        if r.compress_type != zipfile.ZIP_STORED and r.file_size > max_ratio * max(
            r.compress_size, 1024
        ):
            raise CheckpointError(
                f"{path}: record {r.filename} expands {r.compress_size} bytes to {r.file_size} "
                f"(over {max_ratio}:1; torch.save does not compress): refused as a zip bomb"
            )
    return len(records)


def _is_state(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def unwrap(obj: Any) -> dict[str, torch.Tensor] | None:
    """The state dict in a loaded object: the object itself or one nested under
    :data:`STATE_WRAPPERS` (a few levels deep); None when there is none."""
    for _ in range(_MAX_PREFIXES):
        if _is_state(obj):
            return obj
        if not isinstance(obj, dict):
            return None
        inner = [obj[w] for w in STATE_WRAPPERS if isinstance(obj.get(w), dict)]
        if not inner:
            return None
        obj = inner[0]
    return obj if _is_state(obj) else None


def key_candidates(state: Mapping[str, torch.Tensor]) -> list[tuple[str, dict]]:
    """(removed prefix, state) pairs: the state as is, then with the first dotted component
    removed while every key shares it (``module.``, ``_orig_mod.``, ``model.``, ...)."""
    found: list[tuple[str, dict]] = [("", dict(state))]
    prefix, current = "", dict(state)
    for _ in range(_MAX_PREFIXES):
        heads = {k.split(".", 1)[0] for k in current}
        if len(heads) != 1 or not all("." in k for k in current):
            break
        head = heads.pop() + "."
        prefix += head
        current = {k.removeprefix(head): v for k, v in current.items()}
        found.append((prefix, current))
    return found


def _listed(keys: list[str]) -> str:
    more = f" (and {len(keys) - 5} more)" if len(keys) > 5 else ""
    return f"{', '.join(keys[:5])}{more}"


def mismatch(
    candidates: list[tuple[str, dict]], reference: Mapping[str, Any], name: str, source: str
) -> str:
    """The message for key sets none of which equals the model's: the nearest candidate's
    missing and unexpected keys, and for each missing key the closest unexpected one."""
    prefix, best = max(candidates, key=lambda c: len(c[1].keys() & reference.keys()))
    missing = [k for k in reference if k not in best]
    unexpected = [k for k in best if k not in reference]
    after = f" (after removing the prefix {prefix!r})" if prefix else ""
    if not missing:
        return f"{source}: unexpected keys for {name}{after}: {_listed(unexpected)}"
    text = f"{source}: missing keys for {name}{after}: {_listed(missing)}"
    if unexpected:
        near = []
        for key in missing[:5]:
            close = difflib.get_close_matches(key, unexpected[:2000], n=1, cutoff=0.5)
            near += [f"{close[0]!r} for {key!r}"] if close else []
        text += f"; unexpected: {_listed(unexpected)}"
        text += f"; nearest: {', '.join(near)}" if near else ""
    return text


def fill_counters(
    state: dict[str, torch.Tensor], reference: Mapping[str, Any]
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """``state`` with the BatchNorm ``num_batches_tracked`` counters of ``reference`` that it
    lacks added as zeros (files of torch <= 0.4 have none; torch itself loads them), and the
    names added. Nothing is added when any other key is missing."""
    missing = [k for k in reference if k not in state]
    if not missing or any(not k.endswith(".num_batches_tracked") for k in missing):
        return state, []
    zeros = {k: torch.zeros((), dtype=torch.long) for k in missing}
    return {**state, **zeros}, missing
