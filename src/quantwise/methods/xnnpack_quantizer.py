"""ExecuTorch's XNNPACK quantizer, with two annotations it gets wrong on ordinary models.

``XNNPACKQuantizer`` fuses conv/linear with a following ReLU (the activation's output is
quantized, the layer's is not), but treats ReLU6 (``hardtanh``) as an op that *shares* its
input's quantization: the layer's pre-activation output (EfficientNet-Lite's depthwise
conv: [-75, 90]) and the clamped [0, 6] that the next layer reads then get one scale, and
the next layer's input keeps 4 bits of its 8 (isolated SQNR 15 dB where the x86
quantizer's graph has 31). Here conv/linear -> hardtanh is annotated as conv -> relu is:
weights and input at the layer, the output after the clamp. XNNPACK fuses the clamp
into the layer's output range when it lowers the graph.

It also quantizes every ``add``, including the attention mask's (``scores + mask_bias``,
-10000 on padding) that feeds softmax: the add's range then spans [-10000, 20], the real
scores round to a handful of codes and the encoder's output falls to cosine 0.31 against
float (minilm-l6); and the residual adds before each LayerNorm, whose range a few outlier
channels set. An add or mul whose only users are softmax or LayerNorm stays float here:
XNNPACK runs those in float anyway, so quantizing their input adds only error (minilm-l6,
8 texts: cosine to float 0.31 -> 0.85 with the softmax rule, 0.95 with both).

Conv/linear outputs stay quantized even where only float ops read them: ExecuTorch 1.5.1
does not delegate a static int8 linear with a float output, and its portable kernels then
compute it wrongly (max |diff| 0.2-0.4 against the PyTorch model on a 64x10 layer).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch.fx import GraphModule, Node

from quantwise.errors import QuantwiseError

_CONVOLUTIONS = {torch.ops.aten.conv1d.default, torch.ops.aten.conv2d.default, torch.ops.aten.conv3d.default,
                 torch.ops.aten.conv_transpose1d.default, torch.ops.aten.conv_transpose2d.input}
_LAYERS = {torch.ops.aten.conv1d.default, torch.ops.aten.conv2d.default, torch.ops.aten.linear.default}
_CLAMPS = {torch.ops.aten.hardtanh.default, torch.ops.aten.hardtanh_.default}
_ARITHMETIC = {torch.ops.aten.add.Tensor, torch.ops.aten.mul.Tensor}
_FLOAT_CONSUMERS = {torch.ops.aten.softmax.int, torch.ops.aten._softmax.default, torch.ops.aten.log_softmax.int, torch.ops.aten.layer_norm.default}


def _executorch_quantizer() -> Any:
    try:
        from executorch.backends.xnnpack.quantizer import xnnpack_quantizer
    except ImportError:
        raise QuantwiseError("backend xnnpack needs executorch, which is not installed",
                             "pip install 'quantwise[executorch]' (executorch==1.5.1), or use the x86 / torchao recipes") from None
    return xnnpack_quantizer


def xnnpack_quantizer(config: Any, keep_float: list[str], linear_only: bool = False) -> Any:
    """An XNNPACK quantizer with ``config`` globally, the layers under ``keep_float`` left float;
    with ``linear_only``, convolutions too (XNNPACK 1.5.1 fails at run time on dynamically
    quantized convolutions: efficientnet-lite0 stopped with 'Propagating input shapes failed')."""
    class _Quantizer(_executorch_quantizer().XNNPACKQuantizer):
        def annotate(self, model: GraphModule) -> GraphModule:
            kept = _in_scopes(keep_float)
            if linear_only:
                leave_float(model, lambda n: n.target in _CONVOLUTIONS)
            annotate_clamped_layers(model, config, kept)
            leave_float(model, _feeds_float_op)
            return super().annotate(model)

    quantizer = _Quantizer()
    quantizer.set_global(config)
    for name in keep_float:
        quantizer.set_module_name(name, None)
    return quantizer


def symmetric_config() -> Any:
    """XNNPACK's own config: int8 activations (per-tensor affine), symmetric per-channel int8 weights."""
    return _executorch_quantizer().get_symmetric_quantization_config(is_per_channel=True)


def dynamic_config() -> Any:
    """XNNPACK's dynamic scheme: int8 activations quantized at run time, symmetric per-channel int8 weights."""
    return _executorch_quantizer().get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True)


def _in_scopes(names: list[str]) -> Callable[[Node], bool]:
    """Whether a node belongs to one of the named modules (or a module inside one)."""
    def inside(node: Node) -> bool:
        for fqn, _ in (node.meta.get("nn_module_stack") or {}).values():
            fqn = fqn.rpartition("@")[0] if "@" in fqn else fqn
            if any(fqn == n or fqn.startswith(n + ".") for n in names):
                return True
        return False
    return inside


def annotate_clamped_layers(model: GraphModule, config: Any, kept: Callable[[Node], bool]) -> int:
    """conv/linear -> hardtanh: quantize the layer's input and weight and the clamp's output,
    not the layer's own output. Returns how many pairs it annotated."""
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, get_bias_qspec, get_input_act_qspec, get_output_act_qspec, get_weight_qspec
    from torchao.quantization.pt2e.quantizer.quantizer import Q_ANNOTATION_KEY

    count = 0
    for clamp in model.graph.nodes:
        if clamp.op != "call_function" or clamp.target not in _CLAMPS:
            continue
        layer = clamp.args[0]
        if not isinstance(layer, Node) or layer.op != "call_function" or layer.target not in _LAYERS or len(layer.users) != 1:
            continue
        if any(Q_ANNOTATION_KEY in n.meta for n in (clamp, layer)) or kept(layer) or kept(clamp):
            continue
        inputs = {layer.args[0]: get_input_act_qspec(config), layer.args[1]: get_weight_qspec(config)}
        if len(layer.args) > 2 and isinstance(layer.args[2], Node):
            inputs[layer.args[2]] = get_bias_qspec(config)
        layer.meta[Q_ANNOTATION_KEY] = QuantizationAnnotation(input_qspec_map=inputs, _annotated=True)
        clamp.meta[Q_ANNOTATION_KEY] = QuantizationAnnotation(output_qspec=get_output_act_qspec(config), _annotated=True)
        count += 1
    return count


def _feeds_float_op(node: Node) -> bool:
    return node.target in _ARITHMETIC and bool(node.users) and all(u.op == "call_function" and u.target in _FLOAT_CONSUMERS for u in node.users)


def leave_float(model: GraphModule, select: Callable[[Node], bool]) -> int:
    """Mark the selected call nodes not yet annotated as annotated with nothing: they stay float.
    Returns how many it marked."""
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation
    from torchao.quantization.pt2e.quantizer.quantizer import Q_ANNOTATION_KEY

    count = 0
    for node in model.graph.nodes:
        if node.op == "call_function" and Q_ANNOTATION_KEY not in node.meta and select(node):
            node.meta[Q_ANNOTATION_KEY] = QuantizationAnnotation(_annotated=True)
            count += 1
    return count
