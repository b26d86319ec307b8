"""Quantization-aware training on the eager-module path: fake-quantize weights and
activations, fine-tune with straight-through gradients, convert to int8."""
from __future__ import annotations

import copy
import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from quantwise import legacy
from quantwise.config import QAT
from quantwise.data.base import Inputs, TensorSet
from quantwise.methods.base import ClassicMethod, QuantData, Quantized, register
from quantwise.methods.layers import kept_float
from quantwise.methods.static_fx import finish, prepare, restore_converted

log = logging.getLogger(__name__)


def _loss(output: torch.Tensor, targets: torch.Tensor | None, reference: torch.Tensor | None) -> torch.Tensor:
    if targets is not None:
        return F.cross_entropy(output, targets)
    return F.mse_loss(output, reference)  # distil the float model where there are no labels


@register(QAT)
class QuantizationAwareTraining(ClassicMethod):
    def quantize(self, model: nn.Module, recipe: QAT, data: QuantData) -> Quantized:
        train: TensorSet = data.train if data.train is not None else data.calibration
        labelled = train.targets is not None
        float_model = model.eval()
        prepared = prepare(copy.deepcopy(model), recipe, data.example(1))
        prepared.train()
        optimizer = torch.optim.AdamW(prepared.parameters(), lr=recipe.lr, weight_decay=0.0)
        generator = torch.Generator().manual_seed(0)
        freeze_at = int(recipe.steps * recipe.freeze_observers_after)
        losses = []
        for step in data.progress("QAT fine-tuning", range(recipe.steps), recipe.steps):
            if step == freeze_at:
                legacy.freeze_qat(prepared)
            index = torch.randint(0, len(train), (recipe.batch_size,), generator=generator)
            batch = train.select(index)
            reference = None
            if not labelled:
                with torch.no_grad():
                    reference = float_model(*batch.inputs)
            loss = _loss(prepared(*batch.inputs), batch.targets, reference)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss))
        first, last = sum(losses[:20]) / min(20, len(losses)), sum(losses[-20:]) / min(20, len(losses))
        log.info("QAT loss %.4f -> %.4f over %d steps", first, last, recipe.steps)
        notes = [
            f"QAT {recipe.steps} steps, batch {recipe.batch_size}, lr {recipe.lr}, "
            f"{'cross-entropy on labels' if labelled else 'distilling the float outputs'} ({train.description or 'training data'}); "
            f"loss {first:.4g} -> {last:.4g}"
        ]
        return finish(prepared, recipe, notes, kept_float(model, recipe))

    def restore(self, arch: nn.Module, recipe: QAT, example: Inputs, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Quantized:
        return restore_converted(arch, recipe, example, tensors, meta)
