"""The XNNPACK quantizer's two corrections (methods/xnnpack_quantizer.py), on the graph they change.

Shapes only: random weights, since what is checked is where observers sit and what range
they see, not accuracy (the zoo figures are in benchmarks/EXPORT_RESULTS.md)."""
import torch
from torch import nn

from quantwise.config import StaticInt8
from quantwise.methods import static_pt2e


class _ClampedConvs(nn.Module):
    """conv -> ReLU6 -> conv, as in EfficientNet-Lite; the first conv's raw output spans far beyond [0, 6]."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.act, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.ReLU6(), nn.Conv2d(8, 4, 1)
        with torch.no_grad():
            self.a.weight.mul_(20.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.act(self.a(x)))


class _MaskedAttention(nn.Module):
    """scores + mask -> softmax, with BERT's -10000 on padding; a residual add -> LayerNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.out, self.norm = nn.Linear(16, 16), nn.Linear(16, 16), nn.LayerNorm(16)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q = self.q(x)
        scores = torch.matmul(q, q.transpose(-1, -2)) + mask
        return self.norm(x + self.out(torch.matmul(scores.softmax(-1), q)))


def _prepared(model: nn.Module, *inputs: torch.Tensor) -> torch.fx.GraphModule:
    prepared = static_pt2e._prepare(model.eval(), StaticInt8(path="pt2e", backend="xnnpack", observer="minmax"), inputs, dynamic=False)
    with torch.no_grad():
        prepared(*inputs)
    return prepared


def _observer_after(prepared: torch.fx.GraphModule, target) -> list[nn.Module]:
    return [getattr(prepared, u.target) for n in prepared.graph.nodes if n.op == "call_function" and n.target == target
            for u in n.users if u.op == "call_module"]


def test_relu6_output_gets_its_own_range_not_the_conv_output_range():
    torch.manual_seed(0)
    prepared = _prepared(_ClampedConvs(), torch.randn(2, 3, 8, 8))
    convs = [n for n in prepared.graph.nodes if n.target == torch.ops.aten.conv2d.default]
    # the first conv's output is not observed (its users are the clamp only) ...
    assert all(u.target in (torch.ops.aten.hardtanh.default, torch.ops.aten.hardtanh_.default) for u in convs[0].users)
    # ... and the clamp's observer, which the second conv reads, saw [0, 6], not the conv's wide range
    (observer,) = _observer_after(prepared, torch.ops.aten.hardtanh.default)
    assert float(observer.min_val) >= 0.0 and float(observer.max_val) <= 6.0


def test_adds_feeding_softmax_or_layernorm_stay_float():
    torch.manual_seed(0)
    mask = torch.zeros(2, 4, 4)
    mask[:, :, -1] = -10000.0
    prepared = _prepared(_MaskedAttention(), torch.randn(2, 4, 16), mask)
    adds = [n for n in prepared.graph.nodes if n.target == torch.ops.aten.add.Tensor]
    # no observer between them
    assert [[u.target for u in add.users] for add in adds] == [[torch.ops.aten.softmax.int], [torch.ops.aten.layer_norm.default]]
    # no observer anywhere saw the mask's -10000
    ranges = [float(m.min_val) for name, m in prepared.named_children() if name.startswith("activation_post_process_") and hasattr(m, "min_val") and m.min_val.numel() == 1]
    assert ranges and min(ranges) > -1000.0


class _ConvThenLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean((2, 3)))


def test_dynamic_xnnpack_quantizes_linear_layers_only():
    """XNNPACK fails at run time on dynamically quantized convolutions (efficientnet-lite0's .pte
    stopped with 'Propagating input shapes failed'), so dynamic-xnnpack leaves them float."""
    from quantwise.config import DynamicInt8

    torch.manual_seed(0)
    prepared = static_pt2e._prepare(_ConvThenLinear().eval(), DynamicInt8(backend="xnnpack"), (torch.randn(2, 3, 8, 8),), dynamic=False)
    observed = [n.args[0].target for n in prepared.graph.nodes if n.op == "call_module" and n.args and getattr(n.args[0], "op", None) == "get_attr"]
    assert observed == ["fc.weight"]
    assert static_pt2e.quantized_fraction(prepared) == (1, 2)
