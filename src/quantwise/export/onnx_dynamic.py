"""ONNX for the ``dynamic`` recipe: torchao int8 Linear / Embedding as integer ONNX ops.

torch.onnx cannot translate torchao's tensor subclasses, so before export each quantized
layer is swapped for a plain module holding the same int8 tensors:

- Linear (torchao ``Int8Tensor``: per-row symmetric int8 weights, per-token symmetric int8
  activations) calls the custom op ``quantwise::int8_dynamic_linear``, translated to
  ``Abs -> ReduceMax -> Div, Max (token scale s) -> Mul(1 / s) -> QuantizeLinear(1, 128)
  -> com.microsoft::MatMulIntegerToFloat(a_scale s, b_scale weight scales) -> Add(bias)``:
  torchao's numerics exactly (its reciprocal rounding, clamp to [-128, 127]). The symmetric
  int8 codes are shifted by 128 into uint8 so that ONNX Runtime runs its fast u8 x s8 GEMM
  (its s8 x s8 MatMulInteger measured about 10x slower on this x86). ONNX's own
  ``DynamicQuantizeLinear`` (and ORT's fused DynamicQuantizeMatMul) quantize activations per
  tensor, asymmetric, which is not what the PyTorch model computes (and ORT's own
  quantize_dynamic of minilm-l6, built on them, reaches cosine 0.957 to float against this
  export's 0.997), so they are not used. The file needs ONNX Runtime for the contrib op; it
  is the runtime the ``onnx`` target runs.
- Embedding (torchao ``IntxUnpackedToInt8Tensor``, int8 weight-only per row) becomes a
  Gather on the int8 table times a Gather of the row scales.

LSTM/GRU quantized by the legacy dynamic kernels hold packed weights torch.export cannot
see; such models are refused with the reason.
"""
from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from quantwise import legacy
from quantwise.data.base import Inputs
from quantwise.errors import QuantwiseError
from quantwise.export.base import input_names
from quantwise.methods.base import dynamic_batch_shapes

EPS = torch.finfo(torch.float32).eps  # torchao's floor for a scale
HALF_RANGE = 127.5  # torchao symmetric int8: scale = max|x| / ((127 - -128) / 2)
NOTE = ("torch.export-based ONNX exporter; Linear as per-token int8 activations x per-row int8 weights in ONNX Runtime's "
        "MatMulIntegerToFloat (com.microsoft: needs ONNX Runtime), Embedding as an int8 Gather; same numerics as torchao")


@torch.library.custom_op("quantwise::int8_dynamic_linear", mutates_args=())
def int8_dynamic_linear(x: torch.Tensor, weight_t: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """torchao's int8 dynamic Linear: ``q = clamp(round(x * (1 / s)), -128, 127)`` with
    ``s = max(max|x| / 127.5, eps)`` per token, then ``(q @ weight_t) * s * weight_scale + bias``.
    ``weight_t`` is the (in, out) int8 weight, ``weight_scale`` its (out,) per-row scales."""
    scale = (x.abs().amax(-1, keepdim=True) / HALF_RANGE).clamp(min=EPS)
    q = torch.clamp(torch.round(x * (1.0 / scale)), -128, 127)  # torchao multiplies by the reciprocal
    acc = torch.matmul(q.double(), weight_t.double())  # exact integer sums (float32 is not, past 2^24)
    y = (acc.float() * scale) * weight_scale
    return y if bias is None else y + bias


@int8_dynamic_linear.register_fake
def _(x: torch.Tensor, weight_t: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], weight_t.shape[1]))


def _onnx_int8_dynamic_linear(x: Any, weight_t: Any, weight_scale: Any, bias: Any = None) -> Any:
    """The ONNX translation of ``quantwise::int8_dynamic_linear``.

    Per-token scale (Abs, ReduceMax), codes by QuantizeLinear(x * (1 / s), 1, 128) (round half
    to even and saturation as torchao), then ONNX Runtime's MatMulIntegerToFloat, which applies
    the token scales and the weight scales inside the integer GEMM's output stage."""
    import onnx
    from onnxscript import opset18 as op

    from quantwise.export.ort_ops import contrib_op

    matmul_integer_to_float = contrib_op("MatMulIntegerToFloat")

    def const(value: float | int, dtype: int = onnx.TensorProto.FLOAT) -> Any:
        return op.Constant(value=onnx.helper.make_tensor("c", dtype, [], [value]))

    amax = op.ReduceMax(op.Abs(x), op.Constant(value_ints=[-1]), keepdims=1)
    scale = op.Max(op.Div(amax, const(HALF_RANGE)), const(EPS))
    shift = const(128, onnx.TensorProto.UINT8)  # symmetric int8 codes + 128: uint8 for the fast u8 x s8 kernel
    codes = op.QuantizeLinear(op.Mul(x, op.Reciprocal(scale)), const(1.0), shift)
    y = matmul_integer_to_float(codes, weight_t, scale, weight_scale, shift)
    # the bias stays a separate Add: ONNX Runtime 1.32's MatMulIntegerToFloat adds it wrongly when
    # a_scale is per row (measured), and its graph optimizer folds the Add into SkipLayerNorm / BiasGelu
    return y if bias is None else op.Add(y, bias)


class Int8DynamicLinear(nn.Module):
    """A torchao int8 dynamic Linear as plain int8 / float buffers and one custom op."""

    def __init__(self, weight_int8: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.register_buffer("weight_t", weight_int8.t().contiguous())  # (in, out): MatMulInteger's B
        self.register_buffer("weight_scale", weight_scale.reshape(-1).float().contiguous())
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantwise.int8_dynamic_linear(x, self.weight_t, self.weight_scale, self.bias)


class Int8Embedding(nn.Module):
    """A torchao int8 weight-only Embedding: Gather on the int8 table, times the row scale."""

    def __init__(self, qdata: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("qdata", qdata.contiguous())
        self.register_buffer("scale", scale.reshape(-1, 1).float().contiguous())
        self.register_buffer("zero_point", None if not zero_point.any() else zero_point.reshape(-1, 1).float().contiguous())

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = F.embedding(ids, self.qdata).float()
        if self.zero_point is not None:
            rows = rows - F.embedding(ids, self.zero_point)
        return rows * F.embedding(ids, self.scale)


def _linear(name: str, module: nn.Linear) -> Int8DynamicLinear:
    from torchao.quantization.granularity import PerRow
    from torchao.quantization.quant_primitives import MappingType

    w = module.weight
    act = getattr(w, "act_quant_kwargs", None)
    per_row = list(w.block_size) == [1, w.shape[1]]
    if (act is None or act.mapping_type != MappingType.SYMMETRIC or not isinstance(act.granularity, PerRow) or act.reduce_range
            or w.act_pre_scale is not None or not per_row or (w.zero_point is not None and w.zero_point.any())):
        raise QuantwiseError(f"layer {name} is not torchao's per-row symmetric int8 with per-token symmetric activations, the only int8 Linear the ONNX export translates",
                             "quantize with the default dynamic recipe")
    return Int8DynamicLinear(w.qdata, w.scale, module.bias)


def _embedding(name: str, module: nn.Embedding) -> Int8Embedding:
    w = module.weight
    if module.max_norm is not None or list(w.block_size) != [1, w.shape[1]] or w.qdata.dtype != torch.int8:
        raise QuantwiseError(f"embedding {name} is not an int8 per-row table the ONNX export translates", "quantize with the default dynamic recipe")
    return Int8Embedding(w.qdata, w.scale, w.zero_point)


def prepare(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with every torchao layer swapped for its exportable twin.

    Refuses legacy-quantized LSTM/GRU, and any torchao tensor left behind."""
    from torchao.quantization import Int8Tensor, IntxUnpackedToInt8Tensor

    recurrent = [n for n, _ in legacy.recurrent_modules(module)]
    if recurrent:
        raise QuantwiseError(
            f"cannot export {', '.join(recurrent)} to ONNX: LSTM/GRU quantized by the legacy dynamic kernels keep packed int8 weights "
            "that torch.export cannot see, and quantwise has no ONNX translation for them",
            "quantize with --recipe dynamic:recurrent=false (int8 Linear, float LSTM/GRU) to export this model to ONNX")
    copied = copy.deepcopy(module).eval()
    swaps = []
    for name, child in copied.named_modules():
        weight = getattr(child, "weight", None)
        if isinstance(weight, Int8Tensor) and isinstance(child, nn.Linear):
            swaps.append((name, _linear(name, child)))
        elif isinstance(weight, IntxUnpackedToInt8Tensor) and isinstance(child, nn.Embedding):
            swaps.append((name, _embedding(name, child)))
    for name, new in swaps:
        if not name:  # the model is itself one quantized layer
            return new
        parent, _, attr = name.rpartition(".")
        setattr(copied.get_submodule(parent) if parent else copied, attr, new)
    left = [n for n, p in [*copied.named_parameters(), *copied.named_buffers()] if type(p) not in (torch.Tensor, nn.Parameter)]
    if left:
        raise QuantwiseError(f"the ONNX export has no translation for the quantized tensor(s) {', '.join(left[:3])}", "export with --to pt2")
    if not swaps:
        raise QuantwiseError("this dynamic model has no torchao int8 layer to export", "quantize it with the dynamic recipe first")
    return copied


def write(module: nn.Module, example: Inputs, path: Path, dynamic_batch: bool) -> list[str]:
    """Export a ``dynamic`` recipe model to ``path`` (one self-contained ONNX file)."""
    prepared = prepare(module)
    logging.getLogger("onnxscript").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            prepared, example, dynamo=True, input_names=input_names(example), verbose=False,
            dynamic_shapes=dynamic_batch_shapes(example) if dynamic_batch else None,
            custom_translation_table={torch.ops.quantwise.int8_dynamic_linear.default: _onnx_int8_dynamic_linear},
        )
    program.save(str(path), external_data=False)
    return [NOTE]
