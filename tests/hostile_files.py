"""Hostile checkpoint files, as the issue "Hostile uploads and runaway requests" probed them.

Shared by tests/test_hostile_files.py and bench/bench_hostile.py. Each maker writes one file
from the bundled checkpoint A (checkpoints/sgd/final.safetensors) and returns its path.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import zlib
from collections import OrderedDict
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
CKPT_A = ROOT / "checkpoints" / "sgd" / "final.safetensors"
GIB = 1024**3


def checkpoint_a() -> tuple[dict[str, torch.Tensor], dict]:
    """Checkpoint A's tensors and its parsed metadata."""
    with safe_open(str(CKPT_A), framework="pt") as f:
        meta = json.loads(f.metadata()["landscape"])
        return {k: f.get_tensor(k) for k in f.keys()}, meta  # noqa: SIM118


def _first_weight(state: dict[str, torch.Tensor]) -> str:
    return next(k for k, v in state.items() if k.endswith("weight") and v.is_floating_point())


def write_huge_float64(folder: Path, suffix: str) -> Path:
    """A's weights with one float64 entry of 1e300 (finite; inf once cast to float32)."""
    state, meta = checkpoint_a()
    key = _first_weight(state)
    state[key] = state[key].double()
    state[key].view(-1)[0] = 1e300
    path = folder / f"huge_float64{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path), metadata={"landscape": json.dumps(meta)})
    else:
        torch.save(state, path)
    return path


def write_arch_metadata(folder: Path, name: str, kwargs: dict, stem: str) -> Path:
    """A's tensors under metadata naming another architecture (e.g. preresnet depth 900002)."""
    state, meta = checkpoint_a()
    meta["arch"] = {"name": name, "kwargs": kwargs}
    path = folder / f"{stem}.safetensors"
    save_file(state, str(path), metadata={"landscape": json.dumps(meta)})
    return path


class _Storage:
    """Stands for a float32 storage of ``numel`` elements kept in zip record ``key``."""

    def __init__(self, key: str, numel: int):
        self.key, self.numel = key, numel


class _Tensor:
    def __init__(self, storage: _Storage):
        self.storage = storage

    def __reduce__(self):
        size = (self.storage.numel,)
        args = (self.storage, 0, size, (1,), False, OrderedDict())
        return torch._utils._rebuild_tensor_v2, args


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return ("storage", torch.FloatStorage, obj.key, "cpu", obj.numel)
        return None


def _zip_record(name: str, data: bytes, size: int, crc: int, offset: int) -> tuple[bytes, bytes]:
    """A deflated zip record: (local header + data, central directory entry)."""
    fields = struct.pack("<HHHHHIIIHH", 20, 0, 8, 0, 0, crc, len(data), size, len(name), 0)
    local = b"PK\x03\x04" + fields + name.encode() + data
    central = (
        b"PK\x01\x02"
        + struct.pack("<H", 20)
        + fields
        + struct.pack("<HHHII", 0, 0, 0, 0, offset)
        + name.encode()
    )
    return local, central


def _zeros_deflated(nbytes: int) -> bytes:
    """Raw deflate of ``nbytes`` zeros (a multiple of 1 MiB), built from one repeated block."""
    chunk = 1024 * 1024
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(bytes(chunk)) + c.flush(zlib.Z_FULL_FLUSH)  # resets: blocks repeat
    return block * (nbytes // chunk) + c.flush(zlib.Z_FINISH)


def write_zip_bomb(folder: Path, nbytes: int = 2 * GIB, *, true_crc: bool = False) -> Path:
    """A ~2 MB torch zip archive: ``{"w": tensor}`` whose one storage inflates to ``nbytes``."""
    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump({"w": _Tensor(_Storage("0", nbytes // 4))})
    pkl = buf.getvalue()
    crc = 0
    if true_crc:  # torch's reader checks it once inflated; the probe's file was a valid one
        zero = bytes(1024 * 1024)
        for _ in range(nbytes // len(zero)):
            crc = zlib.crc32(zero, crc)
    entries = [
        ("archive/data.pkl", zlib.compress(pkl)[2:-4], len(pkl), zlib.crc32(pkl)),
        ("archive/byteorder", zlib.compress(b"little")[2:-4], 6, zlib.crc32(b"little")),
        ("archive/data/0", _zeros_deflated(nbytes), nbytes, crc),
        ("archive/version", zlib.compress(b"3\n")[2:-4], 2, zlib.crc32(b"3\n")),
    ]
    body, directory = b"", b""
    for name, data, size, crc_ in entries:
        local, central = _zip_record(name, data, size, crc_, len(body))
        body, directory = body + local, directory + central
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 4, 4, len(directory), len(body), 0)
    path = folder / "zip_bomb.pt"
    path.write_bytes(body + directory + end)
    return path


def write_huge_header(folder: Path, length: int = 99_999_992) -> Path:
    """A safetensors file whose 8-byte prefix claims (and which holds) ~100 MB of JSON header;
    just under safetensors' own 100 MB cap, so the library itself would read and parse it."""
    filler = length - len('{"__metadata__":{"landscape":""}}')
    header = '{"__metadata__":{"landscape":"' + " " * filler + '"}}'
    path = folder / "huge_header.safetensors"
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(header)))
        f.write(header.encode())
    return path


class _RunsCode:
    """Unpickling it would create ``marker`` (an os.mkdir call): proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def write_code_pickle(folder: Path) -> tuple[Path, Path]:
    """A .pt file whose pickle calls ``os.mkdir(marker)``; returns (file, marker)."""
    marker = folder / "code_ran"
    path = folder / "runs_code.pt"
    torch.save({"model_state": _RunsCode(marker)}, path)
    return path, marker
