"""The PT2E path quantizes every conv/linear layer, also subclasses and shared activations."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from quantwise.config import StaticInt8
from quantwise.methods.static_pt2e import _prepare, quantized_fraction


class PaddedConv(nn.Conv2d):
    """Like EfficientNet's Conv2dStaticSamePadding: a Conv2d subclass calling F.conv2d itself."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.pad = nn.ZeroPad2d(1)

    def forward(self, x):
        return F.conv2d(self.pad(x), self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = PaddedConv(3, 8, 3), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = PaddedConv(8, 8, 3, groups=8), nn.BatchNorm2d(8)
        self.act = nn.ReLU6()  # one module called twice, as in EfficientNet's blocks
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = self.act(self.bn1(self.conv1(x)))
        x = self.act(self.bn2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


def test_conv_subclasses_and_shared_modules_are_quantized():
    torch.manual_seed(0)
    prepared = _prepare(Net().eval(), StaticInt8(path="pt2e"), (torch.randn(2, 3, 16, 16),), dynamic=True)
    assert quantized_fraction(prepared) == (3, 3)
