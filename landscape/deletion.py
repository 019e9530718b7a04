"""Deleting uploads and studies (the Upload page's buttons, ``landscape uploads rm`` and
``landscape study rm``), under the same lock as every write of ``studies.json``."""

from __future__ import annotations

from pathlib import Path

from landscape.workspace import DEFAULT_NAME, _lock, _read_index, _uploads_dir, _write_index

__all__ = ["delete_study", "delete_upload", "upload_hash"]


def upload_hash(path: str | Path) -> str:
    """The content hash of a stored upload (its file's stem)."""
    return Path(path).stem


def _upload_file(hash_: str) -> Path:
    if not hash_ or any(c not in "0123456789abcdef" for c in hash_.lower()):
        raise ValueError(f"not an upload's content hash: {hash_!r}")
    return _uploads_dir() / f"{hash_}.safetensors"


def delete_upload(hash_: str, *, with_studies: bool = False) -> list[str]:
    """Delete the upload with content hash ``hash_`` and the curves that start or end there.

    Args:
        hash_: the upload's content hash (its file's stem).
        with_studies: also delete the studies that use it; else such an upload is refused.

    Returns:
        The names of the studies deleted with it.

    Raises:
        ValueError: no such upload, or studies use it (named) and ``with_studies`` is False.
    """
    path = _upload_file(hash_)
    with _lock():
        index = _read_index()
        if not path.exists() and hash_ not in index["uploads"]:
            raise ValueError(f"no upload with hash {hash_}")
        users = [
            s["name"]
            for s in index["studies"]
            if any(Path(m["path"]).resolve() == path.resolve() for m in s["members"])
        ]
        if users and not with_studies:
            names = ", ".join(repr(n) for n in users)
            raise ValueError(
                f"upload {hash_} is used by the studies {names}: delete them first, "
                "or delete them with it"
            )
        index["studies"] = [s for s in index["studies"] if s["name"] not in users]
        index["uploads"].pop(hash_, None)
        path.unlink(missing_ok=True)
        for curve in (_uploads_dir() / "curves").glob(f"*{hash_}*.safetensors"):
            index["curves"].pop(curve.stem, None)
            curve.unlink(missing_ok=True)
        _write_index(index)
    return users


def delete_study(name: str) -> None:
    """Delete the user study ``name`` (its checkpoints stay); ValueError if there is none."""
    if name == DEFAULT_NAME:
        raise ValueError(f"the bundled study {name!r} cannot be deleted")
    with _lock():
        index = _read_index()
        kept = [s for s in index["studies"] if s["name"] != name]
        if len(kept) == len(index["studies"]):
            raise ValueError(f"no study named {name!r}")
        index["studies"] = kept
        _write_index(index)
