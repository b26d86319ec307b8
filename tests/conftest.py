"""Shared fixtures: real zoo models loaded once per session, small enough for 2 cores."""
from __future__ import annotations

import os
import warnings

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")
torch.manual_seed(0)


@pytest.fixture(scope="session")
def mnist():
    from quantwise import api

    return api.load_model("mnist-cnn", n_calibration=256, n_evaluation=2000)


@pytest.fixture(scope="session")
def mnist_reference(mnist):
    from quantwise.evaluate.metrics import outputs

    return outputs(mnist.model, mnist.evaluation)


@pytest.fixture(scope="session")
def speaker():
    from quantwise import api

    return api.load_model("resemblyzer-lstm")
