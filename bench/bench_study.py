"""The whole default study from nothing through the command line, as a user runs it.

Run: python bench/bench_study.py [--skip-one-thread]

Runs the five study commands (curve, plane, pca, hessian, slice) on the bundled default
checkpoints in a fresh ``LANDSCAPE_HOME``, as subprocesses with default settings, and prints
each command's wall time, the total and the load average (target: <= 40 s at load <= 2).
Interleaved with it, command by command, the same study with torch forced to one thread
(``OMP_NUM_THREADS=1``): the baseline the thread policy (``small_model_threads``) should match.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CK = REPO / "checkpoints"
SGD, GRDA = str(CK / "sgd" / "final.safetensors"), str(CK / "grda" / "final.safetensors")


def commands(out: Path) -> dict[str, list[str]]:
    return {
        "curve": ["curve", SGD, GRDA, "--out", str(out / "curve")],
        "plane": ["plane", SGD, GRDA, "--curve", str(out / "curve" / "curve.safetensors")],
        "pca": ["pca", str(CK / "sgd"), str(CK / "grda")],
        "hessian": ["hessian", SGD, "--direction-to", GRDA],
        "slice": ["slice", SGD, "--to", GRDA],
    }


def _run(name: str, argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "landscape", *argv], cwd=REPO, env=env, capture_output=True
    )
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr.decode()[-2000:]}")
    return time.perf_counter() - start


def studies(modes: dict[str, dict[str, str]]) -> dict[str, dict[str, float]]:
    """Each mode's study in its own fresh home, command by command interleaved (so load on
    the machine hits the modes alike): {mode: {command: seconds}}."""
    homes = {m: Path(tempfile.mkdtemp(prefix="bench_study_")) for m in modes}
    times: dict[str, dict[str, float]] = {m: {} for m in modes}
    for name in commands(Path()):
        for mode, extra in modes.items():
            env = {**os.environ, "LANDSCAPE_HOME": str(homes[mode]), **extra}
            times[mode][name] = _run(name, commands(homes[mode])[name], env)
    return times


def report(label: str, times: dict[str, float]) -> None:
    parts = ", ".join(f"{k} {v:.1f}" for k, v in times.items())
    print(f"  {label:<38} total {sum(times.values()):5.1f} s ({parts})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-one-thread", action="store_true", help="skip the baseline")
    args = parser.parse_args()
    modes = {"default threads (as shipped)": {}}
    if not args.skip_one_thread:
        modes["forced 1 thread (OMP_NUM_THREADS=1)"] = {"OMP_NUM_THREADS": "1"}
    before = os.getloadavg()
    times = studies(modes)
    after = os.getloadavg()
    print(f"{os.cpu_count()} CPUs; load average before {before[0]:.2f}, after {after[0]:.2f} "
          f"(1 min), {after[1]:.2f} (5 min)")  # fmt: skip
    for label, t in times.items():
        report(label, t)


if __name__ == "__main__":
    main()
