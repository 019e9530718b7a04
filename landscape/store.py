"""Result store: JSON (+ ``.npz``) files named by the hash of their inputs.

Writes are atomic (temp file, then rename) and self-checking: the JSON carries a checksum of its
own payload, of the ``.npz`` and of every *artefact* the result names (a fitted curve, a pruned
checkpoint: files written with :meth:`Store.save_artifact`, each with a ``.sha256`` beside it),
so a torn, corrupt or missing file is detected, reported (a :class:`CorruptResultWarning`) and
recomputed, never returned. Long grid computations keep a *partial* log that a re-run resumes
from: an append-only file of (index, metrics) records, each with its own checksum, so a save
writes only the new points and a torn last record is ignored. Temp files of writers that died
are removed by :meth:`Store.remove_stale`. A per-result file lock makes two processes (or two
browser tabs) asking for the same result compute it once.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import struct
import tempfile
import time
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
    "STALE_TEMP_S",
    "Store",
    "Stored",
    "atomic_write",
    "home",
    "result_key",
]

Arrays = dict[str, np.ndarray]

STALE_TEMP_S = 600.0  # a temp file without a live writer's pid in its name is stale after this
_PARTIAL_FORMAT = "landscape-partial"
_PARTIAL_VERSION = 1
_DIGEST = 8  # bytes of sha256 kept per partial record


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
    # The writer's pid in the name lets a later run tell a dead writer's leftover (remove_stale).
    prefix = f".{path.name}.{os.getpid()}."
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
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


def _sha256(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def _stale(tmp: Path, now: float, max_age_s: float) -> bool:
    """Whether a ``.<name>.<pid>.<random>.tmp`` file's writer is gone (or, without a pid, old)."""
    parts = tmp.name[: -len(".tmp")].rsplit(".", 2)
    if len(parts) == 3 and parts[1].isdigit():
        return not _pid_alive(int(parts[1]))
    try:
        return now - tmp.stat().st_mtime > max_age_s
    except OSError:
        return False


def _record_struct(columns: list[str]) -> struct.Struct:
    """One partial record: the point's index, its values, the first bytes of their sha256."""
    return struct.Struct(f"<q{len(columns)}d{_DIGEST}s")


class Store:
    """Hash-keyed results under ``root/<kind>/<key>.json`` (+ ``.npz``, partial log, artefacts).

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

    def _check_body(self, body: dict[str, Any], npath: Path) -> tuple[Arrays, str | None]:
        """(the arrays, None) or ({}, why the result is corrupt): the .npz, then artefacts."""
        arrays: Arrays = {}
        if body.get("npz_sha256"):
            try:
                blob = npath.read_bytes()
            except OSError:
                return {}, "array file missing"
            if _sha256(blob) != body["npz_sha256"]:
                return {}, "array file checksum mismatch"
            arrays = _load_npz(blob)
        for rel, digest in (body.get("artifacts") or {}).items():
            try:
                if _sha256((self.root / rel).read_bytes()) != digest:
                    return {}, f"artefact {rel} checksum mismatch"
            except OSError:
                return {}, f"artefact {rel} missing"
        return arrays, None

    def load(self, kind: str, key: str) -> Stored | None:
        """The stored result, or None if absent or corrupt (corrupt files are removed).

        A result is corrupt when its JSON, its ``.npz`` or one of the artefacts it names is
        unreadable, missing or fails its checksum.
        """
        jpath, npath = self._paths(kind, key)
        if not jpath.exists():
            return None
        try:
            doc = json.loads(jpath.read_bytes())
            body, checksum = doc["body"], doc["checksum"]
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as err:
            self._corrupt(kind, key, f"unreadable JSON: {err}")
            return None
        if _sha256(_canonical(body)) != checksum:
            self._corrupt(kind, key, "checksum mismatch")
            return None
        arrays, why = self._check_body(body, npath)
        if why is not None:
            self._corrupt(kind, key, why)
            return None
        return Stored(kind, key, body["data"], arrays)

    def save(
        self,
        kind: str,
        key: str,
        data: dict[str, Any],
        arrays: Arrays | None = None,
        *,
        artifacts: list[Path] | None = None,
    ) -> Stored:
        """Write a result atomically: arrays first, then the JSON that vouches for them.

        Args:
            artifacts: files of :meth:`save_artifact` the result refers to; their checksums
                go into the JSON, so :meth:`load` treats the result as corrupt without them.
        """
        jpath, npath = self._paths(kind, key)
        jpath.parent.mkdir(parents=True, exist_ok=True)
        body: dict[str, Any] = {"kind": kind, "key": key, "data": data, "npz_sha256": None}
        if arrays:
            blob = _npz_bytes(arrays)
            atomic_write(npath, blob)
            body["npz_sha256"] = _sha256(blob)
        if artifacts:
            body["artifacts"] = {self._relative(p): self.artifact_digest(p) for p in artifacts}
        checksum = _sha256(_canonical(body))
        atomic_write(jpath, _canonical({"body": body, "checksum": checksum}))
        self.clear_partial(kind, key)
        return Stored(kind, key, data, dict(arrays or {}))

    # ------------------------------------------------------------ artefacts

    def _relative(self, path: str | Path) -> str:
        path = Path(path).resolve()
        try:
            return str(path.relative_to(self.root.resolve()))
        except ValueError:
            raise ValueError(f"{path} is not inside the store {self.root}") from None

    def save_artifact(self, kind: str, name: str, blob: bytes) -> Path:
        """Write ``blob`` as ``root/kind/name`` with its sha256 in ``name.sha256``; the path."""
        path = self.root / kind / name
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, blob)
        atomic_write(path.with_name(f"{name}.sha256"), _sha256(blob).encode())
        return path

    def record_artifact(self, path: str | Path) -> str:
        """Checksum a file something else wrote atomically into the store; its sha256."""
        path = Path(path)
        self._relative(path)
        digest = _sha256(path.read_bytes())
        atomic_write(path.with_name(f"{path.name}.sha256"), digest.encode())
        return digest

    def artifact_digest(self, path: str | Path) -> str:
        """The recorded sha256 of an artefact (ValueError if it has none)."""
        side = Path(path).with_name(f"{Path(path).name}.sha256")
        try:
            return side.read_text().strip()
        except OSError:
            raise ValueError(f"{path}: no recorded checksum") from None

    def read_artifact(self, path: str | Path) -> bytes | None:
        """The artefact's bytes if they match its recorded checksum, else None.

        A file that is present but unverifiable (no checksum, or another one) is reported with
        a :class:`CorruptResultWarning` and removed with its checksum; an absent file (never
        written) returns None silently, unless its checksum says it was written.
        """
        path = Path(path)
        side = path.with_name(f"{path.name}.sha256")
        if not path.exists():
            if not side.exists():
                return None
            why = "missing"
        else:
            blob = path.read_bytes()
            try:
                want: str | None = side.read_text().strip()
            except OSError:
                want = None
            if want == _sha256(blob):
                return blob
            why = "no recorded checksum" if want is None else "checksum mismatch"
        warnings.warn(
            f"stored artefact {path} is corrupt ({why}); it will be recomputed",
            CorruptResultWarning,
            stacklevel=2,
        )
        path.unlink(missing_ok=True)
        side.unlink(missing_ok=True)
        return None

    def load_artifact(self, kind: str, name: str) -> bytes | None:
        """:meth:`read_artifact` of ``root/kind/name``."""
        return self.read_artifact(self.root / kind / name)

    # ------------------------------------------------------------ partial results

    def _partial_path(self, kind: str, key: str) -> Path:
        return self.root / kind / f"{key}.partial"

    def _damaged_partial(self, kind: str, key: str, why: str) -> None:
        warnings.warn(
            f"partial result {kind}/{key} is damaged ({why}); starting over",
            CorruptResultWarning,
            stacklevel=3,
        )
        self.clear_partial(kind, key)

    def _partial_header(self, path: Path) -> tuple[list[str], int] | None:
        """(columns, header length) of a partial log, or None if its header is damaged."""
        with open(path, "rb") as f:
            line = f.readline(1 << 16)
        text, _, digest = line.rstrip(b"\n").rpartition(b" ")
        if not line.endswith(b"\n") or _sha256(text).encode()[:16] != digest:
            return None
        try:
            head = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
        if head.get("format") != _PARTIAL_FORMAT or head.get("version") != _PARTIAL_VERSION:
            return None
        return list(head["columns"]), len(line)

    def append_partial(self, kind: str, key: str, index: np.ndarray, columns: Arrays) -> None:
        """Append the records (index[j], {name: columns[name][j]}) to the partial log.

        Only these records are written (flushed and synced), after the last whole record: a
        torn record of a killed writer is overwritten. A log with other column names (an older
        metric set) is started over.
        """
        names = sorted(columns)
        path = self._partial_path(kind, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        found = self._partial_header(path) if path.exists() else None
        if found is None or found[0] != names:
            text = _canonical(
                {"format": _PARTIAL_FORMAT, "version": _PARTIAL_VERSION, "columns": names}
            )
            atomic_write(path, text + b" " + _sha256(text).encode()[:16] + b"\n")
            found = (names, path.stat().st_size)
        rec = _record_struct(names)
        blob = bytearray()
        for j, i in enumerate(np.asarray(index, dtype=np.int64)):
            body = struct.pack(f"<q{len(names)}d", int(i), *(float(columns[c][j]) for c in names))
            blob += body + hashlib.sha256(body).digest()[:_DIGEST]
        with open(path, "r+b") as f:
            size = f.seek(0, os.SEEK_END)
            end = found[1] + (size - found[1]) // rec.size * rec.size
            f.truncate(end)
            f.seek(end)
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())

    def load_partial(self, kind: str, key: str) -> tuple[np.ndarray, Arrays] | None:
        """(indices, {name: values}) of the intact records of a partial log, or None.

        A torn last record (a kill while appending) is ignored; a record failing its checksum
        is skipped with a warning (its point is computed again); a damaged header discards
        the log.
        """
        path = self._partial_path(kind, key)
        if not path.exists():
            return None
        found = self._partial_header(path)
        if found is None:
            self._damaged_partial(kind, key, "unreadable header")
            return None
        names, start = found
        rec = _record_struct(names)
        raw = path.read_bytes()[start:]
        index, values, bad = [], [], 0
        for fields in rec.iter_unpack(raw[: len(raw) // rec.size * rec.size]):
            body = struct.pack(f"<q{len(names)}d", *fields[:-1])
            if hashlib.sha256(body).digest()[:_DIGEST] != fields[-1]:
                bad += 1
                continue
            index.append(fields[0])
            values.append(fields[1:-1])
        if bad:
            warnings.warn(
                f"partial result {kind}/{key}: {bad} damaged records skipped",
                CorruptResultWarning,
                stacklevel=2,
            )
        table = np.asarray(values, dtype=float).reshape(len(values), len(names))
        return np.asarray(index, dtype=np.int64), {c: table[:, j] for j, c in enumerate(names)}

    def clear_partial(self, kind: str, key: str) -> None:
        self._partial_path(kind, key).unlink(missing_ok=True)

    def remove_stale(self, kind: str, *, max_age_s: float = STALE_TEMP_S) -> list[Path]:
        """Remove temp files in the kind's folder whose writer died; the paths removed.

        :func:`atomic_write` names its temp files ``.<name>.<pid>.<random>.tmp``: one whose
        process is gone is removed; one without a pid (older code) once older than
        ``max_age_s``. (A store shared between machines: pids are only checked locally.)
        """
        now, removed = time.time(), []
        for tmp in (self.root / kind).glob(".*.tmp"):
            if _stale(tmp, now, max_age_s):
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
        return removed

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
        compute: Callable[[], tuple[Any, ...]],
    ) -> Stored:
        """Return the stored result under ``key`` or compute, store and return it.

        ``compute()`` returns ``(data, arrays)`` or ``(data, arrays, artifacts)`` (see
        :meth:`save`). Concurrent callers (processes, browser tabs) with the same key compute
        once: the second waits for the lock and reads the result.
        """
        found = self.load(kind, key)
        if found is not None:
            return found
        with self.lock(kind, key):
            found = self.load(kind, key)  # another process may have finished meanwhile
            if found is not None:
                return found
            data, arrays, *rest = compute()
            return self.save(kind, key, data, arrays, artifacts=rest[0] if rest else None)
