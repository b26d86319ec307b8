"""Quantized transfer learning on a real backbone, and dynamic int8 on the real LSTM."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from quantwise import api
from quantwise.data.base import TensorSet
from quantwise.models.base import ModelBundle
from quantwise.transfer import QuantizedBackbone, fit_head
from tests.helpers import run


def _sklearn_digits() -> tuple[TensorSet, TensorSet]:
    """sklearn's 8x8 digits (a different data set from MNIST), upscaled to 28x28 and normalised like MNIST."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
    x = F.interpolate(F.pad(x, (1, 1, 1, 1)), size=(28, 28), mode="bilinear", align_corners=False)
    x = (x - 0.1307) / 0.3081
    y = torch.from_numpy(digits.target).long()
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    train, test = order[:1200], order[1200:]
    return TensorSet((x[train],), y[train], "sklearn digits train"), TensorSet((x[test],), y[test], "sklearn digits test")


def test_float_head_on_reloaded_int8_backbone(mnist, tmp_path):
    from quantwise.models.mnist_cnn import build

    backbone = ModelBundle("mnist-cnn-features", build().features, mnist.calibration, mnist.evaluation,
                           task="embedding", primary="cosine", tolerance=0.01, build_arch=lambda: build().features)
    path = api.save(api.quantize(backbone, "static-fx"), tmp_path / "backbone")
    reloaded = api.load(path, arch=build().features).module

    train, test = _sklearn_digits()
    model = QuantizedBackbone(reloaded, nn.Linear(64 * 7 * 7, 10))
    before = [p.detach().clone() for p in model.head.parameters()]
    fit = fit_head(model, train, steps=150, lr=2e-3)
    assert fit.last_loss < fit.first_loss / 3
    assert any(not torch.equal(a, b) for a, b in zip(before, model.head.parameters()))
    accuracy = (run(model, test.inputs).argmax(1) == test.targets).float().mean().item()
    assert accuracy > 0.9  # new task, new data: the int8 MNIST features transfer


def test_lstm_dynamic_int8_on_speech(speaker, tmp_path):
    reference = run(speaker.model, speaker.evaluation.inputs)
    result = api.quantize(speaker, "dynamic")
    quantized = run(result.quantized.module, speaker.evaluation.inputs)
    cosine = F.cosine_similarity(reference, quantized).mean().item()
    # ZOO.md reports naive dynamic int8 at 0.66-0.74 cosine on its data; we measure it and hold
    # the floor where it stands, so a regression shows. Fixing it is the auto/mixed-precision issue's job.
    assert 0.5 < cosine < 0.9999
    path = api.save(result, tmp_path / "lstm")
    loaded = api.load(path)
    probe = speaker.evaluation.example(8)
    assert torch.equal(run(result.quantized.module, probe), run(loaded.module, probe))
