"""Time a gRDA sweep with parallel worker processes against the same trainings one by one.

Run: python bench/bench_sweep.py [--epochs 5] [--workers 2] [--repeats 3] [--device cpu]

The sweep is 3 values of c x 4 values of mu x 1 seed on digits with the default cnn, every run
from one shared initial checkpoint; epochs are cut to 5 (the default study uses 60) to keep the
benchmark short. Both sides run end to end as ``python -m landscape sweep`` in a fresh process,
into a fresh folder: the baseline with ``--workers 1`` (the 12 trainings one after another in
one process, torch's default thread count), the same with one torch thread
(``OMP_NUM_THREADS=1``: on a shared, busy machine a multi-threaded small model can lose more to
waiting threads than it gains), and ``--workers N`` (N spawned processes with cores // N threads
each). Repeats are interleaved (the order rotates); the medians and their ratios are printed.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from landscape.train import TrainConfig, make_initial

REPO = Path(__file__).resolve().parent.parent
C = "0.001,0.002,0.005"
MU = "0.51,0.55,0.6,0.7"


def run_sweep_process(
    out: Path, init: Path, workers: int, epochs: int, device: str, threads: int | None
) -> float:
    """Wall time of one ``landscape sweep`` process (interpreter start included)."""
    cmd = [sys.executable, "-m", "landscape", "sweep", "--c", C, "--mu", MU, "--seeds", "0"]
    cmd += ["--arch", "cnn", "--epochs", str(epochs), "--lr", "0.1", "--snapshots", "2"]
    cmd += ["--init", str(init), "--workers", str(workers), "--device", device, "--out", str(out)]
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def training_seconds(out: Path) -> float:
    """Sum of the runs' own wall times (train() calls, data loading included)."""
    rows = json.loads((out / "sweep.json").read_text())["rows"]
    return sum(r["wall_time_s"] for r in rows)


def fmt(values: list[float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    arms = {  # name: (workers, torch threads of the main process; None = torch's default)
        "sequential": (1, None),
        "sequential_1thread": (1, 1),
        "parallel": (args.workers, None),
    }
    times: dict[str, list[float]] = {name: [] for name in arms}
    train_s: dict[str, list[float]] = {name: [] for name in arms}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        init = root / "init.safetensors"
        make_initial(TrainConfig(data="digits", arch="cnn", seed=0), init)
        names = list(arms)
        for rep in range(args.repeats):
            for name in names[rep % 3 :] + names[: rep % 3]:
                out = root / f"{name}_{rep}"
                workers, threads = arms[name]
                t = run_sweep_process(out, init, workers, args.epochs, args.device, threads)
                times[name].append(t)
                train_s[name].append(training_seconds(out))
                print(f"repeat {rep}: {name:<18} {t:7.1f} s wall", flush=True)
    med = {name: statistics.median(v) for name, v in times.items()}
    print(f"sweep 3 c x 4 mu x 1 seed, digits, cnn, {args.epochs} epochs, device {args.device}")
    for name, (workers, threads) in arms.items():
        each = "cores // workers" if workers > 1 else threads or "default"
        what = f"{workers} worker(s), {each} thread(s)"
        print(f"{name:<18} {what:<32} median wall {med[name]:7.1f} s  ({fmt(times[name])})")
    print(f"speed-up sequential / parallel:          {med['sequential'] / med['parallel']:.2f}x")
    print(
        "speed-up sequential_1thread / parallel:  "
        f"{med['sequential_1thread'] / med['parallel']:.2f}x"
    )
    for name in arms:
        print(
            f"{name:<18} median sum of per-run train() time {statistics.median(train_s[name]):.1f} s"
        )


if __name__ == "__main__":
    main()
