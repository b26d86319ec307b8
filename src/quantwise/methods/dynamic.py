"""Post-training dynamic int8: Linear via torchao, LSTM/GRU via the legacy kernels,
Embedding tables as int8 weight-only (torchao)."""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from quantwise import legacy
from quantwise.built import Built
from quantwise.config import DynamicInt8
from quantwise.data.base import Inputs
from quantwise.errors import QuantwiseError, first_line
from quantwise.methods.base import ClassicMethod, QuantData, Quantized, load_state, register
from quantwise.methods.layers import kept_float, quantizable_layers

RNN_PREFIX = "__recurrent__."


def _apply(model: nn.Module, recipe: DynamicInt8) -> tuple[list[str], Built]:
    """Quantize ``model`` in place: the notes saying what was quantized, and what was built
    (compiled: some layer runs torchao's kernels, which torch.compile makes fast)."""
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, IntxWeightOnlyConfig, quantize_
    from torchao.quantization.granularity import PerAxis

    kept = kept_float(model, recipe)
    keep = set(kept)
    quantized = [n for n in quantizable_layers(model, recipe) if n not in keep]
    kinds = {n: type(model.get_submodule(n)) for n in quantized}
    done = []
    if any(issubclass(k, legacy.RECURRENT) for k in kinds.values()):
        legacy.quantize_recurrent(model, keep_float=keep)
        done.append("LSTM/GRU (legacy dynamic int8)")
    if any(k is nn.Linear for k in kinds.values()):
        quantize_(model, Int8DynamicActivationInt8WeightConfig(), filter_fn=lambda m, fqn: type(m) is nn.Linear and fqn not in keep)
        done.append("Linear (torchao int8 dynamic)")
    if any(issubclass(k, nn.Embedding) for k in kinds.values()):
        quantize_(
            model,
            IntxWeightOnlyConfig(weight_dtype=torch.int8, granularity=PerAxis(0)),
            filter_fn=lambda m, fqn: isinstance(m, nn.Embedding) and fqn not in keep,
        )
        done.append("Embedding (torchao int8 weight-only)")
    uses_torchao = any(k is nn.Linear or issubclass(k, nn.Embedding) for k in kinds.values())
    if keep:
        done.append(f"kept float ({len(keep)}): {', '.join(sorted(keep))}")
    return done, Built("dynamic", compiled=uses_torchao and not legacy.has_recurrent_quantized(model), kept_float=tuple(kept))


@register(DynamicInt8)
class Dynamic(ClassicMethod):
    """Dispatches on ``recipe.backend``: torchao (and the legacy LSTM kernels) here, XNNPACK's PT2E graph in static_pt2e."""

    def quantize(self, model: nn.Module, recipe: DynamicInt8, data: QuantData) -> Quantized:
        if recipe.backend == "xnnpack":
            from quantwise.methods import static_pt2e

            return static_pt2e.quantize(model, recipe, data)
        qmodel = copy.deepcopy(model).eval()
        done, built = _apply(qmodel, recipe)
        if not done:
            raise QuantwiseError(
                "dynamic quantization found no Linear, LSTM, GRU or Embedding layer to quantize",
                "use the static recipe for convolutional models",
            )
        tensors, meta = _state(qmodel)
        return Quantized(qmodel, recipe, tensors, meta, built, notes=done)

    def restore(self, arch: nn.Module, recipe: DynamicInt8, example: Inputs, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Quantized:
        from torchao.prototype.safetensors.safetensors_support import unflatten_tensor_state_dict

        if recipe.backend == "xnnpack":
            from quantwise.methods import static_pt2e

            return static_pt2e.restore(arch, recipe, example, tensors, meta)
        qmodel = arch.eval()
        done, built = _apply(qmodel, recipe)
        plain = {k: v for k, v in tensors.items() if not k.startswith(RNN_PREFIX)}
        state, leftover = unflatten_tensor_state_dict(plain, meta["torchao"])
        state.update(leftover)
        # packed LSTM/GRU parameters are not tensors; keep the fresh ones, then overwrite them below
        state.update({k: v for k, v in qmodel.state_dict().items() if not isinstance(v, torch.Tensor)})
        try:
            load_state(qmodel, state, strict=True, assign=True)
        except (RuntimeError, KeyError) as err:
            raise QuantwiseError(f"artifact does not fit the model: {first_line(err, 200)}", "re-create the artifact with this quantwise version") from err
        rnn = {k[len(RNN_PREFIX):]: v for k, v in tensors.items() if k.startswith(RNN_PREFIX)}
        if rnn:
            legacy.load_recurrent_weights(qmodel, legacy.unflatten_state(rnn, meta["recurrent"]))
        return Quantized(qmodel, recipe, tensors, meta, built, notes=done)


def _state(qmodel: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from torchao.prototype.safetensors.safetensors_support import flatten_tensor_state_dict

    plain = {k: v for k, v in qmodel.state_dict().items() if isinstance(v, torch.Tensor)}
    tensors, meta = flatten_tensor_state_dict(plain)
    rnn_tensors, rnn_meta = legacy.flatten_state(legacy.recurrent_weights(qmodel))
    tensors.update({RNN_PREFIX + k: v for k, v in rnn_tensors.items()})
    return tensors, {"torchao": meta, "recurrent": rnn_meta}
