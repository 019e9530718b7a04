"""Speed of the connectivity engine on the default digits runs (checkpoints/sgd, checkpoints/grda).

Run: python bench/bench_curves.py [--repeats 5] [--points 61] [--skip-study]

1. Evaluating ``--points`` points of the straight line (BN recalibration + train + test) with
   landscape.evaluate, against the dnn-mode-connectivity way (its utils.update_bn / test): per
   point deep-copy the model, load_state_dict the interpolated state, one BN pass in train mode
   with batch size 128 (momentum None, fresh statistics), then evaluate train and test with
   batch size 128. Ours runs with the same BN batch size (128), so the numbers must agree
   (checked to 1e-5); the naive loop runs once at torch's thread count and once with one thread
   (ours picks one thread for a model this small, see landscape.evaluate). "ours (default)" is
   what a curve study runs per path: landscape.studies.curve.evaluate_path with the default
   evaluation data (all metrics, weight norms and sparsity along the path).
2. One epoch of curve fitting (fit_curve, epochs=1) against one epoch of plain SGD training of
   the same model on the same data with the same batch size, both with one torch thread.
3. The whole default study, as ``landscape curve A B`` and the app run it
   (``landscape.studies.run(curve.KIND, CurveConfig(), ...)``, a fresh store): wall time, split
   into fitting and evaluation, and the fitted curve against the straight line.

Repeats are interleaved (the order alternates) and medians are compared, since the machine is
shared and timings are noisy.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from landscape.checkpoints import Checkpoint, load_checkpoint
from landscape.curves import BezierCurve, CurveConfig, fit_curve
from landscape.data import Dataset, batches, load_dataset
from landscape.evaluate import EvalData, evaluate_points
from landscape.params import split_state
from landscape.store import Store
from landscape.studies import curve, run
from landscape.studies.base import Context

REPO = Path(__file__).resolve().parent.parent
NAIVE = ("train_loss", "train_acc", "test_loss", "test_acc")  # what the naive loop computes


@torch.no_grad()
def naive_point(
    model: nn.Module, state: dict[str, torch.Tensor], data: Dataset, bs: int = 128
) -> dict[str, float]:
    """dnn-mode-connectivity's way: copy, load, update_bn, then test on train and test."""
    m = copy.deepcopy(model)
    m.load_state_dict(state)
    for mod in m.modules():
        if isinstance(mod, _BatchNorm):
            mod.reset_running_stats()
            mod.momentum = None
    m.train()
    for i in range(0, len(data.x_train), bs):
        m(data.x_train[i : i + bs])
    m.eval()
    out = {}
    for split, x, y in (("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test)):
        loss = correct = 0.0
        for i in range(0, len(x), bs):
            logits = m(x[i : i + bs])
            loss += F.cross_entropy(logits, y[i : i + bs], reduction="sum").item()
            correct += (logits.argmax(1) == y[i : i + bs]).sum().item()
        out[f"{split}_loss"], out[f"{split}_acc"] = loss / len(x), correct / len(x)
    return out


def with_threads(n: int | None, fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` run with ``n`` torch threads (None: unchanged)."""

    def run() -> object:
        before = torch.get_num_threads()
        torch.set_num_threads(n or before)
        try:
            return fn()
        finally:
            torch.set_num_threads(before)

    return run


def interleaved(cases: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall time of each case over ``repeats`` rounds, the order rotating per round."""
    names = list(cases)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            cases[name]()
            times[name].append(time.perf_counter() - start)
    return {n: statistics.median(t) for n, t in times.items()}


def bench_evaluation(a: Checkpoint, b: Checkpoint, data: Dataset, points: int, repeats: int):
    model = a.build_model()
    pa, _ = split_state(model, a.state)
    pb, _ = split_state(model, b.state)
    ts = np.linspace(0, 1, points)
    line = BezierCurve(pa, pb, order=1)

    def naive() -> dict[str, np.ndarray]:
        rows = []
        for t in ts:
            state = {k: (1 - t) * pa[k] + t * pb[k] if k in pa else v for k, v in a.state.items()}
            rows.append(naive_point(model, state, data))
        return {m: np.array([r[m] for r in rows]) for m in NAIVE}

    same_bn = EvalData.from_dataset(data, batch_size=128, eval_batch_size=128)
    default = EvalData.from_dataset(data)

    def ours(evdata: EvalData) -> Callable[[], dict[str, np.ndarray]]:
        coords = np.stack([1 - ts, ts], 1)  # the line: basis [A, B], coords [1 - t, t]
        return lambda: evaluate_points(model, [line.start, line.end], coords, evdata)

    def ours_path() -> dict[str, np.ndarray]:
        """What the curve study runs for one path (no store key: nothing resumed or saved)."""
        with tempfile.TemporaryDirectory() as tmp:
            context = Context(Store(tmp), "curve", "", None, (0, 1))
            return curve.evaluate_path(model, line, ts, default, context).columns

    want, got = naive(), ours(same_bn)()
    worst = max(float(np.max(np.abs(got[m] - want[m]))) for m in NAIVE)
    assert worst < 1e-5, f"ours and the naive loop differ by {worst}"
    path = ours_path()
    worst_default = max(float(np.max(np.abs(path[m] - want[m]))) for m in NAIVE)
    threads = torch.get_num_threads()
    med = interleaved(
        {
            f"naive ({threads} threads)": naive,
            "naive (1 thread)": with_threads(1, naive),
            "ours (BN batch 128)": ours(same_bn),
            "ours (default: evaluate_path)": ours_path,
        },
        repeats,
    )
    print(f"1. evaluating {points} points (BN recalibration + train + test), median of {repeats}")
    print(f"   max |ours - naive| over all metrics and points: {worst:.2e}")
    print(f"   max |ours (default, one BN batch) - naive (BN batch 128)|: {worst_default:.2e}")
    for name, sec in med.items():
        print(f"   {name:<30} {sec:7.3f} s  {1e3 * sec / points:7.2f} ms/point")
    base = med["ours (BN batch 128)"]
    default_s = med["ours (default: evaluate_path)"]
    for name in (f"naive ({threads} threads)", "naive (1 thread)"):
        print(f"   speed-up of ours (BN batch 128) over {name}: {med[name] / base:.2f}x")
        print(f"   speed-up of ours (default) over {name}: {med[name] / default_s:.2f}x")


def bench_fit_epoch(a: Checkpoint, b: Checkpoint, data: Dataset, repeats: int):
    cfg = CurveConfig(epochs=1)

    def sgd_epoch() -> None:
        model = a.build_model().train()
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
        gen = torch.Generator().manual_seed(0)
        for xb, yb in batches(
            data.x_train, data.y_train, cfg.batch_size, shuffle=True, generator=gen
        ):
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    med = interleaved(
        {
            "plain SGD epoch": with_threads(1, sgd_epoch),
            "curve fit epoch": with_threads(1, lambda: fit_curve(a, b, cfg, data)),
        },
        repeats,
    )
    print(f"2. one epoch, batch size {cfg.batch_size}, 1 thread, median of {repeats}")
    for name, sec in med.items():
        print(f"   {name:<30} {sec:7.3f} s")
    print(f"   curve fit / plain SGD: {med['curve fit epoch'] / med['plain SGD epoch']:.2f}x")


def bench_study(a: Checkpoint, b: Checkpoint):
    cfg = CurveConfig()
    marks: dict[str, float] = {}

    def progress(done: int, total: int, stage: str) -> None:
        marks.setdefault(stage, time.perf_counter())

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        res = run(curve.KIND, cfg, curve.CurveInputs(a, b), store=Store(tmp), progress=progress)
        total = time.perf_counter() - start
    fit = marks.get("evaluating curve", start) - start
    print(f"3. whole default study ({cfg}): {total:.1f} s")
    print(f"   fitting {fit:.1f} s, evaluating curve and line {total - fit:.1f} s")
    for name in ("curve", "line"):
        p = res.path(name)
        loss, acc = p.columns["train_loss"], p.columns["test_acc"]
        print(
            f"   {name:<5} max train loss {np.max(loss):.4f}  "
            f"train barrier {p.barrier('train_loss').height:.4f}  "
            f"mean train loss {np.mean(loss):.4f}  min test acc {np.min(acc):.4f}"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--points", type=int, default=61)
    p.add_argument("--skip-study", action="store_true")
    args = p.parse_args()
    a = load_checkpoint(REPO / "checkpoints" / "sgd" / "final.safetensors")
    b = load_checkpoint(REPO / "checkpoints" / "grda" / "final.safetensors")
    data = load_dataset("digits", seed=a.meta["data"]["split_seed"])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, digits cnn")
    bench_evaluation(a, b, data, args.points, args.repeats)
    bench_fit_epoch(a, b, data, args.repeats)
    if not args.skip_study:
        bench_study(a, b)


if __name__ == "__main__":
    main()
