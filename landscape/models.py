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

__all__ = [
    "MODELS",
    "RESEARCH_ARCHS",
    "build_model",
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
    """Build a registered architecture.

    Args:
        name: registry name ("mlp", "cnn", "resnet20", "vgg", "preresnet", "wideresnet"); use
            ``resolve_arch`` first for research-code names such as "VGG16BN".
        **kwargs: constructor arguments (in_shape, num_classes, and the model's own).

    Returns:
        A freshly initialised module.

    Raises:
        ValueError: unknown name or arguments the constructor does not take.
    """
    if name not in MODELS:
        raise ValueError(f"Unknown architecture {name!r}; known: {', '.join(sorted(MODELS))}")
    try:
        return MODELS[name](**kwargs)
    except TypeError as err:
        raise ValueError(f"Bad arguments for architecture {name!r}: {err}") from err


def prunable_names(model: nn.Module) -> list[str]:
    """Names of the prunable tensors: weights of Linear and Conv layers (not biases, not BN)."""
    return [
        f"{mod_name}.weight" if mod_name else "weight"
        for mod_name, mod in model.named_modules()
        if isinstance(mod, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d)
    ]
