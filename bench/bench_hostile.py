"""Hostile files: time to reject and peak memory, each in a fresh process.

For each file kind of the issue "Hostile uploads and runaway requests" (a float64 weight of
1e300, metadata naming a 900002-deep PreResNet or a 100,000-layer MLP, a 2 MB zip bomb that
inflates to 2 GiB, a 100 MB safetensors header, a pickle that would run code), a fresh Python
process rejects the file through the loader (``load_checkpoint`` / ``open_research``) and
through ``workspace.save_upload`` (what ``landscape upload`` and the app run). Peak RSS
(``ru_maxrss``) is reported above a baseline process that only imports landscape. Every
rejection must take under 1 s and under 300 MB above the baseline.

Usage: python bench/bench_hostile.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.hostile_files import (  # noqa: E402 (after the path set-up above)
    checkpoint_a,
    write_arch_metadata,
    write_code_pickle,
    write_huge_float64,
    write_huge_header,
    write_zip_bomb,
)

MAX_SECONDS = 1.0
MAX_MB = 300.0

# Runs in the fresh process: imports, then times one rejection; prints JSON.
CHILD = """
import json, resource, sys, time
from pathlib import Path
from landscape.checkpoints import CheckpointError, load_checkpoint
from landscape.research import open_research
from landscape.workspace import save_upload
how, path, arch = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
out = {"error": None}
if how != "baseline":
    start = time.perf_counter()
    try:
        if how == "upload":
            save_upload(path.read_bytes(), path.name, arch=arch)
        elif path.suffix == ".pt":
            open_research(path, arch=arch)
        else:
            load_checkpoint(path)
    except CheckpointError as err:
        out["error"] = str(err)
    out["seconds"] = time.perf_counter() - start
out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def _child(how: str, path: Path | str = "", arch: dict | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # Through sh, which forks python: Linux carries ru_maxrss across exec (a child spawned
    # straight from this process would start at this process's peak, files and all).
    args = ["sh", "-c", '"$@"; exit $?', "sh", sys.executable, "-c", CHILD, how, str(path)]
    args.append(json.dumps(arch))
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    if done.returncode:
        return {"error": f"exit {done.returncode}: {done.stderr[-300:]}", "seconds": float("nan")}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _files(folder: Path) -> list[tuple[str, Path, dict | None]]:
    """(kind, file, architecture passed with it) for each hostile kind."""
    arch = checkpoint_a()[1]["arch"]
    code, _ = write_code_pickle(folder)
    return [
        ("1e300 float64 weight (.safetensors)", write_huge_float64(folder, ".safetensors"), None),
        ("1e300 float64 weight (.pt)", write_huge_float64(folder, ".pt"), arch),
        (
            "preresnet depth 900002 metadata",
            write_arch_metadata(folder, "preresnet", {"depth": 900002}, "deep"),
            None,
        ),
        (
            "mlp 1e5 layers metadata",
            write_arch_metadata(folder, "mlp", {"widths": [64] * 100_000}, "wide"),
            None,
        ),
        ("zip bomb .pt (2 MB -> 2 GiB)", write_zip_bomb(folder, true_crc=True), arch),
        ("safetensors header of 100 MB", write_huge_header(folder), None),
        ("pickle that would run code", code, None),
    ]


def main() -> int:
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        os.environ["LANDSCAPE_HOME"] = str(folder / "home")
        base = _child("baseline")["rss_mb"]
        print(f"baseline (import landscape): {base:.0f} MB peak RSS")
        print(f"{'file':38s} {'path':7s} {'MB':>7s} {'s':>6s} {'+MB':>6s}  verdict")
        for kind, path, arch in _files(folder):
            size_mb = path.stat().st_size / 2**20
            for how in ("loader", "upload"):
                r = _child(how, path, arch)
                extra = r.get("rss_mb", float("nan")) - base
                ok = r["error"] is not None and r["seconds"] < MAX_SECONDS and extra < MAX_MB
                failed += not ok
                verdict = "PASS" if ok else "FAIL"
                print(
                    f"{kind:38s} {how:7s} {size_mb:7.1f} {r['seconds']:6.3f} {extra:6.0f}  {verdict}"
                )
                print(f"    {(r['error'] or 'ACCEPTED').replace(tmp, '')[:150]}")
    print(f"{'PASS' if not failed else 'FAIL'}: {failed} over {MAX_SECONDS} s / {MAX_MB} MB")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
