"""Limits an operator sets through the environment, read by :func:`settings` alone.

=========================  ===========  ==================================================
variable                   default      meaning
=========================  ===========  ==================================================
``LANDSCAPE_HOME``         ./.landscape results, uploads and studies (read by ``store.home``)
``LANDSCAPE_UPLOAD_QUOTA`` 5 GB         total bytes of ``home()/uploads`` (files + curves)
``LANDSCAPE_MAX_UPLOAD``   1 GiB        bytes of one uploaded file (the page, the CLI and
                                        the server's ``server.maxUploadSize`` follow it)
=========================  ===========  ==================================================
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["QUOTA_ENV", "MAX_UPLOAD_ENV", "Settings", "settings"]

QUOTA_ENV = "LANDSCAPE_UPLOAD_QUOTA"
MAX_UPLOAD_ENV = "LANDSCAPE_MAX_UPLOAD"


@dataclass(frozen=True)
class Settings:
    """The limits in force (bytes)."""

    upload_quota: int = 5 * 10**9  # all uploads together: three big uploads cannot fill a disk
    max_upload: int = 1024 * 1024 * 1024  # one file: a WRN28x10 curve file is ~0.6 GB


def _bytes(name: str, default: int) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(float(text))
    except ValueError as err:
        raise ValueError(f"${name} must be a number of bytes, got {text!r}") from err
    if value <= 0:
        raise ValueError(f"${name} must be positive, got {text!r}")
    return value


def settings() -> Settings:
    """The limits: the environment variables above, else the defaults (read on every call)."""
    d = Settings()
    return Settings(
        upload_quota=_bytes(QUOTA_ENV, d.upload_quota),
        max_upload=_bytes(MAX_UPLOAD_ENV, d.max_upload),
    )
