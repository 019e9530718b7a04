"""A sweep's run files as bytes, shared by tests/test_sweep.py and bench/bench_sweep.py."""

from __future__ import annotations

import json
from pathlib import Path


def run_files(out: Path) -> dict[str, bytes]:
    """The bytes of every file under runs/; run.json without ``wall_time_s`` (a timing): the
    same whichever process trained each run."""
    files = {}
    for path in sorted((out / "runs").rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            if path.name == "run.json":
                record = json.loads(data)
                del record["wall_time_s"]
                data = json.dumps(record, sort_keys=True).encode()
            files[str(path.relative_to(out))] = data
    return files
