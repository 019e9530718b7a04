"""Time a gRDA sweep with 2 worker processes (and 2 torchrun-style ranks) against 1 process.

Run: python bench/bench_sweep.py [--epochs 20] [--workers 2] [--repeats 2] [--device cpu]

The sweep is 3 values of c x 4 values of mu x 1 seed on digits with the default cnn, every run
from one shared initial checkpoint, 20 epochs (the default study uses 60). Every arm runs end
to end as ``python -m landscape sweep`` in a fresh process, into a fresh folder (interpreter and
imports included): ``--workers 1`` (the runs one after another), ``--workers N`` (N processes
forked from one forkserver, living for the whole sweep, taking runs from a queue) and
``--launcher N`` (N ranks as torchrun starts them, each training its share). Repeats are
interleaved (the order rotates); the medians, their ratios and the load average before each
arm are printed, and the run files of every arm are compared with the sequential ones (bytes;
run.json without ``wall_time_s``, the one field that differs).
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
sys.path.insert(0, str(REPO))

from tests.sweep_files import run_files  # noqa: E402 (after the path set-up above)

C = "0.001,0.002,0.005"
MU = "0.51,0.55,0.6,0.7"


def run_sweep_process(out: Path, init: Path, option: list[str], epochs: int, device: str) -> float:
    """Wall time of one ``landscape sweep`` process (interpreter start and exit included).

    Output goes to a file, not a pipe: what is timed is the process a shell waits for, not
    the fork server's own exit, which holds the pipe ~1 s longer while it tears torch down.
    """
    cmd = [sys.executable, "-m", "landscape", "sweep", "--c", C, "--mu", MU, "--seeds", "0"]
    cmd += ["--arch", "cnn", "--epochs", str(epochs), "--lr", "0.1", "--snapshots", "2"]
    cmd += ["--init", str(init), "--device", device, "--out", str(out), *option]
    start = time.perf_counter()
    with open(out.parent / f"{out.name}.log", "w") as log:
        subprocess.run(cmd, cwd=REPO, check=True, stdout=log, stderr=subprocess.STDOUT)
    return time.perf_counter() - start


def training_seconds(out: Path) -> tuple[float, float]:
    """(sum of the runs' own wall times (their train() calls), the first run's excess over
    the median run: the warm-up every training process pays once, torch.optim importing
    torch._dynamo and the digits loader scikit-learn)."""
    walls = [r["wall_time_s"] for r in json.loads((out / "sweep.json").read_text())["rows"]]
    return sum(walls), max(0.0, walls[0] - statistics.median(walls))


def fmt(values: list[float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    n = str(args.workers)
    arms = {
        "sequential": ["--workers", "1"],
        "workers": ["--workers", n],
        "launcher": ["--launcher", n],
    }
    times: dict[str, list[float]] = {name: [] for name in arms}
    loads: dict[str, list[float]] = {name: [] for name in arms}
    same = True
    train_s: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        init = root / "init.safetensors"
        make_initial(TrainConfig(data="digits", arch="cnn", seed=0), init)
        names = list(arms)
        for rep in range(args.repeats):
            for name in names[rep % 3 :] + names[: rep % 3]:
                out = root / f"{name}_{rep}"
                loads[name].append(os.getloadavg()[0])
                t = run_sweep_process(out, init, arms[name], args.epochs, args.device)
                times[name].append(t)
                print(f"repeat {rep}: {name:<10} {t:7.1f} s wall (load {loads[name][-1]:.2f})")
            train_s.append(training_seconds(root / f"sequential_{rep}"))
            reference = run_files(root / f"sequential_{rep}")
            for name in names[1:]:
                same &= run_files(root / f"{name}_{rep}") == reference
    med = {name: statistics.median(v) for name, v in times.items()}
    print(f"sweep 3 c x 4 mu x 1 seed, digits, cnn, {args.epochs} epochs, device {args.device}")
    print(
        f"cores {os.cpu_count()}; 1-minute load average before each arm: {fmt(sum(loads.values(), []))}"
    )
    for name, option in arms.items():
        print(
            f"{name:<10} {' '.join(option):<14} median wall {med[name]:7.1f} s  ({fmt(times[name])})"
        )
    print(f"speed-up sequential / {n} workers:     {med['sequential'] / med['workers']:.2f}x")
    print(f"speed-up sequential / launcher {n}:    {med['sequential'] / med['launcher']:.2f}x")
    # What the sequential arm's own split predicts for idle cores (Amdahl, no contention):
    # its start-up (wall minus the runs' train() time) and the warm-up once (a worker warms
    # up beside this process's own), the rest of the runs shared by N processes.
    train_med = statistics.median([t for t, _ in train_s])
    warm = statistics.median([w for _, w in train_s])
    start = med["sequential"] - train_med
    ideal = start + warm + (train_med - warm) / args.workers
    print(
        f"sequential: {train_med:.1f} s in train() ({warm:.1f} s of it the first run's warm-up)"
        f", {start:.1f} s start-up; with {n} idle cores {n} workers would take >= {ideal:.1f} s,"
        f" at most {med['sequential'] / ideal:.2f}x"
    )
    print(f"run files identical to the sequential sweep: {same}")


if __name__ == "__main__":
    main()
