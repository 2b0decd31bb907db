"""A Polino-style convolutional classifier for image tasks; width and depth are config values."""

from __future__ import annotations

from torch import nn


class ConvNet(nn.Module):
    """Conv stages (each `convs_per_stage` x [3x3 conv, BatchNorm, ReLU], then 2x2 max-pool), a hidden linear layer
    and a `classifier` head. `channels` gives the width of each stage, so teacher and student differ only in
    `channels`, `convs_per_stage` and `hidden`. Adaptive pooling lets one net serve 8x8 and 28x28 inputs."""

    def __init__(
        self,
        num_labels: int,
        in_channels: int = 1,
        channels: list[int] = (32, 64),
        convs_per_stage: int = 1,
        hidden: int = 128,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        channels = list(channels)
        if not channels or min(channels) < 1 or convs_per_stage < 1 or hidden < 1:
            raise ValueError(
                "model.channels must be a non-empty list of positive widths and model.convs_per_stage, "
                f"model.hidden >= 1; got channels={channels}, convs_per_stage={convs_per_stage}, hidden={hidden}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {dropout}")
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
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(width * 4, hidden)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden, num_labels)

    def forward(self, pixel_values):
        x = self.pool(self.features(pixel_values)).flatten(1)
        return self.classifier(self.dropout(self.fc(x).relu()))
