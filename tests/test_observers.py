"""The range searches against direct computations on the samples themselves."""
import numpy as np
import pytest
import torch

from quantwise.observers import mse_range, percentile_range, quantization_mse


def _hist(x: torch.Tensor, bins: int = 2048):
    lo, hi = float(x.min()), float(x.max())
    return torch.histc(x, bins=bins, min=lo, max=hi), lo, hi


def test_percentile_matches_numpy_within_a_bin():
    x = torch.randn(200_000, generator=torch.Generator().manual_seed(0))
    hist, lo, hi = _hist(x)
    new_lo, new_hi = percentile_range(hist, lo, hi, 99.9)
    width = (hi - lo) / hist.numel()
    assert new_hi == pytest.approx(np.percentile(x.numpy(), 99.9), abs=2 * width)
    assert new_lo == pytest.approx(np.percentile(x.numpy(), 0.1), abs=2 * width)


def test_percentile_keeps_zero_in_range_for_relu_outputs():
    x = torch.relu(torch.randn(50_000)) + 0.5
    hist, lo, hi = _hist(x)
    assert percentile_range(hist, lo, hi, 99.0)[0] == 0.0


def test_mse_search_beats_minmax_on_heavy_tails_and_matches_real_error():
    # Student-t samples: a few outliers make the min/max range waste most of the 256 levels
    x = torch.from_numpy(np.random.default_rng(0).standard_t(3, 200_000)).float()
    hist, lo, hi = _hist(x)
    new_lo, new_hi = mse_range(hist, lo, hi, 256)
    assert hi - lo > new_hi - new_lo
    predicted = quantization_mse(hist, lo, hi, new_lo, new_hi, 256)
    assert predicted < quantization_mse(hist, lo, hi, lo, hi, 256)

    # the model's prediction agrees with actually quantizing the samples (within 20 %)
    def real_mse(a, b):
        scale = (b - a) / 255
        q = torch.clamp(torch.round((x - a) / scale), 0, 255) * scale + a
        return float(((q - x) ** 2).mean())

    assert predicted == pytest.approx(real_mse(new_lo, new_hi), rel=0.2)
    assert real_mse(new_lo, new_hi) < real_mse(lo, hi)
