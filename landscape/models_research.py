"""The research code's architectures: VGG, PreResNet and WideResNet of dnn-mode-connectivity.

Same parameter names, shapes and forward passes as timgaripov/dnn-mode-connectivity (and the
gRDA fork), so their checkpoints load as they are; registered in :mod:`landscape.models`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["PreResNet", "VGG", "WideResNet"]


def _require_32x32(arch: str, in_shape: Sequence[int], why: str) -> None:
    if len(in_shape) != 3 or tuple(in_shape[1:]) != (32, 32):
        raise ValueError(f"{arch} needs 32x32 inputs ({why}); got in_shape={tuple(in_shape)}")


def _he_normal_conv_(model: nn.Module) -> None:
    """He init of the research code: conv weights ~ N(0, 2 / (k_h * k_w * out_channels))."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))


_VGG_WIDTHS = {
    16: [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    19: [[64, 64], [128, 128], [256] * 4, [512] * 4, [512] * 4],
}


class VGG(nn.Module):
    """VGG-16/19 for CIFAR as in dnn-mode-connectivity (``VGG16``, ``VGG16BN``, ...).

    Five blocks of 3x3 convs (with bias), each followed by a 2x2 max-pool, then a
    Dropout-Linear(512)-ReLU-Dropout-Linear(512)-ReLU-Linear classifier. State-dict keys match
    the research code: ``layer_blocks.{block}.{i}`` and ``classifier.{1,4,6}``.

    With ``batch_norm=True`` each BatchNorm sits after its conv in the same inner list (conv at
    even, BN at odd indices), but the forward pass applies only the first ``len(widths)``
    modules of each block, each followed by ReLU, because the research code zips the layers
    with one ReLU per width. A [64, 64] block so computes ``relu(bn0(relu(conv0(x))))`` and its
    second conv and BN are never used. This is a known bug
    (https://github.com/timgaripov/dnn-mode-connectivity/issues/2); it is reproduced on purpose
    because their VGG16BN/VGG19BN checkpoints were trained with it. Without BN every conv is
    applied as usual.

    Args:
        in_shape: input shape (C, H, W); H and W must be 32.
        num_classes: number of output logits.
        depth: 16 or 19.
        batch_norm: add BatchNorm2d after each conv (see the caveat above).

    Raises:
        ValueError: unsupported depth or input size.
    """

    def __init__(
        self,
        in_shape: Sequence[int] = (3, 32, 32),
        num_classes: int = 10,
        depth: int = 16,
        batch_norm: bool = False,
    ):
        super().__init__()
        if depth not in _VGG_WIDTHS:
            raise ValueError(f"VGG depth must be one of {sorted(_VGG_WIDTHS)}; got {depth}")
        _require_32x32("VGG", in_shape, "five 2x2 max-pools must leave 1x1x512 features")
        self.depth = depth
        self.layer_blocks = nn.ModuleList()
        self.poolings = nn.ModuleList()
        c_in = in_shape[0]
        for widths in _VGG_WIDTHS[depth]:
            block = nn.ModuleList()
            for c_out in widths:
                block.append(nn.Conv2d(c_in, c_out, 3, padding=1))
                if batch_norm:
                    block.append(nn.BatchNorm2d(c_out))
                c_in = c_out
            self.layer_blocks.append(block)
            self.poolings.append(nn.MaxPool2d(2, 2))
        self.classifier = nn.Sequential(
            nn.Dropout(),
            nn.Linear(512, 512),
            nn.ReLU(),
            nn.Dropout(),
            nn.Linear(512, 512),
            nn.ReLU(),
            nn.Linear(512, num_classes),
        )
        _he_normal_conv_(self)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for widths, block, pool in zip(
            _VGG_WIDTHS[self.depth], self.layer_blocks, self.poolings, strict=True
        ):
            # One ReLU per width, zipped with the block's modules: with BN only the first
            # len(widths) modules run (issue #2 above).
            for layer in block[: len(widths)]:
                x = torch.relu(layer(x))
            x = pool(x)
        return self.classifier(torch.flatten(x, 1))  # (batch, 512) -> (batch, classes)


class _PreActBasic(nn.Module):
    """Pre-activation basic block: BN-ReLU-conv3x3 twice, plus the (projected) input."""

    expansion = 1

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(torch.relu(self.bn1(x)))
        out = self.conv2(torch.relu(self.bn2(out)))
        residual = x if self.downsample is None else self.downsample(x)
        return out + residual


class _PreActBottleneck(nn.Module):
    """Pre-activation bottleneck: BN-ReLU-conv 1x1, 3x3 (strided), 1x1 to 4x planes."""

    expansion = 4

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(torch.relu(self.bn1(x)))
        out = self.conv2(torch.relu(self.bn2(out)))
        out = self.conv3(torch.relu(self.bn3(out)))
        residual = x if self.downsample is None else self.downsample(x)
        return out + residual


class PreResNet(nn.Module):
    """Pre-activation ResNet for CIFAR as in dnn-mode-connectivity (``PreResNet110/164``).

    A 3x3 stem conv to 16 channels, three stages (16, 32, 64 planes; strides 1, 2, 2) of
    pre-activation blocks, a final BN-ReLU, 8x8 average pool and a Linear layer. Depth >= 44
    uses bottleneck blocks (depth = 9n + 2, output 4x planes), smaller depths basic blocks
    (depth = 6n + 2); n blocks per stage. A stage's first block gets a 1x1 projection
    ``downsample`` when the stride or the width changes. State-dict keys match the research code.

    Args:
        in_shape: input shape (C, H, W); H and W must be 32.
        num_classes: number of output logits.
        depth: 9n + 2 with n >= 5 (bottleneck) or 6n + 2 below 44 (basic), e.g. 110, 164, 20.

    Raises:
        ValueError: depth that fits neither rule, or an input size other than 32x32.
    """

    def __init__(
        self, in_shape: Sequence[int] = (3, 32, 32), num_classes: int = 10, depth: int = 110
    ):
        super().__init__()
        block: type[_PreActBasic | _PreActBottleneck]
        if depth >= 44:
            if (depth - 2) % 9:
                raise ValueError(f"PreResNet depth >= 44 must be 9n+2 (bottleneck); got {depth}")
            n, block = (depth - 2) // 9, _PreActBottleneck
        else:
            if depth < 8 or (depth - 2) % 6:
                raise ValueError(
                    f"PreResNet depth < 44 must be 6n+2 with n >= 1 (basic blocks); got {depth}"
                )
            n, block = (depth - 2) // 6, _PreActBasic
        _require_32x32("PreResNet", in_shape, "the final 8x8 average pool expects 8x8 maps")
        self.conv1 = nn.Conv2d(in_shape[0], 16, 3, padding=1, bias=False)
        inplanes = 16
        stages = []
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            width = planes * block.expansion
            downsample = None
            if stride != 1 or inplanes != width:
                downsample = nn.Sequential(nn.Conv2d(inplanes, width, 1, stride=stride, bias=False))
            blocks = [block(inplanes, planes, stride, downsample)]
            blocks += [block(width, planes) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            inplanes = width
        self.layer1, self.layer2, self.layer3 = stages
        self.bn = nn.BatchNorm2d(inplanes)
        self.fc = nn.Linear(inplanes, num_classes)
        _he_normal_conv_(self)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        out = self.layer3(self.layer2(self.layer1(out)))  # (batch, 64 * expansion, 8, 8)
        out = torch.relu(self.bn(out))
        out = torch.flatten(nn.functional.avg_pool2d(out, 8), 1)  # (batch, 64 * expansion)
        return self.fc(out)


class _WideBasic(nn.Module):
    """Wide pre-activation block; the stride is on the second conv, as in the research code."""

    def __init__(
        self, in_planes: int, planes: int, dropout_rate: float, stride: int, batch_norm: bool
    ):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes) if batch_norm else None
        self.conv1 = nn.Conv2d(in_planes, planes, 3, padding=1)
        self.dropout = nn.Dropout(dropout_rate)
        self.bn2 = nn.BatchNorm2d(planes) if batch_norm else None
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x if self.bn1 is None else self.bn1(x)
        out = self.dropout(self.conv1(torch.relu(out)))
        out = out if self.bn2 is None else self.bn2(out)
        out = self.conv2(torch.relu(out))
        return out + self.shortcut(x)


class WideResNet(nn.Module):
    """Wide ResNet WRN-depth-k for CIFAR as in dnn-mode-connectivity (``WideResNet28x10``).

    A 3x3 stem conv to 16 channels, three stages of n = (depth - 4) / 6 wide blocks
    (16k, 32k, 64k channels; strides 1, 2, 2), a final BN-ReLU, 8x8 average pool and a Linear
    layer. Unlike Zagoruyko & Komodakis' WRN, every conv has a bias (as in the research code),
    and the final BN has ``momentum=0.9`` (their value). ``batch_norm=False`` is the gRDA
    repository's ``WideResNet28x10_nobn``: no BN at all, the ReLUs applied where BN was.
    State-dict keys match the research code.

    Args:
        in_shape: input shape (C, H, W); H and W must be 32.
        num_classes: number of output logits.
        depth: 6n + 4 with n >= 1 (28 in WRN-28-10).
        widen_factor: width multiplier k >= 1 (10 in WRN-28-10).
        dropout_rate: dropout between the two convs of each block.
        batch_norm: False drops every BatchNorm (the "nobn" variant).

    Raises:
        ValueError: bad depth or widen factor, or an input size other than 32x32.
    """

    def __init__(
        self,
        in_shape: Sequence[int] = (3, 32, 32),
        num_classes: int = 10,
        depth: int = 28,
        widen_factor: int = 10,
        dropout_rate: float = 0.0,
        batch_norm: bool = True,
    ):
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n+4 with n >= 1; got {depth}")
        if not isinstance(widen_factor, int) or widen_factor < 1:
            raise ValueError(f"WideResNet widen_factor must be an integer >= 1; got {widen_factor}")
        _require_32x32("WideResNet", in_shape, "the final 8x8 average pool expects 8x8 maps")
        n, k = (depth - 4) // 6, widen_factor
        self.conv1 = nn.Conv2d(in_shape[0], 16, 3, padding=1)
        in_planes = 16
        stages = []
        for planes, stride in ((16 * k, 1), (32 * k, 2), (64 * k, 2)):
            blocks = []
            for s in [stride] + [1] * (n - 1):
                blocks.append(_WideBasic(in_planes, planes, dropout_rate, s, batch_norm))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.bn1 = nn.BatchNorm2d(in_planes, momentum=0.9) if batch_norm else None
        self.linear = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        out = self.layer3(self.layer2(self.layer1(out)))  # (batch, 64k, 8, 8)
        out = torch.relu(out if self.bn1 is None else self.bn1(out))
        out = torch.flatten(nn.functional.avg_pool2d(out, 8), 1)  # (batch, 64k)
        return self.linear(out)
