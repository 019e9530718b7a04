"""A model class of the user's own: landscape rebuilds it as file:model.py:SmallNet."""

import torch
from torch import nn


class SmallNet(nn.Module):
    """Conv (3x3) and two linear layers for 1x8x8 images (sklearn digits)."""

    def __init__(self, channels: int = 8, hidden: int = 32, num_classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, channels, 3, padding=1)
        self.fc1 = nn.Linear(channels * 8 * 8, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x)).flatten(1)  # (batch, channels * 64)
        return self.fc2(torch.relu(self.fc1(h)))  # (batch, classes)
