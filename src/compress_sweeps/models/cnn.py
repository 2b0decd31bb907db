"""A Polino-style convolutional classifier for image tasks; width and depth are config values."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import torch
from pydantic import Field
from torch import nn

from compress_sweeps.kinds import Kind, builds
from compress_sweeps.models.settings import Dropout, Labels, Width
from compress_sweeps.models.untrained import mark_untrained
from compress_sweeps.schema import check_arguments


class MaxPool(nn.MaxPool2d):
    """`nn.MaxPool2d` that, at inference on CPU, pools a channels-last copy: PyTorch's CPU kernel for NCHW tensors is
    not vectorized (pytorch/pytorch#51393) and took 2.0 ms on the default CNN's [32, 32, 28, 28] activations here,
    against 0.15 ms channels-last. Same values, returned NCHW. With gradients on, torch's own kernel runs: the
    channels-last backward made a training step slower (16.1 vs 12.9 ms), so gradients are torch's exactly."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or self.return_indices or x.device.type != "cpu" or x.dim() != 4:
            return super().forward(x)
        return super().forward(x.contiguous(memory_format=torch.channels_last)).contiguous()


@builds("model", Kind("images", "classes", family="cnn"))
class ConvNet(nn.Module):
    """Conv stages (each `convs_per_stage` x [3x3 conv, BatchNorm, ReLU], then 2x2 max-pool), a hidden linear layer
    and a `classifier` head. `channels` gives the width of each stage, so teacher and student differ only in
    `channels`, `convs_per_stage` and `hidden`. Adaptive pooling lets one net serve 8x8 and 28x28 inputs."""

    def __init__(
        self,
        num_labels: Labels,
        in_channels: Width = 1,
        channels: Annotated[Sequence[Width], Field(min_length=1)] = (32, 64),
        convs_per_stage: Width = 1,
        hidden: Width = 128,
        dropout: Dropout = 0.1,
    ) -> None:
        super().__init__()
        check_arguments(ConvNet, {k: v for k, v in locals().items() if k not in ("self", "__class__")}, "model.")
        channels = list(channels)
        layers: list[nn.Module] = []
        width = in_channels
        for stage_width in channels:
            for _ in range(convs_per_stage):
                layers += [
                    nn.Conv2d(width, stage_width, 3, padding=1),
                    nn.BatchNorm2d(stage_width),
                    nn.ReLU(),
                ]
                width = stage_width
            layers.append(MaxPool(2, ceil_mode=True))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(width * 4, hidden)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden, num_labels)
        mark_untrained(self, (name for name, _ in self.named_parameters()))  # built from scratch: all random

    def forward(self, pixel_values):
        x = self.pool(self.features(pixel_values)).flatten(1)
        return self.classifier(self.dropout(self.fc(x).relu()))
