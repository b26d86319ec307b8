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


def test_restored_model_is_torchaos_converted_model(mnist):
    """The model an artifact holds (prepare -> load stored state -> convert) must be the model
    convert_pt2e makes of the calibrated graph, bit for bit. It was not: loading observer state
    without its version metadata made torchao reset every observer's eps (2**-12 for the x86
    quantizer) to float32's, and the weight codes were rounded as x / s instead of x * (1 / s);
    on efficientnet-lite0 that cost 4 dB of output SQNR (16.7 -> 12.9 dB)."""
    import copy

    from quantwise.methods.base import QuantData, calibrate
    from quantwise.methods.static_pt2e import _convert, _state, restore

    recipe = StaticInt8(path="pt2e", observer="histogram")
    data = QuantData(mnist.calibration, batch_size=64, dynamic_batch=True)
    prepared = _prepare(copy.deepcopy(mnist.model), recipe, data.example(2), dynamic=True)
    calibrate(prepared, data)
    tensors = _state(prepared)
    direct = _convert(copy.deepcopy(prepared))
    restored = restore(copy.deepcopy(mnist.model), recipe, data.example(2), tensors, {"dynamic_batch": True}).module
    x = mnist.evaluation.example(64)
    with torch.no_grad():
        assert torch.equal(direct(*x), restored(*x))
    eps = {float(v) for k, v in tensors.items() if k.endswith(".eps")}
    assert eps == {2.0**-12}  # stored as calibrated; the restore must not replace it
