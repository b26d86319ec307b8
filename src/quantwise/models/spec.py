"""Model specs, resolved once at the edge: a zoo name, ``file.py:factory`` or ``pkg.module:factory``.

A factory returns a ``ModelBundle``, an ``nn.Module``, or ``(module, example_inputs)``;
the last two need data (``--data``), split here into disjoint calibration and
evaluation parts.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from quantwise.data.base import TensorSet
from quantwise.errors import QuantwiseError, first_line
from quantwise.factory import call_factory
from quantwise.models.base import ModelBundle


def zoo_names() -> list[str]:
    from quantwise.models.zoo import ZOO

    return sorted(ZOO)


def resolve_model(spec: str, data: str | None = None, n_calibration: int | None = None, n_evaluation: int | None = None) -> ModelBundle:
    from quantwise.models.zoo import ZOO

    if spec in ZOO:
        bundle = ZOO[spec](n_calibration=n_calibration, n_evaluation=n_evaluation)
        if data is not None:
            bundle = _with_user_data(bundle, data, n_calibration, n_evaluation)
        return bundle
    if ":" not in spec:
        raise QuantwiseError(f"unknown model {spec!r}", f"use a zoo model ({', '.join(sorted(ZOO))}) or 'file.py:factory'")
    made = call_factory(spec, "model")
    if isinstance(made, ModelBundle):
        return made if data is None else _with_user_data(made, data, n_calibration, n_evaluation)
    module, example = (made if isinstance(made, tuple) else (made, None))
    if not isinstance(module, nn.Module):
        raise QuantwiseError(f"model factory {spec} returned {type(module).__name__}, not an nn.Module", "return an nn.Module, (module, example_inputs) or a ModelBundle")
    if data is None:
        raise QuantwiseError(f"model {spec} comes without data", "pass --data (a folder of images, a .pt/.npz/.safetensors file, or file.py:factory)")
    from quantwise.data.user import load_data

    samples = load_data(data, example)
    bundle = bundle_from_samples(spec, module.eval(), samples, n_calibration, n_evaluation)
    bundle.build_arch = lambda: _module_of(call_factory(spec, "model"))
    return bundle


def _module_of(made: Any) -> nn.Module:
    return made[0] if isinstance(made, tuple) else made


def split(samples: TensorSet, n_calibration: int | None, n_evaluation: int | None) -> tuple[TensorSet, TensorSet]:
    """Disjoint calibration and evaluation parts from one set (seeded shuffle, a quarter for calibration)."""
    if len(samples) < 4:
        raise QuantwiseError(f"the data has only {len(samples)} samples", "give at least 4 (calibration and evaluation must be disjoint)")
    order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(0))
    n_cal = min(n_calibration or max(1, len(samples) // 4), len(samples) - 1)
    n_eval = min(n_evaluation or len(samples) - n_cal, len(samples) - n_cal)
    cal = samples.select(order[:n_cal])
    ev = samples.select(order[n_cal : n_cal + n_eval])
    cal.description = f"{n_cal} samples of {samples.description or 'the user data'} (calibration part)"
    ev.description = f"{n_eval} other samples of {samples.description or 'the user data'} (evaluation part)"
    return cal, ev


def bundle_from_samples(name: str, module: nn.Module, samples: TensorSet, n_cal: int | None, n_eval: int | None) -> ModelBundle:
    check_fits(module, samples, name)
    cal, ev = split(samples, n_cal, n_eval)
    if samples.targets is not None:
        return ModelBundle(name, module, cal, ev, task="classification", primary="top1", tolerance=0.01, description="user model, labelled data")
    return ModelBundle(name, module, cal, ev, task="embedding", primary="cosine", tolerance=0.01, description="user model, unlabelled data: fidelity to float")


def check_fits(module: nn.Module, samples: TensorSet, name: str) -> None:
    try:
        with torch.no_grad():
            out = module(*samples.example(2))
    except Exception as err:
        shapes = ", ".join(str(tuple(t.shape[1:])) for t in samples.inputs)
        raise QuantwiseError(
            f"the data does not fit model {name}: samples of shape {shapes} gave {type(err).__name__}: {first_line(err, 140)}",
            "give data shaped like the model's input (batch first)",
        ) from None
    if not isinstance(out, torch.Tensor):
        raise QuantwiseError(f"model {name} returns {type(out).__name__}, not a tensor", "wrap it so that forward returns one tensor")


def _with_user_data(bundle: ModelBundle, data: str, n_cal: int | None, n_eval: int | None) -> ModelBundle:
    from quantwise.data.user import load_data

    samples = load_data(data, bundle.example_inputs(1))
    check_fits(bundle.model, samples, bundle.name)
    cal, ev = split(samples, n_cal, n_eval)
    bundle.calibration, bundle.evaluation = cal, ev
    if ev.targets is None and bundle.primary == "top1":
        bundle.primary = "agreement"
    return bundle
