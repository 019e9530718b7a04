"""How fast the command line answers, and how soon ``landscape app`` draws its first page.

Run: python bench/bench_cli.py [--repeats 5] [--no-app]

1. Wall time (median of ``--repeats``) of ``landscape --help``, ``landscape curve --help`` and
   an argument error (``landscape plane --grid x``), each beside bare ``python -c pass`` and
   ``python -c "import torch"`` measured in the same run (target: < 0.5 s; issue 15 measured
   3.26 s for ``--help`` when every command imported torch).
2. ``landscape app``: seconds from the server answering its health check (``running_app``
   returns then) to the first page's first chart drawn in headless Chromium (target: < 2 s).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "landscape"]
CASES = {
    "python -c pass (baseline)": [sys.executable, "-c", "pass"],
    "python -c 'import torch' (baseline)": [sys.executable, "-c", "import torch"],
    "landscape --help": [*CLI, "--help"],
    "landscape curve --help": [*CLI, "curve", "--help"],
    "landscape plane --grid x (error)": [*CLI, "plane", "--grid", "x"],
}


def _time(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, capture_output=True, check=False)
    return time.perf_counter() - start


def bench_cli(repeats: int) -> None:
    times: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(repeats):  # interleaved: load on the machine hits every case alike
        for name, cmd in CASES.items():
            times[name].append(_time(cmd))
    print(f"load average {os.getloadavg()[0]:.2f}; median of {repeats} runs:")
    for name, values in times.items():
        print(f"  {name:<40} {statistics.median(values):6.2f} s (min {min(values):.2f})")


def bench_first_page() -> None:
    from playwright.sync_api import sync_playwright

    from landscape.app.serve import CHROMIUM, CHROMIUM_ARGS, running_app

    home = Path(tempfile.mkdtemp(prefix="bench_cli_app_"))
    with running_app(home) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        visits = []
        for _ in range(2):  # the first visit after start, then a fresh one (warm server)
            start = time.perf_counter()  # the server answers its health check from here on
            context = browser.new_context()
            page = context.new_page()
            page.goto(url)
            page.locator(".js-plotly-plot").first.wait_for(timeout=120_000)
            visits.append(time.perf_counter() - start)
            context.close()
        browser.close()
    print(
        f"landscape app: first chart drawn {visits[0]:.2f} s after the server answered "
        f"(target < 2 s); a second visit, warm server: {visits[1]:.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs per case (default: 5)")
    parser.add_argument("--no-app", action="store_true", help="skip the first-page measure")
    args = parser.parse_args()
    bench_cli(args.repeats)
    if not args.no_app:
        bench_first_page()


if __name__ == "__main__":
    main()
