"""Turn quantization codes into torchao tensors that run on this CPU.

Each scheme goes through the torchao config a user would pick, applied to a throwaway
Linear holding the dequantized weight; the resulting tensor's codes and scales are then
overwritten with ours, so that GPTQ / AWQ / HQQ results (whose scales torchao would not
choose) run bit for bit as computed:

- int4 weight-only (group 32/64/128): ``PrototypeInt4WeightOnlyConfig`` (CPU int4 kernel),
  bfloat16 activations on CPUs that run bf16 natively, float32 elsewhere (``for_this_machine``);
- int8 weight-only, per row: ``Int8WeightOnlyConfig``, the same activation choice
  (compiled, Inductor lowers its matmul to the int8 x bf16 CPU kernel; with float32
  activations it stays a float matmul on a converted weight, slower than native bf16);
- int8 dynamic activations + int8 weights: ``Int8DynamicActivationInt8WeightConfig``;
- int8 dynamic activations + int4 group weights: ``Int8DynamicActivationIntxWeightConfig``
  (reference kernels: unpacked to int8, so not fast on this CPU).
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from quantwise.config import DynamicActivation, GGUFWeights, WeightOnly
from quantwise.errors import QuantwiseError
from quantwise.algorithms import GroupQuant

LLMRecipe = WeightOnly | DynamicActivation | GGUFWeights


def for_this_machine(recipe: LLMRecipe) -> tuple[LLMRecipe, str | None]:
    """``activations=auto`` made concrete for this CPU: bfloat16 where it runs natively, else
    float32 (bf16 would be emulated, many times slower); with a note saying what was chosen and why."""
    from quantwise.versions import native_bf16

    if not isinstance(recipe, WeightOnly) or recipe.activations != "auto":
        return recipe, None
    if native_bf16():
        return dataclasses.replace(recipe, activations="bfloat16"), "activations: bfloat16 (this CPU runs it natively)"
    return (dataclasses.replace(recipe, activations="float32"),
            "activations: float32, chosen for this CPU: it has no native bfloat16 (no AVX-512 BF16 or AMX), which would be emulated and many times slower")


def run_dtype(recipe: LLMRecipe) -> torch.dtype:
    """Activation dtype the recipe's kernels want."""
    if isinstance(recipe, GGUFWeights):
        return torch.float32
    if isinstance(recipe, WeightOnly):
        return getattr(torch, for_this_machine(recipe)[0].activations)
    return torch.float32


def materialize(model: nn.Module, layers: dict[str, GroupQuant], recipe: LLMRecipe) -> nn.Module:
    """Put torchao tensors built from ``layers`` into ``model`` (in place) and return it.

    A GGUF recipe's layers become their exact float32 weights (llama.cpp runs the file; PyTorch
    evaluates the very weights it holds)."""
    if isinstance(recipe, GGUFWeights):
        return _materialize_gguf(model, layers)
    dtype = run_dtype(recipe)
    tied_head = "lm_head" in layers and getattr(model.config, "tie_word_embeddings", False)
    model.to(dtype)
    for name, quant in layers.items():
        module = model.get_submodule(name)
        if not isinstance(module, nn.Linear):
            raise QuantwiseError(f"{name} is a {type(module).__name__}, not a Linear", "re-create the artifact from the same model")
        module.weight = nn.Parameter(_tensor(quant, recipe if name != "lm_head" else _LM_HEAD, dtype), requires_grad=False)
    if tied_head:  # the token table reads the output layer's codes: stored once, still tied
        from quantwise.llm.embedding import QuantizedEmbedding

        if not layers["lm_head"].grid.symmetric:
            raise QuantwiseError("the stored output layer is not on a symmetric int8 grid", "re-create the artifact")
        model.set_input_embeddings(QuantizedEmbedding(model.get_output_embeddings().weight.qdata, layers["lm_head"].scale.reshape(-1), dtype))
    return model.eval()


_LM_HEAD = WeightOnly(bits=8, group_size=None)


def _materialize_gguf(model: nn.Module, layers: dict) -> nn.Module:
    model.to(torch.float32)
    for name, quant in layers.items():
        if name == "model.embed_tokens":
            model.get_input_embeddings().weight.data = quant.dequantize()  # in place: a tied output layer shares it
            continue
        module = model.get_submodule(name)
        if not isinstance(module, nn.Linear) or tuple(module.weight.shape) not in ((0,), tuple(quant.shape)):
            raise QuantwiseError(f"{name} does not match the stored {tuple(quant.shape)} weight", "re-create the artifact from the same model")
        module.weight = nn.Parameter(quant.dequantize(), requires_grad=False)
    return model.eval()


def _tensor(quant: GroupQuant, recipe: LLMRecipe, dtype: torch.dtype) -> torch.Tensor:
    from torchao.quantization import quantize_

    bits = recipe.bits if isinstance(recipe, WeightOnly) else recipe.weight_bits
    if quant.grid.bits != bits:
        raise QuantwiseError(f"stored codes are {quant.grid.bits}-bit but the recipe asks for {bits}-bit", "re-create the artifact")
    holder = nn.Linear(quant.shape[1], quant.shape[0], bias=False, dtype=dtype)
    holder.weight.data = quant.dequantize(dtype)
    quantize_(holder, _config(recipe))
    weight = holder.weight
    if isinstance(recipe, WeightOnly) and bits == 4:
        _overwrite_int4(weight, quant, dtype)
    elif bits == 8:
        _overwrite(weight, "qdata", quant.qdata.to(torch.int8))
        _overwrite(weight, "scale", quant.scale.reshape(weight.scale.shape).to(weight.scale.dtype))
    else:  # int8 activations x int4 group weights, codes 0..15 stored as int8 -8..7
        _overwrite(weight, "qdata", (quant.qdata.to(torch.int16) - 8).to(torch.int8))
        _overwrite(weight, "scale", quant.scale.reshape(weight.scale.shape).to(weight.scale.dtype))
        zero = quant.zero - 8
        if not torch.equal(zero, zero.round()):
            raise QuantwiseError("int8-activation x int4 kernels need integer zero-points", "use rtn, gptq or awq codes (not hqq) with dynamic-activation")
        _overwrite(weight, "zero_point", zero.reshape(weight.zero_point.shape).to(weight.zero_point.dtype))
    return weight


def _config(recipe: LLMRecipe):
    from torchao.quantization import (
        Int8DynamicActivationInt8WeightConfig,
        Int8DynamicActivationIntxWeightConfig,
        Int8WeightOnlyConfig,
        MappingType,
        PerGroup,
    )
    from torchao.prototype.quantization.int4 import PrototypeInt4WeightOnlyConfig

    if isinstance(recipe, WeightOnly):
        return PrototypeInt4WeightOnlyConfig(group_size=recipe.group_size) if recipe.bits == 4 else Int8WeightOnlyConfig()
    if recipe.weight_bits == 8:
        return Int8DynamicActivationInt8WeightConfig()
    return Int8DynamicActivationIntxWeightConfig(
        weight_dtype=torch.int4, weight_granularity=PerGroup(recipe.group_size), weight_mapping_type=MappingType.ASYMMETRIC
    )


def _overwrite(weight: torch.Tensor, attr: str, value: torch.Tensor) -> None:
    current = getattr(weight, attr)
    if current.shape != value.shape:
        raise QuantwiseError(f"torchao's {type(weight).__name__}.{attr} has shape {tuple(current.shape)}, ours {tuple(value.shape)}", "this torchao version is not the one quantwise supports (0.18.0)")
    setattr(weight, attr, value.contiguous())


def _overwrite_int4(weight: torch.Tensor, quant: GroupQuant, dtype: torch.dtype) -> None:
    """tinygemm convention: w = (q - 8) * scale + zero_float; ours: w = (q - zero) * scale."""
    from torchao.quantization.utils import pack_tinygemm_scales_and_zeros

    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(quant.qdata.to(torch.int32), 1)
    zero_float = (8 - quant.zero) * quant.scale
    _overwrite(weight, "qdata", packed)
    _overwrite(weight, "scale_and_zero", pack_tinygemm_scales_and_zeros(quant.scale.to(dtype), zero_float.to(dtype), dtype))
