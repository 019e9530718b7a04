"""Open a WideResNet28x10 file of the research code and compute its sparsity.

Run: python bench/bench_research.py [--repeats 3] [--sparsity 0.9]
Writes, in a temporary folder, a file in the research code's format:
``torch.save({"epoch", "model_state", "optimizer_state"})`` of a WideResNet28x10 (36.5 M
parameters) whose conv and linear weights are ``--sparsity`` zeros, with a gRDA optimizer state
(accumulator per parameter). It then times, interleaved in the same run (medians):

- baseline: what a user of that code does by hand: ``torch.load(weights_only=True)``, build the
  model, ``load_state_dict``, count exact zeros of the conv/linear weights;
- landscape: ``open_research`` (load, recognise the architecture from the keys, validate every
  key, shape and value) and ``workspace.summarize`` (parameter count, global and per-layer
  sparsity);

and prints both times, their ratio and the peak resident memory.
"""

import argparse
import gc
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch

from landscape.models import build_model, prunable_names
from landscape.research import open_research
from landscape.workspace import summarize


def write_file(path: Path, sparsity: float) -> float:
    """A sparse WideResNet28x10 with a gRDA optimizer state; returns its true sparsity."""
    torch.manual_seed(0)
    model = build_model("wideresnet", depth=28, widen_factor=10, num_classes=10)
    zeros = total = 0
    with torch.no_grad():
        for name in prunable_names(model):
            w = model.get_parameter(name)
            w.mul_(torch.rand(w.shape) >= sparsity)
            zeros += int((w == 0).sum())
            total += w.numel()
    params = list(model.parameters())
    opt = {
        "state": {
            i: {"iter_num": torch.tensor([78200.0]), "accumulator": p.detach().clone(),
                "l1_accumulation": torch.tensor([0.02])}
            for i, p in enumerate(params)
        },
        "param_groups": [{"lr": 0.1, "c": 0.001, "mu": 0.6, "params": list(range(len(params)))}],
    }  # fmt: skip
    torch.save({"epoch": 200, "model_state": model.state_dict(), "optimizer_state": opt}, path)
    return zeros / total


def baseline(path: Path) -> float:
    obj = torch.load(path, map_location="cpu", weights_only=True)
    model = build_model("wideresnet", depth=28, widen_factor=10, num_classes=10)
    model.load_state_dict(obj["model_state"])
    zeros = total = 0
    for name in prunable_names(model):
        w = model.get_parameter(name)
        zeros += int((w == 0).sum())
        total += w.numel()
    return zeros / total


def landscape(path: Path) -> float:
    found = open_research(path)
    assert found.label == "WideResNet28x10", found.label
    return summarize(found.points[0]).sparsity


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sparsity", type=float, default=0.9)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "checkpoint-200.pt"
        truth = write_file(path, args.sparsity)
        size = path.stat().st_size / 2**20
        print(f"file: {size:.0f} MiB (model + gRDA accumulator), true sparsity {truth:.4f}")
        times: dict[str, list[float]] = {"baseline": [], "landscape": []}
        for _ in range(args.repeats):
            for name, fn in (("baseline", baseline), ("landscape", landscape)):
                gc.collect()
                start = time.perf_counter()
                got = fn(path)
                times[name].append(time.perf_counter() - start)
                assert abs(got - truth) < 1e-12, (name, got, truth)
    med = {k: statistics.median(v) for k, v in times.items()}
    for name, t in med.items():
        print(f"{name:<10} median {t:.2f} s over {args.repeats} runs")
    print(f"landscape / baseline: {med['landscape'] / med['baseline']:.2f}x")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak resident memory of this process: {peak:.2f} GiB")


if __name__ == "__main__":
    main()
