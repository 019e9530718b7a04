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
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "Arrays",
    "CorruptResultWarning",
    "Store",
    "Stored",
    "atomic_write",
    "home",
    "result_key",
]

Arrays = dict[str, np.ndarray]


class CorruptResultWarning(UserWarning):
    """A stored result failed its checks and will be recomputed."""


def home() -> Path:
    """The local data folder: ``$LANDSCAPE_HOME`` or ``./.landscape``."""
    return Path(os.environ.get("LANDSCAPE_HOME", Path.cwd() / ".landscape"))


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=True).encode()


def result_key(kind: str, version: int, inputs: dict[str, Any]) -> str:
    """Hash of a computation's inputs (checkpoint hashes, data, config) and its kind's version.

    Each study kind keeps its own ``VERSION`` next to its code: bumping it when the computation
    changes makes every stored result of that kind (and only that kind) stale.
    """
    payload = {"kind": kind, "inputs": inputs, "version": version}
    return hashlib.sha256(_canonical(payload)).hexdigest()[:24]


@dataclass
class Stored:
    """A result read from (or just written to) the store."""

    kind: str
    key: str
    data: dict[str, Any]
    arrays: Arrays


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()  # read once at import: os.umask can only be read by setting it


def atomic_write(path: str | Path, blob: bytes) -> None:
    """Write ``blob`` to ``path`` through a synced temp file and a rename (never torn).

    The one way this project writes a file: a reader sees the old file or the new one, never a
    part, and the temporary file is removed if anything fails.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; files get the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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

    def find(self, kind: str, key: str) -> Stored | None:
        """The stored result under ``key``, or None; never computes."""
        return self.load(kind, key)

    def get_or_compute(
        self,
        kind: str,
        key: str,
        compute: Callable[[], tuple[dict[str, Any], Arrays | None]],
    ) -> Stored:
        """Return the stored result under ``key`` or compute, store and return it.

        ``compute()`` returns ``(data, arrays)``. Concurrent callers (processes, browser tabs)
        with the same key compute once: the second waits for the lock and reads the result.
        """
        found = self.load(kind, key)
        if found is not None:
            return found
        with self.lock(kind, key):
            found = self.load(kind, key)  # another process may have finished meanwhile
            if found is not None:
                return found
            data, arrays = compute()
            return self.save(kind, key, data, arrays)
