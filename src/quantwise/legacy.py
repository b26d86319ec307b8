"""The only module that touches the deprecated ``torch.ao.quantization`` API.

What still needs it: the eager-module (FX) static and QAT paths, whose int8
kernels are the fastest eager-mode CNN kernels on x86 and the only ones for
qnnpack, and dynamic LSTM/GRU, which torchao does not cover. When torch drops
the API, this file is what to replace.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from torch.ao.quantization import (
        FakeQuantize,
        HistogramObserver,
        MinMaxObserver,
        MovingAverageMinMaxObserver,
        MovingAveragePerChannelMinMaxObserver,
        PerChannelMinMaxObserver,
        QConfig,
        QConfigMapping,
        default_dynamic_qconfig,
        quantize_dynamic,
    )
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx, prepare_qat_fx

from quantwise.observers import histogram_variant

PercentileObserver = histogram_variant(HistogramObserver, "percentile")
MSEObserver = histogram_variant(HistogramObserver, "mse")

_ACTIVATION_OBSERVERS: dict[str, Any] = {
    "minmax": MinMaxObserver,
    "moving-average": MovingAverageMinMaxObserver.with_args(averaging_constant=0.01),
    "histogram": HistogramObserver,
    "percentile": PercentileObserver,
    "mse": MSEObserver,
}
RECURRENT = (nn.LSTM, nn.GRU)


def set_engine(backend: str) -> None:
    torch.backends.quantized.engine = backend


def _weight_observer(granularity: str, bits: int, qat: bool) -> Any:
    qmin, qmax = (-8, 7) if bits == 4 else (-128, 127)
    if granularity == "per-channel":
        obs = MovingAveragePerChannelMinMaxObserver if qat else PerChannelMinMaxObserver
        kw = dict(qscheme=torch.per_channel_symmetric, ch_axis=0)
    else:
        obs = MovingAverageMinMaxObserver if qat else MinMaxObserver
        kw = dict(qscheme=torch.per_tensor_symmetric)
    kw.update(dtype=torch.qint8, quant_min=qmin, quant_max=qmax)
    if qat:
        return FakeQuantize.with_args(observer=obs, **kw)
    return obs.with_args(**kw)


def qconfig(observer: str, granularity: str, backend: str, weight_bits: int, percentile: float, qat: bool = False) -> QConfig:
    """The QConfig for one recipe. x86 keeps 7-bit activations (reduce_range) as PyTorch's
    own default does, to stay clear of the VNNI u8*s8 accumulation overflow on older CPUs."""
    reduce = backend == "x86"
    act_kw: dict[str, Any] = dict(dtype=torch.quint8, qscheme=torch.per_tensor_affine, reduce_range=reduce)
    act = _ACTIVATION_OBSERVERS["moving-average" if qat else observer]
    if observer in ("percentile", "mse") and not qat:
        act_kw["percentile"] = percentile
    if qat:
        activation = FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=127 if reduce else 255, **act_kw)
    else:
        activation = act.with_args(**act_kw)
    return QConfig(activation=activation, weight=_weight_observer(granularity, weight_bits, qat))


def fx_prepare(model: nn.Module, qc: QConfig, example: tuple[torch.Tensor, ...], qat: bool = False, keep_float: Iterable[str] = ()) -> nn.Module:
    """Trace, fuse (conv-bn-relu, linear-relu) and insert observers; the model is not edited.
    Modules named in ``keep_float`` get no qconfig: they stay float modules in the converted model."""
    mapping = QConfigMapping().set_global(qc)
    for name in keep_float:
        mapping.set_module_name(name, None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if qat:
            return prepare_qat_fx(model.train(), mapping, example)
        return prepare_fx(model.eval(), mapping, example)


def fx_convert(prepared: nn.Module) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert_fx(prepared.eval())


def freeze_qat(prepared: nn.Module) -> None:
    """Stop observer updates and freeze BatchNorm statistics for the last QAT steps."""
    from torch.ao.quantization import disable_observer
    from torch.ao.nn.intrinsic import qat as nniqat

    prepared.apply(disable_observer)
    prepared.apply(nniqat.freeze_bn_stats)


def quantize_recurrent(model: nn.Module, keep_float: Iterable[str] = ()) -> nn.Module:
    """Dynamic int8 LSTM/GRU (in place) except those named in ``keep_float``; per-tensor
    symmetric weights, legacy kernels."""
    keep = set(keep_float)
    names = {n: default_dynamic_qconfig for n, m in model.named_modules() if isinstance(m, RECURRENT) and n not in keep}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, names, inplace=True)


def has_recurrent(model: nn.Module) -> bool:
    return any(isinstance(m, RECURRENT) for m in model.modules())


def recurrent_modules(model: nn.Module) -> Iterable[tuple[str, nn.Module]]:
    from torch.ao.nn.quantized.dynamic import GRU as QGRU, LSTM as QLSTM

    return ((n, m) for n, m in model.named_modules() if isinstance(m, (QLSTM, QGRU)))


# ---- converted-model state <-> plain tensors (safetensors holds no quantized dtypes) ----

def flatten_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Turn a converted legacy model's state dict into plain tensors plus JSON metadata.

    Quantized tensors become their integer values + scales + zero points; the packed
    (weight, bias) tuples of quantized Linear become two entries.
    """
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {}
    for key, value in state.items():
        if isinstance(value, torch.dtype):
            meta[key] = {"type": "dtype", "value": str(value).removeprefix("torch.")}
        elif isinstance(value, tuple):
            meta[key] = {"type": "tuple", "items": [_flatten_tensor(f"{key}.{i}", v, tensors) for i, v in enumerate(value)]}
        elif isinstance(value, torch.Tensor):
            meta[key] = _flatten_tensor(key, value, tensors)
        else:
            from quantwise.errors import QuantwiseError

            raise QuantwiseError(
                f"the fx path cannot save this model: state entry {key} is a packed {type(value).__name__} "
                "(functional convolutions are not yet serialised)",
                "use recipe static-pt2e or dynamic for this model",
            )
    return tensors, meta


def _flatten_tensor(key: str, t: torch.Tensor | None, out: dict[str, torch.Tensor]) -> dict[str, Any]:
    if t is None:
        return {"type": "none"}
    if not t.is_quantized:
        out[key] = t.detach().contiguous()
        return {"type": "tensor"}
    out[f"{key}.int"] = t.int_repr().contiguous()
    info: dict[str, Any] = {"type": "qtensor", "dtype": str(t.dtype).removeprefix("torch."), "qscheme": str(t.qscheme()).removeprefix("torch.")}
    if t.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric, torch.per_channel_affine_float_qparams):
        out[f"{key}.scales"] = t.q_per_channel_scales().contiguous()
        out[f"{key}.zero_points"] = t.q_per_channel_zero_points().contiguous()
        info["axis"] = t.q_per_channel_axis()
    else:
        info["scale"] = t.q_scale()
        info["zero_point"] = t.q_zero_point()
    return info


def unflatten_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[str, Any] = {}
    for key, info in meta.items():
        if info["type"] == "dtype":
            state[key] = getattr(torch, info["value"])
        elif info["type"] == "tuple":
            state[key] = tuple(_unflatten_tensor(f"{key}.{i}", item, tensors) for i, item in enumerate(info["items"]))
        else:
            state[key] = _unflatten_tensor(key, info, tensors)
    return state


def _unflatten_tensor(key: str, info: dict[str, Any], tensors: dict[str, torch.Tensor]) -> torch.Tensor | None:
    if info["type"] == "none":
        return None
    if info["type"] == "tensor":
        return tensors[key]
    ints = tensors[f"{key}.int"]
    if "axis" in info:
        scales, zero_points = tensors[f"{key}.scales"].double(), tensors[f"{key}.zero_points"].long()
        return torch._make_per_channel_quantized_tensor(ints, scales, zero_points, info["axis"])
    return torch._make_per_tensor_quantized_tensor(ints, info["scale"], info["zero_point"])


def recurrent_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """Weights and biases of every dynamic-int8 LSTM/GRU, keyed '<module>.<weight|bias>.<param>'."""
    out: dict[str, torch.Tensor] = {}
    for name, mod in recurrent_modules(model):
        for kind, params in mod._weight_bias().items():
            out.update({f"{name}.{kind}.{p}": value for p, value in params.items()})
    return out


def load_recurrent_weights(model: nn.Module, weights: dict[str, torch.Tensor]) -> None:
    for name, mod in recurrent_modules(model):
        # _weight_bias() nests {"weight": {...}, "bias": {...}}; set_weight_bias takes them flat
        flat = {}
        for key, value in weights.items():
            owner, _, param = key.rsplit(".", 2)
            if owner == name:
                flat[param] = value
        mod.set_weight_bias(flat)


def has_recurrent_quantized(model: nn.Module) -> bool:
    return any(True for _ in recurrent_modules(model))
