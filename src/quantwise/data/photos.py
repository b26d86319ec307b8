"""Natural colour photos bundled with scikit-image, scikit-learn and matplotlib (no labels).

No ImageNet images exist offline, so ImageNet models are calibrated and judged on these
photos and on deterministic random-resized crops / flips of them. Sets built from different
photos never share a pixel source, which keeps calibration and evaluation disjoint.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image

log = logging.getLogger(__name__)


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        image = getattr(skimage.data, name)()
        return image[0] if isinstance(image, tuple) else image  # stereo_motorcycle -> left view

    return load


def _sklearn(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return load_sample_image(name)

    return load


def _grace_hopper() -> np.ndarray:
    import matplotlib.cbook

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        return np.asarray(Image.open(f).convert("RGB"))


PHOTOS: dict[str, Callable[[], np.ndarray]] = {
    "astronaut": _skimage("astronaut"),
    "chelsea": _skimage("chelsea"),
    "coffee": _skimage("coffee"),
    "rocket": _skimage("rocket"),
    "motorcycle": _skimage("stereo_motorcycle"),
    "hubble_deep_field": _skimage("hubble_deep_field"),
    "retina": _skimage("retina"),
    "immunohistochemistry": _skimage("immunohistochemistry"),
    "china": _sklearn("china.jpg"),
    "flower": _sklearn("flower.jpg"),
    "grace_hopper": _grace_hopper,
}


def load_photo(name: str) -> Image.Image:
    """One of ``PHOTOS`` as an RGB PIL image."""
    return Image.fromarray(np.ascontiguousarray(PHOTOS[name]()[..., :3])).convert("RGB")


def centre_crop(image: Image.Image, size: int = 224, resize: int = 256) -> np.ndarray:
    """Resize the short side to ``resize`` (bilinear), cut the central ``size`` square: (size, size, 3) uint8."""
    w, h = image.size
    scale = resize / min(w, h)
    image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BILINEAR)
    left, top = (image.width - size) // 2, (image.height - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)))


def random_resized_crop(
    image: Image.Image,
    rng: np.random.Generator,
    size: int = 224,
    scale: tuple[float, float] = (0.2, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> np.ndarray:
    """Inception-style crop: random area fraction and aspect ratio, resized to size x size, random flip."""
    w, h = image.size
    for _ in range(10):
        area = w * h * rng.uniform(*scale)
        aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
        cw, ch = round(np.sqrt(area * aspect)), round(np.sqrt(area / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            break
    else:
        cw = ch = min(w, h)
    left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    crop = image.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + cw, top + ch))
    if rng.random() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(crop)


def photo_crops(names: Sequence[str], n: int, seed: int = 0, size: int = 224) -> torch.Tensor:
    """``n`` crops (n, 3, size, size) uint8, cycling through ``names``.

    Crop ``k`` of each photo is its centre crop for ``k == 0`` and a random-resized crop
    otherwise; the random stream of each photo is seeded by (seed, photo name), so the
    first crops do not change when ``n`` grows.
    """
    per_photo = -(-n // len(names))
    crops: list[list[np.ndarray]] = []
    for name in names:
        image = load_photo(name)
        rng = np.random.default_rng([seed, *name.encode()])
        crops.append([centre_crop(image, size)] + [random_resized_crop(image, rng, size) for _ in range(per_photo - 1)])
    ordered = [crops[i % len(names)][i // len(names)] for i in range(n)]
    return torch.from_numpy(np.stack(ordered)).permute(0, 3, 1, 2).contiguous()
