"""Time one GRDA.step against one torch.optim.SGD.step (its default implementation).

Run: python bench/bench_optim.py [--device cuda] [--repeats 400]
Prints the median time per step of each optimizer and the ratios GRDA / SGD (SGD's default
implementation: a for-loop on CPU, foreach on CUDA) and GRDA / SGD(foreach=True), measured
interleaved in the same run on the parameter lists of a small CNN and of ResNet-20.
"""

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from landscape.models import build_model
from landscape.optim import GRDA


def build(name: str) -> nn.Module:
    """The registry's cnn on digits-sized input, or resnet20 on CIFAR-sized input."""
    if name == "cnn":
        return build_model("cnn", in_shape=(1, 8, 8), num_classes=10)
    return build_model("resnet20", in_shape=(3, 32, 32), num_classes=10)


def leaves(model: nn.Module, device: str, seed: int) -> list[torch.Tensor]:
    """Independent copies of the model's parameters, each with a random gradient."""
    gen = torch.Generator().manual_seed(seed)
    params = []
    for p in model.parameters():
        q = p.detach().clone().to(device).requires_grad_()
        q.grad = torch.randn(q.shape, generator=gen).to(device)
        params.append(q)
    return params


def timer(device: str) -> Callable[[Callable[[], object]], float]:
    def measure(fn: Callable[[], object]) -> float:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start

    return measure


def bench_case(model: nn.Module, momentum: float, device: str, repeats: int, warmup: int) -> dict:
    """Median seconds per step of each optimizer, measured in turn on the same parameter shapes."""
    opts = {
        "sgd": torch.optim.SGD(leaves(model, device, 0), lr=0.01, momentum=momentum),
        # SGD's default is a for-loop on CPU and foreach on CUDA; show foreach on both.
        "sgd_foreach": torch.optim.SGD(
            leaves(model, device, 0), lr=0.01, momentum=momentum, foreach=True
        ),
        "grda": GRDA(leaves(model, device, 0), lr=0.01, c=0.005, mu=0.7, momentum=momentum),
    }
    measure = timer(device)
    times: dict[str, list[float]] = {name: [] for name in opts}
    names = list(opts)
    for i in range(warmup + repeats):
        # Rotate the order so that no optimizer always runs first (or on a warm cache).
        k = i % len(names)
        for name in names[k:] + names[:k]:
            t = measure(opts[name].step)
            if i >= warmup:
                times[name].append(t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--repeats", type=int, default=400, help="timed steps per optimizer")
    parser.add_argument("--warmup", type=int, default=30, help="untimed steps first")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    print(f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}")
    print("times are medians in microseconds; SGD = torch.optim.SGD default, SGDfe = foreach=True")
    cols = ("tensors", "params", "momentum", "SGD", "SGDfe", "GRDA", "GRDA/SGD", "GRDA/SGDfe")
    print(f"{'model':<10}" + "".join(f"{col:>11}" for col in cols))
    for name in ("cnn", "resnet20"):
        model = build(name)
        n_tensors = len(list(model.parameters()))
        n_params = sum(p.numel() for p in model.parameters())
        for momentum in (0.0, 0.9):
            t = bench_case(model, momentum, args.device, args.repeats, args.warmup)
            us = [t[key] * 1e6 for key in ("sgd", "sgd_foreach", "grda")]
            ratios = [t["grda"] / t["sgd"], t["grda"] / t["sgd_foreach"]]
            print(
                f"{name:<10}{n_tensors:>11}{n_params:>11}{momentum:>11}"
                + "".join(f"{u:>11.1f}" for u in us)
                + "".join(f"{r:>11.2f}" for r in ratios)
            )


if __name__ == "__main__":
    main()
