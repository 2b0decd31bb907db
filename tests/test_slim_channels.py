"""Slimming CNNs: output channels go with their BatchNorm, the next layers' inputs and every conv joined by a
residual add; the slim model computes what the masked one did, and the ConvNet reloads from its run folder."""

from __future__ import annotations

import copy

import pytest
import torch
from omegaconf import OmegaConf
from slim_models import logits, measured, oneshot
from torch import nn

from compress_sweeps.models import ConvNet, from_run
from compress_sweeps.models.costs import module_flops
from compress_sweeps.models.runs import save_model


class Residual(nn.Module):
    """A stem, one residual block (x + conv-bn-relu-conv-bn) and a strided conv: channels coupled by an add."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.bn = nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c1, self.b1 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c2, self.b2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.down, self.bn2 = nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16)
        self.classifier = nn.Linear(16, 3)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.stem(pixel_values)).relu()
        x = (x + self.b2(self.c2(self.b1(self.c1(x)).relu()))).relu()
        return self.classifier(self.bn2(self.down(x)).relu().mean((2, 3)))


def with_stats(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters (a masked channel must still output zero)."""
    torch.manual_seed(2)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-1, 1)
    return model.eval()


CNNS = {
    "convnet": lambda: ConvNet(3, channels=[8, 16], convs_per_stage=2),
    "residual": Residual,
}


@pytest.mark.parametrize("metric", ["params", "flops"])
@pytest.mark.parametrize("net", list(CNNS))
def test_conv_channels_go_with_batchnorm_next_layers_and_residuals(net, metric, tmp_path):
    torch.manual_seed(0)
    model = with_stats(CNNS[net]())
    dense = copy.deepcopy(model)
    inputs = {"pixel_values": torch.randn(4, 1, 8, 8)}
    before = module_flops(model, inputs)[""]
    pruner = oneshot(model, inputs, keys=("pixel_values",), units=["channels"], target=0.5, target_metric=metric)
    masked = logits(model, inputs)
    slim = pruner.finalize(model)
    torch.testing.assert_close(logits(slim, inputs), masked, atol=1e-5, rtol=1e-5)
    structure = measured(slim, dense, pruner)
    assert 0.4 <= structure["removed"][metric] <= 0.5 + 1e-9, structure
    assert {layer["kind"] for layer in structure["layers"].values()} == {"channels"}
    assert module_flops(slim, inputs)[""] < before
    for module in slim.modules():
        if isinstance(module, nn.BatchNorm2d):
            assert module.running_mean.shape == module.weight.shape
    if net == "residual":  # both sides of the add keep the same channels
        assert slim.c2.out_channels == slim.stem.out_channels == slim.c1.in_channels == slim.down.in_channels
    if net == "convnet":
        config = OmegaConf.create({"_target_": "compress_sweeps.models.ConvNet", "channels": [8, 16]})
        config.convs_per_stage = 2
        save_model(slim, tmp_path, None, config, num_labels=3, reference=dense)
        reloaded = from_run(str(tmp_path), num_labels=3).eval()
        torch.testing.assert_close(logits(reloaded, inputs), logits(slim, inputs))
