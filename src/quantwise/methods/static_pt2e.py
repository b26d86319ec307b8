"""Static int8 through torch.export and torchao's PT2E x86 Inductor quantizer.

The converted graph keeps activation scales as literals, so an artifact cannot
store the converted model. It stores the calibrated (prepared) state instead:
observer statistics, and each weight as int8 codes under its own observer's
scale. Restoring replays prepare -> load -> convert, which reproduces the same
int8 model bit for bit (checked when the artifact is written).
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from quantwise.built import Built
from quantwise.config import DynamicInt8, StaticInt8
from quantwise.data.base import Inputs
from quantwise.errors import QuantwiseError, first_line
from quantwise.methods.base import QuantData, Quantized, calibrate, dynamic_batch_shapes, load_state
from quantwise.methods.layers import kept_float, kept_int8, kept_scopes
from quantwise.methods.xnnpack_quantizer import dynamic_config, symmetric_config, xnnpack_quantizer
from quantwise.observers import histogram_variant

WEIGHT_SUFFIX = ".int8"
INT4_MIN, INT4_MAX = -8, 7  # weight_bits=4: signed 4-bit codes, stored and run as int8 values


def activation_observer(observer: str, percentile: float) -> tuple[Any, dict[str, Any]]:
    """The PT2E observer class (and its arguments) for a recipe's ``observer`` name."""
    from torchao.quantization.pt2e import HistogramObserver, MinMaxObserver, MovingAverageMinMaxObserver

    observers: dict[str, tuple[Any, dict[str, Any]]] = {
        "minmax": (MinMaxObserver, {}),
        "moving-average": (MovingAverageMinMaxObserver, {"averaging_constant": 0.01}),
        "histogram": (HistogramObserver, {}),
        "percentile": (_PT2E_VARIANTS["percentile"], {"percentile": percentile}),
        "mse": (_PT2E_VARIANTS["mse"], {}),
    }
    return observers[observer]


def _quantizer(recipe: StaticInt8 | DynamicInt8, restoring: bool = False, keep_float: list[str] | None = None,
               keep_int8: list[str] | None = None) -> Any:
    """The x86 (or XNNPACK) quantizer with the recipe's activation observer; when ``restoring``, plain
    min/max observers that take the stored ranges (they compute the same qparams).
    Layers named in ``keep_float`` get no annotation and stay float; with 4-bit weights, those
    named in ``keep_int8`` get the 8-bit weight spec."""
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )
    import dataclasses

    if isinstance(recipe, DynamicInt8):  # XNNPACK's dynamic scheme: no activation observer to choose
        return xnnpack_quantizer(dynamic_config(), keep_float or [], linear_only=True)
    if recipe.granularity != "per-channel":
        raise QuantwiseError("the pt2e x86 quantizer takes per-channel weights only", "use granularity=per-channel or path=fx")
    cls, kwargs = activation_observer("minmax" if restoring else recipe.observer, recipe.percentile)
    config = symmetric_config() if recipe.backend == "xnnpack" else get_default_x86_inductor_quantization_config()
    act = dataclasses.replace(config.input_activation, observer_or_fake_quant_ctr=cls.with_args(eps=2**-12, **kwargs))
    config = dataclasses.replace(config, input_activation=act, output_activation=act if config.output_activation else None)
    eight_bit = config
    if recipe.weight_bits == 4:  # the same per-channel symmetric spec on 16 levels: codes in [-8, 7], run by the int8 kernels
        config = dataclasses.replace(config, weight=dataclasses.replace(config.weight, quant_min=INT4_MIN, quant_max=INT4_MAX))
    if recipe.backend == "xnnpack":
        return xnnpack_quantizer(config, keep_float or [])
    quantizer = X86InductorQuantizer()
    quantizer.set_global(config)
    for name in keep_int8 or ():
        quantizer.set_module_name_qconfig(name, eight_bit)
    for name in keep_float or ():
        quantizer.set_module_name_qconfig(name, None)
    return quantizer


def _variants() -> dict[str, type]:
    from torchao.quantization.pt2e import HistogramObserver

    return {name: histogram_variant(HistogramObserver, name) for name in ("percentile", "mse")}


_PT2E_VARIANTS = _variants()


def _prepare(model: nn.Module, recipe: StaticInt8 | DynamicInt8, example: Inputs, dynamic: bool, restoring: bool = False) -> nn.Module:
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    try:
        exported = torch.export.export(model.eval(), example, dynamic_shapes=dynamic_batch_shapes(example) if dynamic else None)
    except Exception as err:
        first = first_line(err)
        raise QuantwiseError(f"torch.export failed on this model ({type(err).__name__}: {first})", "try path=fx or the dynamic recipe") from err
    graph_module = exported.module()
    _expose_layer_subclasses(graph_module, model)
    keep = list(dict.fromkeys(kept_float(model, recipe) + kept_scopes(model, recipe)))
    return prepare_pt2e(graph_module, _quantizer(recipe, restoring, keep, kept_int8(model, recipe)))


_LAYER_OPS = {
    torch.ops.aten.conv1d.default: nn.Conv1d,
    torch.ops.aten.conv2d.default: nn.Conv2d,
    torch.ops.aten.conv3d.default: nn.Conv3d,
    torch.ops.aten.linear.default: nn.Linear,
}


def _expose_layer_subclasses(graph_module: torch.fx.GraphModule, model: nn.Module) -> None:
    """Let the quantizer see every conv/linear layer and every call of a shared module.

    The x86 quantizer groups ops by their innermost source module (``nn_module_stack``):
    by the module's class name, compared exactly, and by its qualified name. Two things
    then go wrong on ordinary models. A subclass such as EfficientNet's
    ``Conv2dStaticSamePadding(nn.Conv2d)`` is not matched, so the layer stays float; and a
    module called twice (one ``ReLU6`` reused in a block) makes one group with two outputs,
    which the quantizer rejects. So: record conv/linear subclasses under the torch class
    name, and give each repeated call (export keys them ``name@1``, ``name@2``) its own name.
    """
    for node in graph_module.graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if node.op != "call_function" or not stack or node.meta.get("source_fn_stack") is not None:
            continue
        key, (fqn, cls) = list(stack.items())[-1]
        call = key.rpartition("@")[2] if "@" in key else ""
        base = _LAYER_OPS.get(node.target)
        if base is not None:
            try:
                module = model.get_submodule(fqn)
            except AttributeError:
                module = None
            if isinstance(module, base):
                cls = f"{base.__module__}.{base.__qualname__}"
        if call.isdigit():
            fqn = f"{fqn}@{call}"
        if (fqn, cls) != stack[key]:
            node.meta["nn_module_stack"] = {**stack, key: (fqn, cls)}


def quantized_fraction(prepared: nn.Module) -> tuple[int, int]:
    """(layers whose weight is observed, conv/linear layers in the graph)."""
    targets = {torch.ops.aten.conv1d.default, torch.ops.aten.conv2d.default, torch.ops.aten.conv3d.default, torch.ops.aten.linear.default}
    layers = sum(1 for n in prepared.graph.nodes if n.op == "call_function" and n.target in targets)
    return len(_weight_observers(prepared)), layers


def _weight_observers(prepared: nn.Module) -> dict[str, nn.Module]:
    """Parameter name -> the observer that sees it (weights are get_attr nodes feeding a per-channel
    observer; a constant under a per-tensor activation observer, as XNNPACK's quantizer gives
    minilm's attention, is an activation: its range is stored like the others)."""
    found = {}
    for node in prepared.graph.nodes:
        if node.op == "call_module" and node.args and getattr(node.args[0], "op", None) == "get_attr":
            observer = getattr(prepared, node.target)
            if hasattr(observer, "ch_axis"):
                found[node.args[0].target] = observer
    return found


def _qparams(observer: nn.Module, ndim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The observer's scale and zero point, shaped to broadcast over a weight of ``ndim`` dims."""
    scale, zero_point = observer.calculate_qparams()
    shape = [1] * ndim
    shape[getattr(observer, "ch_axis", 0)] = -1
    return scale.reshape(shape), zero_point.reshape(shape)


def _state(prepared: nn.Module) -> dict[str, torch.Tensor]:
    """What the converted model uses: int8 weight codes, float biases, and for each
    activation observer only the range it settled on (not its 2048-bin histogram)."""
    weights = _weight_observers(prepared)
    weight_observers = {id(o) for o in weights.values()}
    out = {}
    for key, value in prepared.state_dict().items():
        if key in weights:
            obs = weights[key]
            scale, zp = _qparams(obs, value.dim())
            # as torchao's quantize_per_channel rounds (x * (1 / scale)), so that the codes equal convert_pt2e's
            out[key + WEIGHT_SUFFIX] = torch.clamp(torch.round(value * (1.0 / scale)) + zp, obs.quant_min, obs.quant_max).to(torch.int8)
        elif not key.startswith("activation_post_process_"):
            out[key] = value.detach().clone()
    # _modules, not named_children(): a shared observer stands under several names
    for name, obs in prepared._modules.items():
        if name.startswith("activation_post_process_") and not hasattr(obs, "min_val"):
            continue  # a dynamic activation's placeholder: nothing calibrated to keep
        if name.startswith("activation_post_process_") and id(obs) not in weight_observers:
            lo, hi = _activation_range(obs)
            out[f"{name}.min_val"], out[f"{name}.max_val"], out[f"{name}.eps"] = lo, hi, obs.eps.detach().clone()
        elif id(obs) in weight_observers:
            out.update({f"{name}.{k}": v.detach().clone() for k, v in obs.state_dict().items()})
    return out


def _activation_range(obs: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The range the observer's qparams come from (histogram observers search one)."""
    if hasattr(obs, "_non_linear_param_search") and float(obs.histogram.sum()) > 0:
        lo, hi = obs._non_linear_param_search()
        return torch.as_tensor(lo, dtype=torch.float32).reshape(()), torch.as_tensor(hi, dtype=torch.float32).reshape(())
    return obs.min_val.detach().clone(), obs.max_val.detach().clone()


def _load_state(prepared: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    # load_state: without the observers' version metadata, torchao takes the state for version 1
    # and resets every observer's eps to float32's (2**-23): weight scales then differ from the
    # calibrated model's, the stored codes are rounded a second time, and outputs drift
    observers = {k: v for k, v in tensors.items() if not k.endswith(WEIGHT_SUFFIX)}
    load_state(prepared, observers, strict=False)
    weights = _weight_observers(prepared)
    full = dict(observers)
    for key, obs in weights.items():
        codes = tensors[key + WEIGHT_SUFFIX]
        scale, zp = _qparams(obs, codes.dim())
        full[key] = (codes.float() - zp) * scale
    missing, unexpected = load_state(prepared, full, strict=False)
    if missing or unexpected:
        raise QuantwiseError(f"artifact does not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}", "re-create the artifact")


def _convert(prepared: nn.Module) -> nn.Module:
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    converted = convert_pt2e(prepared)
    # convert_pt2e leaves the float parameters attached although the graph no longer reads them
    used = {n.target for n in converted.graph.nodes if n.op == "get_attr"}
    for name, _ in list(converted.named_parameters()):
        if name not in used:
            owner, _, leaf = name.rpartition(".")
            delattr(converted.get_submodule(owner) if owner else converted, leaf)
    return converted


def quantize(model: nn.Module, recipe: StaticInt8 | DynamicInt8, data: QuantData) -> Quantized:
    keep, eight = kept_float(model, recipe), kept_int8(model, recipe)  # checks the patterns before the slow export
    dynamic = isinstance(recipe, DynamicInt8)
    adaround = not dynamic and recipe.rounding == "adaround"
    if adaround:
        from quantwise.methods import static_adaround

        static_adaround.check_samples(data)  # before the slow export
    meta: dict[str, Any] = {"dynamic_batch": data.dynamic_batch}
    float_model, smooth_notes = model, []
    if not dynamic and recipe.smoothquant is not None:
        from quantwise.methods import smoothing

        model = copy.deepcopy(model).eval()
        meta["smoothed"] = smoothing.smooth(model, recipe.smoothquant, data, skip=keep, limit=recipe.calibration_batches)
        smooth_notes = [f"SmoothQuant (alpha {recipe.smoothquant}) on {len(meta['smoothed'])} Linear input(s): a per-channel float multiply before each"]
    prepared = _prepare(copy.deepcopy(model), recipe, data.example(2), data.dynamic_batch)
    calibrate(prepared, data, 1 if dynamic else recipe.calibration_batches)  # dynamic: one batch shows the weight observers their weights
    observed, layers = quantized_fraction(prepared)
    tensors = _state(prepared)
    rounding_notes = []
    if adaround:
        # the learned codes replace nearest rounding's on the same grid (each weight's observer scale)
        report = static_adaround.learn_rounding(prepared, recipe, data, _weight_observers(prepared))
        tensors.update({key + WEIGHT_SUFFIX: codes for key, codes in report.codes.items()})
        meta["rounding"] = report.to_meta()
        rounding_notes = report.notes(recipe.rounding_iterations)
    # build the model in memory exactly as a reload will, from the stored state
    restored = restore(copy.deepcopy(float_model), recipe, data.example(2), tensors, meta)
    if dynamic:
        how = ("pt2e path (torch.export + XNNPACKQuantizer), dynamic int8 activations; meant for ExecuTorch (quantwise export --to executorch), "
               "where XNNPACK quantizes each row of a layer's input at run time (this PyTorch model quantizes the whole tensor, a little coarser)")
    elif recipe.backend == "xnnpack":
        how = (f"pt2e path (torch.export + XNNPACKQuantizer), {recipe.observer} observer; meant for ExecuTorch (quantwise export --to executorch): "
               "in PyTorch it runs in eager mode, since Inductor's x86 int8 kernels need uint8 activations")
    else:
        how = f"pt2e path (torch.export + X86InductorQuantizer), {recipe.observer} observer; runs fast only under torch.compile"
    restored.notes = [
        how,
        f"{_weight_kind(recipe)} in {observed - len(eight)} of {layers} conv/linear layers" + ("" if observed == layers - len(keep) else " (the quantizer left the others float)"),
    ] + ([f"kept float ({len(keep)}): {', '.join(keep)}"] if keep else []) + ([f"8-bit weights kept ({len(eight)}): {', '.join(eight)}"] if eight else []) + smooth_notes + rounding_notes
    return restored


def _weight_kind(recipe: StaticInt8 | DynamicInt8) -> str:
    if getattr(recipe, "weight_bits", 8) == 4:
        return f"4-bit weights (codes in [{INT4_MIN}, {INT4_MAX}] stored and run as int8: the x86 kernels have no int4 convolution)"
    return "int8 weights"


def restore(arch: nn.Module, recipe: StaticInt8 | DynamicInt8, example: Inputs, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Quantized:
    if example[0].shape[0] < 2:
        example = tuple(torch.cat([t, t]) for t in example)
    kept = tuple(kept_float(arch, recipe))
    if meta.get("smoothed") is not None:
        from quantwise.methods import smoothing

        smoothing.smoothed_structure(arch, meta["smoothed"])  # its inv_scale buffers load with the rest of the state
    prepared = _prepare(arch, recipe, example, meta.get("dynamic_batch", True), restoring=True)
    _load_state(prepared, tensors)
    # Inductor's x86 int8 kernels take uint8 activations: the XNNPACK graph (int8) runs in eager mode here
    if recipe.backend != "xnnpack":
        built = Built("pt2e", compiled=True, kept_float=kept)
    else:
        built = Built("pt2e-xnnpack-dynamic" if isinstance(recipe, DynamicInt8) else "pt2e-xnnpack", kept_float=kept)
    return Quantized(_convert(prepared), recipe, tensors, meta, built)
