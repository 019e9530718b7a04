"""Result store: JSON (+ ``.npz``) files named by the hash of their inputs.

Writes are atomic (temp file, then rename) and self-checking: the JSON carries a checksum of its
own payload and of the ``.npz``, so a torn or corrupt result is detected, reported (a
:class:`CorruptResultWarning`), removed and recomputed, never returned. Long grid computations
keep a *partial* file that a re-run resumes from. A per-result file lock makes two processes (or
two browser tabs) asking for the same result compute it once.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from landscape import __version__

__all__ = ["CorruptResultWarning", "Store", "Stored", "atomic_write", "home", "result_key"]

Arrays = dict[str, np.ndarray]


class CorruptResultWarning(UserWarning):
    """A stored result failed its checks and will be recomputed."""


def home() -> Path:
    """The local data folder: ``$LANDSCAPE_HOME`` or ``./.landscape``."""
    return Path(os.environ.get("LANDSCAPE_HOME", Path.cwd() / ".landscape"))


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=True).encode()


def result_key(kind: str, inputs: dict[str, Any]) -> str:
    """Hash of a computation's inputs (checkpoint hashes, data, config) and the code version."""
    payload = {"kind": kind, "inputs": inputs, "version": __version__}
    return hashlib.sha256(_canonical(payload)).hexdigest()[:24]


@dataclass
class Stored:
    """A result read from (or just written to) the store."""

    kind: str
    key: str
    data: dict[str, Any]
    arrays: Arrays


def atomic_write(path: Path, blob: bytes) -> None:
    """Write ``blob`` to ``path`` through a synced temp file and a rename (never torn)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(blob)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _npz_bytes(arrays: Arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _load_npz(blob: bytes) -> Arrays:
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


class Store:
    """Hash-keyed results under ``root/<kind>/<key>.json`` (+ ``.npz``).

    Args:
        root: folder of the store (default ``home()/results``).
    """

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else home() / "results"

    def _paths(self, kind: str, key: str) -> tuple[Path, Path]:
        folder = self.root / kind
        return folder / f"{key}.json", folder / f"{key}.npz"

    def _corrupt(self, kind: str, key: str, why: str) -> None:
        warnings.warn(
            f"stored result {kind}/{key} is corrupt ({why}); it will be recomputed",
            CorruptResultWarning,
            stacklevel=3,
        )
        for p in self._paths(kind, key):
            p.unlink(missing_ok=True)

    def load(self, kind: str, key: str) -> Stored | None:
        """The stored result, or None if absent or corrupt (corrupt files are removed)."""
        jpath, npath = self._paths(kind, key)
        if not jpath.exists():
            return None
        try:
            doc = json.loads(jpath.read_bytes())
            body, checksum = doc["body"], doc["checksum"]
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as err:
            self._corrupt(kind, key, f"unreadable JSON: {err}")
            return None
        if hashlib.sha256(_canonical(body)).hexdigest() != checksum:
            self._corrupt(kind, key, "checksum mismatch")
            return None
        arrays: Arrays = {}
        if body.get("npz_sha256"):
            try:
                blob = npath.read_bytes()
            except OSError:
                self._corrupt(kind, key, "array file missing")
                return None
            if hashlib.sha256(blob).hexdigest() != body["npz_sha256"]:
                self._corrupt(kind, key, "array file checksum mismatch")
                return None
            arrays = _load_npz(blob)
        return Stored(kind, key, body["data"], arrays)

    def save(
        self, kind: str, key: str, data: dict[str, Any], arrays: Arrays | None = None
    ) -> Stored:
        """Write a result atomically: arrays first, then the JSON that vouches for them."""
        jpath, npath = self._paths(kind, key)
        jpath.parent.mkdir(parents=True, exist_ok=True)
        body: dict[str, Any] = {"kind": kind, "key": key, "data": data, "npz_sha256": None}
        if arrays:
            blob = _npz_bytes(arrays)
            atomic_write(npath, blob)
            body["npz_sha256"] = hashlib.sha256(blob).hexdigest()
        checksum = hashlib.sha256(_canonical(body)).hexdigest()
        atomic_write(jpath, _canonical({"body": body, "checksum": checksum}))
        self.clear_partial(kind, key)
        return Stored(kind, key, data, dict(arrays or {}))

    def _partial_path(self, kind: str, key: str) -> Path:
        return self.root / kind / f"{key}.partial.npz"

    def save_partial(self, kind: str, key: str, arrays: Arrays) -> None:
        """Checkpoint an unfinished computation (atomic; a checksum guards it)."""
        path = self._partial_path(kind, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        blob = _npz_bytes(arrays)
        atomic_write(path, hashlib.sha256(blob).hexdigest().encode() + b"\n" + blob)

    def load_partial(self, kind: str, key: str) -> Arrays | None:
        """The arrays of an unfinished computation, or None (a damaged one is discarded)."""
        path = self._partial_path(kind, key)
        if not path.exists():
            return None
        raw = path.read_bytes()
        digest, _, blob = raw.partition(b"\n")
        try:
            if hashlib.sha256(blob).hexdigest().encode() != digest:
                raise ValueError("checksum mismatch")
            return _load_npz(blob)
        except (ValueError, OSError) as err:
            warnings.warn(
                f"partial result {kind}/{key} is damaged ({err}); starting over",
                CorruptResultWarning,
                stacklevel=2,
            )
            path.unlink(missing_ok=True)
            return None

    def clear_partial(self, kind: str, key: str) -> None:
        self._partial_path(kind, key).unlink(missing_ok=True)

    @contextmanager
    def lock(self, kind: str, key: str) -> Iterator[None]:
        """Exclusive inter-process lock for one result."""
        path = self.root / kind / f"{key}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def find(self, kind: str, inputs: dict[str, Any]) -> Stored | None:
        """The stored result for ``inputs``, or None; never computes."""
        return self.load(kind, result_key(kind, inputs))

    def get_or_compute(
        self,
        kind: str,
        inputs: dict[str, Any],
        compute: Callable[[str], tuple[dict[str, Any], Arrays | None]],
    ) -> Stored:
        """Return the stored result for ``inputs`` or compute, store and return it.

        ``compute(key)`` returns ``(data, arrays)``; it receives the key so it can keep partial
        results under it. Concurrent callers with the same inputs compute once.
        """
        key = result_key(kind, inputs)
        found = self.load(kind, key)
        if found is not None:
            return found
        with self.lock(kind, key):
            found = self.load(kind, key)  # another process may have finished meanwhile
            if found is not None:
                return found
            data, arrays = compute(key)
            return self.save(kind, key, {**data, "inputs": inputs}, arrays)
