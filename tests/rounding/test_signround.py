"""SignRound: gains over round-to-nearest on held-out inputs, valid codes, opt-in learned clipping.

The measured numbers in comments are held-out output MSE relative to RTN (seed 0, the
settings used here, 1 thread); over data seeds 0-4 they ranged as noted, and the
assertions leave slack above the worst seed. The samples here are single tokens/images,
so mini-batches of 32 are used rather than AutoRound's 8 (which are whole sequences).
"""
from __future__ import annotations

import pytest
import torch
from rounding_cases import block_case, conv_case, heldout_ratio, linear_case, per_row_spec

from quantwise.rounding import (
    RoundedWeight,
    RoundingResult,
    dequantize,
    float_targets,
    reconstruction_mse,
    rtn_codes,
    signround,
)

SETTINGS = dict(iterations=300, batch_size=32)


def _run(case, **kwargs) -> RoundingResult:
    return _run_on(case.specs, case.forward, case.inputs, case.targets, **kwargs)


def _run_on(specs, forward, inputs, targets, **kwargs) -> RoundingResult:
    return signround(specs, forward, inputs, targets, **{**SETTINGS, **kwargs})


@pytest.fixture(scope="module")
def linear():
    case = linear_case()  # 64 x 128, 4-bit asymmetric per row, anisotropic inputs with outlier columns
    return case, _run(case)


def test_linear_beats_rtn_on_heldout_inputs(linear):
    case, result = linear
    # measured 0.819 (seeds 0-4: 0.77-0.84); calibration ratio 0.803
    assert heldout_ratio(case, result.dequantized()) < 0.9
    assert result.mse < 0.9 * result.rtn_mse
    mse = reconstruction_mse(case.forward, result.dequantized(), case.inputs, case.targets)
    assert result.mse == pytest.approx(mse, rel=1e-6)


def test_codes_are_valid_and_within_one_step_and_the_grid_is_untouched(linear):
    case, result = linear
    spec = case.specs[0]
    codes = result.codes["fc"]
    assert codes.dtype == torch.float32 and codes.shape == spec.w.shape
    assert torch.equal(codes, torch.round(codes))
    assert int(codes.min()) >= spec.qmin and int(codes.max()) <= spec.qmax
    # offsets in [-0.5, 0.5]: at most one step from the (clamped) real-valued code
    x = spec.real_codes().clamp(spec.qmin, spec.qmax)
    assert float((codes - x).abs().max()) <= 1.0
    changed = float((codes != rtn_codes(spec)).float().mean())
    assert 0.01 < changed < 0.5
    assert result.scales["fc"] is spec.scale and result.zeros["fc"] is spec.zero


def test_one_iteration_keeps_round_to_nearest():
    # step 0 is measured before any update, at V = 0, so it is the best seen so far
    case = linear_case(out_features=16, in_features=32, n=64)
    result = _run(case, iterations=1)
    assert torch.equal(result.codes["fc"], rtn_codes(case.specs[0]))
    assert result.mse == pytest.approx(result.rtn_mse, rel=1e-6)


def test_check_samples_measures_both_errors_on_the_same_spread_subset():
    case = linear_case(out_features=16, in_features=32, n=100)
    full = _run(case, iterations=40)
    part = _run(case, iterations=40, check_samples=25)
    assert torch.equal(full.codes["fc"], part.codes["fc"])  # the steps see every sample either way
    every = slice(None, None, 4)  # 25 of 100, spread evenly
    learned = reconstruction_mse(case.forward, part.dequantized(), case.inputs[every], case.targets[every])
    rtn = {"fc": dequantize(rtn_codes(case.specs[0]), case.specs[0].scale, case.specs[0].zero)}
    assert part.mse == pytest.approx(learned, rel=1e-6)
    assert part.rtn_mse == pytest.approx(reconstruction_mse(case.forward, rtn, case.inputs[every], case.targets[every]), rel=1e-6)
    assert part.mse != full.mse
    assert _run(case, iterations=40, check_samples=500).mse == full.mse  # more than there are: all of them
    with pytest.raises(ValueError, match="check_samples must be a positive integer"):
        _run(case, iterations=2, check_samples=0)


def test_conv2d_per_channel_beats_rtn():
    case = conv_case()  # 8 -> 16 channels 3x3, 4-bit per output channel, 10x10 images
    # measured 0.732 (seeds 0-4: 0.52-0.83)
    assert heldout_ratio(case, _run(case).dequantized()) < 0.9


def test_block_reconstruction_of_two_layers_beats_rtn():
    case = block_case()  # Linear(64->128), ReLU, Linear(128->64), both 4-bit per row, rounded jointly
    # measured 0.475 (seeds 0-4: 0.43-0.48)
    assert heldout_ratio(case, _run(case).dequantized()) < 0.6

    # Per layer, the second layer seeing the first one's quantized output, measured 0.330
    # (0.25-0.33 over seeds): better than joint on this block, every seed, so only "both
    # beat RTN" is asserted.
    s1, s2 = case.specs
    b1 = case.parts["b1"]
    first = lambda p, x: x @ p["fc1"].T + b1  # noqa: E731
    q1 = _run_on([s1], first, case.inputs, float_targets(first, [s1], case.inputs)).dequantized()["fc1"]
    hidden = torch.relu(case.inputs @ q1.T + b1)
    q2 = _run_on([s2], lambda p, x: x @ p["fc2"].T, hidden, case.targets).dequantized()["fc2"]
    assert heldout_ratio(case, {"fc1": q1, "fc2": q2}) < 0.6


def test_symmetric_8bit_grid_gives_signed_codes_and_gains():
    case = linear_case(bits=8, symmetric=True)
    result = _run(case)
    codes = result.codes["fc"]
    assert int(codes.min()) < 0 < int(codes.max())
    assert int(codes.min()) >= -128 and int(codes.max()) <= 127
    # measured 0.845 (seeds 0-4: 0.80-0.91)
    assert heldout_ratio(case, result.dequantized()) < 0.97


def test_same_seed_same_codes_whatever_the_global_rng():
    case = linear_case(out_features=16, in_features=32, n=128)
    torch.manual_seed(1)
    a = _run(case, iterations=60, seed=7)
    torch.manual_seed(2)
    b = _run(case, iterations=60, seed=7)
    assert torch.equal(a.codes["fc"], b.codes["fc"]) and a.mse == b.mse


def test_learned_clipping_returns_a_new_grid_that_the_codes_live_on(linear):
    case, fixed = linear
    spec = case.specs[0]
    result = _run(case, learn_clipping=True)
    scale, zero, codes = result.scales["fc"], result.zeros["fc"], result.codes["fc"]
    assert scale.shape == spec.scale.shape == (64, 1) and zero.shape == (64, 1)
    assert scale.dtype == zero.dtype == torch.float32
    assert not torch.equal(scale, spec.scale)  # a new grid
    # the range only shrinks, at most to half on each side, and the zero-point stays an integer code
    lo, hi = (spec.qmin - zero) * scale, (spec.qmax - zero) * scale
    lo0, hi0 = (spec.qmin - spec.zero) * spec.scale, (spec.qmax - spec.zero) * spec.scale
    step = scale  # one code of slack: the zero-point is rounded
    assert bool((hi <= hi0 + step).all() and (lo >= lo0 - step).all())
    assert bool((hi - lo >= 0.5 * (hi0 - lo0) - 1e-6).all())
    assert torch.equal(zero, torch.round(zero)) and int(zero.min()) >= spec.qmin and int(zero.max()) <= spec.qmax
    assert torch.equal(codes, torch.round(codes))
    assert int(codes.min()) >= spec.qmin and int(codes.max()) <= spec.qmax
    # codes are within one step of the weight's real-valued code on the NEW grid
    x = (spec.w / scale + zero).clamp(spec.qmin, spec.qmax)
    assert float((codes - x).abs().max()) <= 1.0 + 1e-4
    assert torch.allclose(result.dequantized()["fc"], dequantize(codes, scale, zero))
    # the caller's grid and RTN on it are the reference; clipping helps here:
    # measured 0.812 held-out (0.64-0.81 over seeds) vs 0.819 without clipping
    assert result.rtn_mse == pytest.approx(fixed.rtn_mse)
    assert heldout_ratio(case, result.dequantized()) < 0.9


def test_learned_clipping_on_a_symmetric_grid_keeps_zero_at_zero():
    case = linear_case(out_features=16, in_features=32, n=128, bits=4, symmetric=True)
    result = _run(case, iterations=60, learn_clipping=True)
    spec = case.specs[0]
    assert bool((result.zeros["fc"] == 0).all())
    ratio = result.scales["fc"] / spec.scale
    assert bool((ratio >= 0.5 - 1e-6).all() and (ratio <= 1 + 1e-6).all())
    assert int(result.codes["fc"].min()) >= -8 and int(result.codes["fc"].max()) <= 7


def test_learned_clipping_refuses_grid_parameters_expanded_to_the_weight():
    w = torch.randn(8, 16, generator=torch.Generator().manual_seed(0))
    spec = per_row_spec("fc", w)
    expanded = RoundedWeight("fc", w, spec.scale.expand(8, 16), spec.zero.expand(8, 16), spec.qmin, spec.qmax)
    x = torch.randn(32, 16)
    forward = lambda p, x: x @ p["fc"].T  # noqa: E731
    with pytest.raises(ValueError, match="learned clipping needs the grid parameters un-expanded"):
        signround([expanded], forward, x, x @ w.T, iterations=2, learn_clipping=True)
    # without clipping the expanded grid is fine
    signround([expanded], forward, x, x @ w.T, iterations=2)
