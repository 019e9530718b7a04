"""How fast the command line answers: ``landscape <cmd> --help`` and argument errors.

Run: python bench/bench_cli.py [--repeats 5]

Wall time (median of ``--repeats``, interleaved) of ``landscape --help``, of ``landscape <cmd>
--help`` for every command and of a few argument errors, each beside bare ``python -c pass``
and ``python -c "import torch"`` measured in the same run (target: < 0.5 s; issue 15 measured
3.26 s for ``--help`` when every command imported torch). ``landscape app``'s first page is
measured by ``bench/bench_app.py --first-only``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "landscape"]
BASELINES = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
}
ERRORS = {  # argument errors argparse reports, and out-of-range values (exit status 2)
    "plane a b --grid x": ["plane", "a", "b", "--grid", "x"],
    "plane a b --third c --grid 0": ["plane", "a", "b", "--third", "c", "--grid", "0"],
    "curve a b --out o --order 0": ["curve", "a", "b", "--out", "o", "--order", "0"],
    "train --epochs 0 --out o": ["train", "--epochs", "0", "--out", "o"],
    "train --arch nope --out o": ["train", "--arch", "nope", "--out", "o"],
    "sweep --c 0.1 --mu x --out o": ["sweep", "--c", "0.1", "--mu", "x", "--out", "o"],
    "info x.pt --no-such-option": ["info", "x.pt", "--no-such-option"],
}


def _cases() -> dict[str, list[str]]:
    from landscape.cli import COMMANDS

    cases = {f"{name} (baseline)": cmd for name, cmd in BASELINES.items()}
    cases["landscape --help"] = [*CLI, "--help"]
    cases |= {f"landscape {c} --help": [*CLI, c, "--help"] for c in COMMANDS}
    cases |= {f"landscape {name} (error)": [*CLI, *argv] for name, argv in ERRORS.items()}
    return cases


def _time(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, capture_output=True, check=False)
    return time.perf_counter() - start


def bench_cli(repeats: int) -> None:
    cases = _cases()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):  # interleaved: load on the machine hits every case alike
        for name, cmd in cases.items():
            times[name].append(_time(cmd))
    print(f"load average {os.getloadavg()[0]:.2f}; median of {repeats} runs (target < 0.5 s):")
    for name, values in times.items():
        print(f"  {name:<50} {statistics.median(values):6.2f} s (max {max(values):.2f})")
    slowest = max((n for n in times if "baseline" not in n), key=lambda n: max(times[n]))
    print(f"slowest: {slowest}, max {max(times[slowest]):.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs per case (default: 5)")
    bench_cli(parser.parse_args().repeats)


if __name__ == "__main__":
    main()
