"""Synthetic files in the exact layout of the mode-connectivity research code (for tests).

``torch.save({"epoch", "model_state", "optimizer_state"})``; a curve file holds their CurveNet's
keys (``net.<layer>.weight_<j>``, one set of BN statistics, and the buffers of its coeff_layer:
``binom/range/rev_range`` for their ``Bezier``, ``range`` alone for their ``PolyChain``), built
by renaming our modules' keys the way their curve classes name them.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import torch
from torch import nn

from landscape.models import build_model

WRN = {"name": "wideresnet", "kwargs": {"depth": 10, "widen_factor": 1, "num_classes": 10}}
PRE = {"name": "preresnet", "kwargs": {"depth": 8, "num_classes": 100}}


def make_model(arch: dict, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = build_model(arch["name"], **arch["kwargs"])
    with torch.no_grad():  # non-trivial BN statistics, so buffers are visibly carried over
        for name, buf in model.named_buffers():
            if name.endswith(("running_mean", "running_var")):
                buf.uniform_(0.5, 1.5)
    return model


def grda_state(model: nn.Module, steps: int) -> dict:
    """optimizer.state_dict() of the gRDA fork's optimizer (grda_pytorch.gRDA)."""
    params = list(model.parameters())
    return {
        "state": {
            i: {
                "iter_num": torch.tensor([float(steps)]),
                "accumulator": p.detach().clone(),
                "l1_accumulation": torch.tensor([0.01]),
            }
            for i, p in enumerate(params)
        },
        "param_groups": [{"lr": 0.1, "c": 0.001, "mu": 0.6, "params": list(range(len(params)))}],
    }


def save(path: Path, state: dict, **extra) -> Path:
    torch.save({"epoch": 7, "model_state": state, **extra}, path)
    return path


def _curve_key(name: str) -> tuple[str, str]:
    """Our base-network key -> (their curve module path, parameter) (inverse of the import)."""
    module, param = name.rsplit(".", 1)
    module = {"classifier.1": "fc1", "classifier.4": "fc2", "classifier.6": "fc3"}.get(
        module, module
    )
    if module.endswith(("downsample.0", "shortcut.0")):
        module = module[: -len(".0")]
    return module, param


def coeff_buffers(k: int, curve_type: str | None) -> dict[str, torch.Tensor]:
    """The buffers their ``curves.Bezier(k)`` / ``curves.PolyChain(k)`` register (k points).

    ``Bezier``: binom, range, rev_range; ``PolyChain``: range only (its num_bends is a plain
    attribute, not saved); None: no coeff_layer buffers at all.
    """
    if curve_type is None:
        return {}
    state = {"coeff_layer.range": torch.arange(0, float(k))}
    if curve_type == "bezier":
        binom = torch.tensor([math.comb(k - 1, i) for i in range(k)], dtype=torch.float)
        state = {
            "coeff_layer.binom": binom,
            **state,
            "coeff_layer.rev_range": torch.arange(float(k - 1), -1, -1),
        }
    return state


def curve_file(
    path: Path, model: nn.Module, points: list[dict], curve_type: str | None = "bezier"
) -> Path:
    """A CurveNet state dict with the given control points (params) and model's buffers.

    ``curve_type``: "bezier" or "polychain" (their coeff_layer's buffers), None: none saved.
    """
    k = len(points)
    state: dict[str, torch.Tensor] = coeff_buffers(k, curve_type)
    # Their curve layers register weight_0..weight_k, then bias_0..bias_k.
    for name, _ in model.named_parameters():
        module, param = _curve_key(name)
        for j, point in enumerate(points):
            state[f"net.{module}.{param}_{j}"] = point[name]
    for name, buf in model.named_buffers():
        module, what = name.rsplit(".", 1)
        state[f"net.{module}.{what}"] = buf
    return save(path, state, optimizer_state={"state": {}, "param_groups": [{"lr": 0.01}]})


def make_points(model: nn.Module, k: int) -> list[dict]:
    g = torch.Generator().manual_seed(1)
    base = dict(model.named_parameters())
    return [
        {n: (p.detach() + 0.1 * j * torch.randn(p.shape, generator=g)) for n, p in base.items()}
        for j in range(k)
    ]


def tiny_cifar10(folder: Path, n: int = 8) -> Path:
    """A tiny CIFAR-10 folder in the official pickle layout."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        batch = {
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"labels": [int(v) for v in rng.integers(0, 10, n)],
        }
        with (folder / name).open("wb") as f:
            pickle.dump(batch, f)
    return folder
