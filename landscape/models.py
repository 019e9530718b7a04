"""Architecture registry: the only place where a name maps to a model class.

Every constructor takes ``in_shape`` (C, H, W) and ``num_classes`` plus its own keyword
arguments, so a checkpoint's metadata ``{"name": ..., "kwargs": ...}`` rebuilds the model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from landscape.models_research import VGG, PreResNet, WideResNet
from landscape.sources import build_external, is_external

__all__ = [
    "MODELS",
    "RESEARCH_ARCHS",
    "build_model",
    "min_tensors",
    "resolve_arch",
    "prunable_names",
    "MLP",
    "CNN",
    "ResNet20",
    "VGG",
    "PreResNet",
    "WideResNet",
]


class MLP(nn.Module):
    """Fully connected ReLU network on flattened inputs.

    Args:
        in_shape: input shape (C, H, W).
        num_classes: number of output logits.
        widths: hidden layer widths (default (64, 64)).
    """

    def __init__(
        self,
        in_shape: Sequence[int] = (1, 8, 8),
        num_classes: int = 10,
        widths: Sequence[int] = (64, 64),
    ):
        super().__init__()
        dims = [math.prod(in_shape), *widths]
        layers: list[nn.Module] = [nn.Flatten()]
        for d_in, d_out in zip(dims[:-1], dims[1:], strict=True):
            layers += [nn.Linear(d_in, d_out), nn.ReLU()]
        layers.append(nn.Linear(dims[-1], num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CNN(nn.Module):
    """Small conv net with BatchNorm for any input size.

    conv-BN-ReLU blocks, a max-pool after every block but the last, an adaptive average pool
    to ``pool x pool`` (so any H, W works), then a hidden Linear layer and the classifier.

    Args:
        in_shape: input shape (C, H, W).
        num_classes: number of output logits.
        channels: output channels of the conv blocks (default (16, 32)).
        hidden: width of the hidden Linear layer (default 64).
        pool: side of the adaptive pooling output (default 2).
    """

    def __init__(
        self,
        in_shape: Sequence[int] = (1, 8, 8),
        num_classes: int = 10,
        channels: Sequence[int] = (16, 32),
        hidden: int = 64,
        pool: int = 2,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_shape[0]
        for i, c_out in enumerate(channels):
            layers += [
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(),
            ]
            if i < len(channels) - 1:
                layers.append(nn.MaxPool2d(2))
            c_in = c_out
        layers += [nn.AdaptiveAvgPool2d(pool), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(c_in * pool * pool, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class _BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            # Projection shortcut (option B of He et al.), so every tensor is a plain parameter.
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet20(nn.Module):
    """CIFAR-style ResNet-20 (He et al. 2016): 3 stages of 3 basic blocks, BatchNorm.

    Args:
        in_shape: input shape (C, H, W).
        num_classes: number of output logits.
        width: channels of the first stage (16 in the paper); stages use width, 2x, 4x.
        blocks: basic blocks per stage (3 gives 20 layers).
    """

    def __init__(
        self,
        in_shape: Sequence[int] = (3, 32, 32),
        num_classes: int = 10,
        width: int = 16,
        blocks: int = 3,
    ):
        super().__init__()
        self.conv = nn.Conv2d(in_shape[0], width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        stages: list[nn.Module] = []
        c_in = width
        for stage, c_out in enumerate((width, 2 * width, 4 * width)):
            for b in range(blocks):
                stride = 2 if stage > 0 and b == 0 else 1
                stages.append(_BasicBlock(c_in, c_out, stride))
                c_in = c_out
        self.layers = nn.Sequential(*stages)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn(self.conv(x)))
        out = self.layers(out)
        out = torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1)  # (batch, channels)
        return self.fc(out)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": MLP,
    "cnn": CNN,
    "resnet20": ResNet20,
    "vgg": VGG,
    "preresnet": PreResNet,
    "wideresnet": WideResNet,
}

# Model names of dnn-mode-connectivity (and the gRDA fork) -> (registry name, kwargs).
RESEARCH_ARCHS: dict[str, tuple[str, dict]] = {
    "VGG16": ("vgg", {"depth": 16, "batch_norm": False}),
    "VGG16BN": ("vgg", {"depth": 16, "batch_norm": True}),
    "VGG19": ("vgg", {"depth": 19, "batch_norm": False}),
    "VGG19BN": ("vgg", {"depth": 19, "batch_norm": True}),
    "PreResNet110": ("preresnet", {"depth": 110}),
    "PreResNet164": ("preresnet", {"depth": 164}),
    "WideResNet28x10": ("wideresnet", {"depth": 28, "widen_factor": 10}),
    "WideResNet28x10_nobn": ("wideresnet", {"depth": 28, "widen_factor": 10, "batch_norm": False}),
}


def resolve_arch(name: str, kwargs: dict | None = None) -> tuple[str, dict]:
    """Map a registry or research-code model name to (registry name, constructor kwargs).

    Args:
        name: a ``MODELS`` name (returned as is) or a ``RESEARCH_ARCHS`` name such as
            "VGG16BN" or "WideResNet28x10" (matched case-insensitively).
        kwargs: caller's constructor arguments; they override the research name's defaults.

    Returns:
        (registry name, merged kwargs), ready for ``build_model(name, **kwargs)``.

    Raises:
        ValueError: a name in neither table.
    """
    kwargs = dict(kwargs or {})
    if name in MODELS:
        return name, kwargs
    by_lower = {k.lower(): v for k, v in RESEARCH_ARCHS.items()}
    if name.lower() in by_lower:
        registry_name, defaults = by_lower[name.lower()]
        return registry_name, {**defaults, **kwargs}
    raise ValueError(
        f"Unknown architecture {name!r}; registry names: {', '.join(sorted(MODELS))}; "
        f"research names: {', '.join(RESEARCH_ARCHS)}"
    )


def build_model(name: str, **kwargs) -> nn.Module:
    """Build a registered architecture, or one from an external source.

    Args:
        name: registry name ("mlp", "cnn", "resnet20", "vgg", "preresnet", "wideresnet"; use
            ``resolve_arch`` first for research-code names such as "VGG16BN"), or a source of
            :mod:`landscape.sources`: "torchvision:resnet18", "file:<path.py>:<callable>"
            (trusted files only), "export:<path.pt2>" (trusted programs only).
        **kwargs: constructor arguments (in_shape, num_classes, and the model's own).

    Returns:
        A freshly initialised module.

    Raises:
        ValueError: unknown name, untrusted source, or arguments the constructor does not take.
    """
    if is_external(name):
        return build_external(name, kwargs)
    if name not in MODELS:
        raise ValueError(f"Unknown architecture {name!r}; known: {', '.join(sorted(MODELS))}")
    try:
        return MODELS[name](**kwargs)
    except TypeError as err:
        raise ValueError(f"Bad arguments for architecture {name!r}: {err}") from err


def _int_arg(kwargs: dict, key: str, default: int) -> int:
    """An integer argument, or 0 when it is not one (the constructor then refuses it)."""
    value = kwargs.get(key, default)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _length(kwargs: dict, key: str, default: int) -> int:
    value = kwargs.get(key)
    return len(value) if isinstance(value, list | tuple) else default


def _preresnet_tensors(depth: int) -> int:
    bottleneck = depth >= 44  # 3 convs + 3 BN (5 tensors each) per block, else 2 + 2
    blocks = 3 * max((depth - 2) // (9 if bottleneck else 6), 0)  # three stages of n blocks
    return blocks * (18 if bottleneck else 12) + 8  # stem conv, final BN, fc weight and bias


def min_tensors(name: str, kwargs: dict | None = None) -> int:
    """Lower bound on the state-dict tensors of ``build_model(name, **kwargs)``, from the
    arguments alone (nothing is built, so a depth of 10**6 costs nothing).

    A file with fewer tensors cannot hold the model: compare before building (building a
    model of a million layers takes minutes and gigabytes, even on the meta device). Arguments
    of the wrong type count as 0; the constructor refuses them.

    Raises:
        ValueError: unknown name.
    """
    kwargs = kwargs or {}
    if name == "mlp":
        return 2 * (_length(kwargs, "widths", 2) + 1)  # weight and bias per Linear
    if name == "cnn":
        return 6 * _length(kwargs, "channels", 2) + 4  # conv + BN per block; two Linear
    if name == "resnet20":
        return 36 * max(_int_arg(kwargs, "blocks", 3), 0) + 8  # 3 stages x 2 (conv + BN)
    if name == "preresnet":
        return _preresnet_tensors(_int_arg(kwargs, "depth", 110))
    if name == "wideresnet":  # two convs with bias per block (no BN in the "nobn" variant)
        return 12 * max((_int_arg(kwargs, "depth", 28) - 4) // 6, 0) + 4
    if name == "vgg":
        return 32  # depth 16 or 19, checked by the constructor before it builds anything
    raise ValueError(f"Unknown architecture {name!r}; known: {', '.join(sorted(MODELS))}")


def prunable_names(model: nn.Module) -> list[str]:
    """Names of the prunable tensors: weights of Linear and Conv layers (not biases, not BN)."""
    return [
        f"{mod_name}.weight" if mod_name else "weight"
        for mod_name, mod in model.named_modules()
        if isinstance(mod, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d)
    ]
