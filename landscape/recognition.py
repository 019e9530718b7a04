"""Architectures recognised from a state dict's key set (for files that do not name theirs).

The mode-connectivity research code's VGG, PreResNet and WideResNet (:mod:`landscape.research`
opens their files) and landscape's own cnn and mlp, read off the key names and a few shapes;
:func:`recognize` then checks every key and shape against the guess.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from landscape.checkpoints import CheckpointError, fit_state
from landscape.layouts import key_candidates
from landscape.models import MODELS

__all__ = ["Recognition", "not_recognised", "recognition_of", "recognize"]

_IN_SHAPE = [3, 32, 32]  # every architecture of that code is built for 32x32 RGB images


@dataclass(frozen=True)
class Recognition:
    """An architecture recognised from a state dict's key set.

    Attributes:
        arch: ``{"name", "kwargs"}`` for :func:`landscape.models.build_model`.
        label: the research code's name for it ("VGG16", "WideResNet28x10", ...).
        data: the data set its runs used: ``{"name", "split_seed", "normalize"}`` (CIFAR-100 for
            100 classes, else CIFAR-10; the "VGG" transform for VGG, "ResNet" for the others).
    """

    arch: dict[str, Any]
    label: str
    data: dict[str, Any]


def _blocks(keys: set[str], stage: str) -> int:
    """Number of residual blocks in ``stage`` (e.g. "layer1"), from keys ``stage.<i>.*``."""
    return len({k.split(".")[1] for k in keys if k.startswith(stage + ".")})


def _guess(state: Mapping[str, torch.Tensor]) -> tuple[str, dict[str, Any], str] | None:
    """(registry name, kwargs, research label) read off the key set, or None."""
    keys = set(state)
    if "classifier.6.weight" in keys and any(k.startswith("layer_blocks.") for k in keys):
        convs = [k for k in keys if k.startswith("layer_blocks.") and state[k].ndim == 4]
        batch_norm = any(k.endswith("running_mean") for k in keys)
        depth = len(convs) + 3  # 13 convs + 3 linear layers = VGG16, 16 + 3 = VGG19
        kwargs = {"depth": depth, "batch_norm": batch_norm}
        classes = state["classifier.6.weight"].shape[0]
        return "vgg", {**kwargs, "num_classes": classes}, f"VGG{depth}{'BN' if batch_norm else ''}"
    if {"linear.weight", "conv1.bias", "layer1.0.conv1.weight"} <= keys:
        n = _blocks(keys, "layer1")
        widen = state["layer1.0.conv1.weight"].shape[0] // 16
        batch_norm = "bn1.weight" in keys
        kwargs = {"depth": 6 * n + 4, "widen_factor": widen, "batch_norm": batch_norm}
        label = f"WideResNet{6 * n + 4}x{widen}{'' if batch_norm else '_nobn'}"
        return "wideresnet", {**kwargs, "num_classes": state["linear.weight"].shape[0]}, label
    if {"fc.weight", "bn.weight", "conv1.weight", "layer1.0.bn1.weight"} <= keys:
        n = _blocks(keys, "layer1")
        depth = 9 * n + 2 if "layer1.0.conv3.weight" in keys else 6 * n + 2
        kwargs = {"depth": depth, "num_classes": state["fc.weight"].shape[0]}
        return "preresnet", kwargs, f"PreResNet{depth}"
    return None


# Inputs of the registry's own runs, by the size of a flattened image: digits, MNIST, CIFAR.
_SHAPES = {64: ([1, 8, 8], "digits"), 784: ([1, 28, 28], "mnist"), 3072: ([3, 32, 32], "cifar10")}


def _guess_registry(state: Mapping[str, torch.Tensor]) -> tuple[str, dict, int] | None:
    """(name, kwargs, flattened input size) of landscape's cnn or mlp, read off the keys."""
    keys = set(state)
    if {"features.0.weight", "classifier.0.weight", "classifier.2.weight"} <= keys:
        convs = sorted(
            (int(k.split(".")[1]), state[k])
            for k in keys
            if k.startswith("features.") and k.endswith(".weight") and state[k].ndim == 4
        )
        channels = [w.shape[0] for _, w in convs]
        fc = state["classifier.0.weight"]
        pool = round((fc.shape[1] // max(channels[-1], 1)) ** 0.5)
        c_in = convs[0][1].shape[1]
        kwargs = {"channels": channels, "hidden": fc.shape[0], "pool": pool}
        kwargs["num_classes"] = state["classifier.2.weight"].shape[0]
        return "cnn", kwargs, 64 if c_in == 1 else 3072
    linears = sorted(int(k.split(".")[1]) for k in keys if re.fullmatch(r"net\.\d+\.weight", k))
    if linears and keys == {f"net.{i}.{p}" for i in linears for p in ("weight", "bias")}:
        dims = [state[f"net.{i}.weight"].shape for i in linears]
        kwargs = {"widths": [d[0] for d in dims[:-1]], "num_classes": dims[-1][0]}
        return "mlp", kwargs, dims[0][1]
    return None


def _defaults(name: str) -> dict[str, Any]:
    """A registry model's constructor defaults, sequences as lists (as in metadata)."""
    params = inspect.signature(MODELS[name]).parameters.values()
    out = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


_DEFAULTS = {name: _defaults(name) for name in ("cnn", "mlp")}


def _registry_recognition(state: Mapping[str, torch.Tensor]) -> Recognition | None:
    """landscape's own cnn/mlp (a plain state dict of a default run), sized to its data set."""
    guess = _guess_registry(state)
    if guess is None:
        return None
    name, kwargs, flat = guess
    in_shape, data = _SHAPES.get(flat, ([1, 8, 8], "digits"))
    if name == "cnn":
        in_shape = [1, 8, 8] if flat == 64 else [3, 32, 32]
    if data == "cifar10" and kwargs["num_classes"] == 100:
        data = "cifar100"
    # Arguments equal to the constructor's defaults are left out, as `landscape train` writes
    # them, so a recognised state dict compares equal to the run it came from.
    kwargs = {k: v for k, v in kwargs.items() if k == "num_classes" or _DEFAULTS[name].get(k) != v}
    arch = {"name": name, "kwargs": {"in_shape": in_shape, **kwargs}}
    return Recognition(arch=arch, label=name, data={"name": data, "split_seed": 0})


def recognition_of(state: Mapping[str, torch.Tensor]) -> Recognition | None:
    """The guess read off the key names and a few shapes (not validated), or None; key
    prefixes shared by every key (``module.``, ...) are looked through."""
    for _, candidate in key_candidates(state):
        found = _research_recognition(candidate) or _registry_recognition(candidate)
        if found is not None:
            return found
    return None


def _research_recognition(state: Mapping[str, torch.Tensor]) -> Recognition | None:
    guess = _guess(state)
    if guess is None:
        return None
    name, kwargs, label = guess
    arch = {"name": name, "kwargs": {"in_shape": list(_IN_SHAPE), **kwargs}}
    data = {
        "name": "cifar100" if kwargs["num_classes"] == 100 else "cifar10",
        "split_seed": 0,
        "normalize": "vgg" if name == "vgg" else "resnet",
    }
    return Recognition(arch=arch, label=label, data=data)


def not_recognised(source: str) -> CheckpointError:
    return CheckpointError(
        f"{source}: architecture not recognised from its keys (not landscape's cnn or mlp, "
        f"nor a VGG, PreResNet or WideResNet of the mode-connectivity code); choose one with "
        f"--arch (a registry name, torchvision:<name> or file:<path.py>:<callable>)"
    )


def recognize(state: Mapping[str, torch.Tensor], *, source: str = "file") -> Recognition:
    """Recognise a research-code architecture (VGG, PreResNet, WideResNet) from a state dict.

    The guess is read off the key names and a few shapes, then checked like any checkpoint:
    every key and shape must match the guessed architecture.

    Raises:
        CheckpointError: the key set matches none of them (the user must choose).
    """
    recognition = recognition_of(state)
    if recognition is None:
        raise not_recognised(source)
    where = f"{source} (recognised as {recognition.label})"
    fit_state(dict(state), recognition.arch, source=where)
    return recognition
