"""AdaRound: gains over round-to-nearest on held-out inputs, floor-or-ceil codes, determinism.

The measured numbers in comments are held-out output MSE relative to RTN (seed 0, the
iterations used here, 1 thread); over data seeds 0-4 they ranged as noted, and the
assertions leave slack above the worst seed.
"""
from __future__ import annotations

import pytest
import torch
from rounding_cases import block_case, conv_case, heldout_ratio, linear_case, rtn_weights

from quantwise.rounding import RoundedWeight, RoundingResult, adaround, float_targets, reconstruction_mse, rtn_codes
from quantwise.rounding.adaround import _initial_v, _SoftWeight, beta_schedule, rectified_sigmoid

ITERATIONS = 500


def _run(case, **kwargs) -> RoundingResult:
    return _run_on(case.specs, case.forward, case.inputs, case.targets, **kwargs)


def _run_on(specs, forward, inputs, targets, **kwargs) -> RoundingResult:
    return adaround(specs, forward, inputs, targets, **{"iterations": ITERATIONS, **kwargs})


@pytest.fixture(scope="module")
def linear():
    case = linear_case()  # 64 x 128, 4-bit asymmetric per row, anisotropic inputs with outlier columns
    return case, _run(case)


def test_linear_beats_rtn_on_heldout_inputs(linear):
    case, result = linear
    # measured 0.591 (seeds 0-4: 0.51-0.63); calibration ratio 0.583
    assert heldout_ratio(case, result.dequantized()) < 0.7
    assert result.mse < 0.7 * result.rtn_mse


def test_codes_are_floor_or_floor_plus_one_within_bounds(linear):
    case, result = linear
    spec = case.specs[0]
    codes = result.codes["fc"]
    assert codes.dtype == torch.float32 and codes.shape == spec.w.shape
    assert torch.equal(codes, torch.round(codes))
    assert int(codes.min()) >= spec.qmin and int(codes.max()) <= spec.qmax
    floor = torch.floor(spec.real_codes())
    down = codes == floor.clamp(spec.qmin, spec.qmax)
    up = codes == (floor + 1).clamp(spec.qmin, spec.qmax)
    assert bool((down | up).all())
    # it learned something: a good share of the codes differ from round-to-nearest
    changed = float((codes != rtn_codes(spec)).float().mean())
    assert 0.05 < changed < 0.5
    # the grid is the caller's, untouched
    assert result.scales["fc"] is spec.scale and result.zeros["fc"] is spec.zero


def test_reported_errors_are_the_calibration_mse(linear):
    case, result = linear
    mse = reconstruction_mse(case.forward, result.dequantized(), case.inputs, case.targets)
    rtn = reconstruction_mse(case.forward, rtn_weights(case), case.inputs, case.targets)
    assert result.mse == pytest.approx(mse, rel=1e-6)
    assert result.rtn_mse == pytest.approx(rtn, rel=1e-6)
    assert result.iterations == ITERATIONS and result.seconds > 0


def test_conv2d_per_channel_beats_rtn():
    case = conv_case()  # 8 -> 16 channels 3x3, 4-bit per output channel, 10x10 images
    result = _run(case)
    # measured 0.511 (seeds 0-4: 0.30-0.53)
    assert heldout_ratio(case, result.dequantized()) < 0.65


def test_block_reconstruction_of_two_layers_beats_rtn():
    case = block_case()  # Linear(64->128), ReLU, Linear(128->64), both 4-bit per row, rounded jointly
    joint = _run(case)
    # measured 0.356 (seeds 0-4: 0.30-0.36); joint with 1000 iterations: 0.258
    assert heldout_ratio(case, joint.dequantized()) < 0.5

    # Per layer, the second layer seeing the first one's quantized output, measured 0.306
    # at 500 iterations per layer (0.26-0.31 over seeds): better than joint at equal
    # iterations per call on this block, every seed, so only "both beat RTN" is asserted.
    s1, s2 = case.specs
    b1 = case.parts["b1"]
    first = lambda p, x: x @ p["fc1"].T + b1  # noqa: E731
    q1 = _run_on([s1], first, case.inputs, float_targets(first, [s1], case.inputs)).dequantized()["fc1"]
    hidden = torch.relu(case.inputs @ q1.T + b1)
    q2 = _run_on([s2], lambda p, x: x @ p["fc2"].T, hidden, case.targets).dequantized()["fc2"]
    assert heldout_ratio(case, {"fc1": q1, "fc2": q2}) < 0.5


def test_symmetric_8bit_grid_gives_signed_codes_and_gains():
    case = linear_case(bits=8, symmetric=True)
    spec = case.specs[0]
    assert spec.qmin == -128 and bool((spec.zero == 0).all())
    result = _run(case)
    codes = result.codes["fc"]
    assert int(codes.min()) < 0 < int(codes.max())
    assert int(codes.min()) >= -128 and int(codes.max()) <= 127
    # measured 0.634 (seeds 0-4: 0.57-0.65)
    assert heldout_ratio(case, result.dequantized()) < 0.75


def test_same_seed_same_codes_whatever_the_global_rng():
    case = linear_case(out_features=16, in_features=32, n=128)
    torch.manual_seed(1)
    a = _run(case, iterations=100, seed=7)
    torch.manual_seed(2)
    b = _run(case, iterations=100, seed=7)
    assert torch.equal(a.codes["fc"], b.codes["fc"]) and a.mse == b.mse


def test_progress_is_reported_every_n_steps_and_at_the_end():
    case = linear_case(out_features=8, in_features=16, n=64)
    calls = []
    _run(case, iterations=25, progress=lambda step, total, loss: calls.append((step, total, loss)), progress_every=10)
    assert [(s, t) for s, t, _ in calls] == [(10, 25), (20, 25), (25, 25)]
    assert all(isinstance(loss, float) and loss >= 0 for _, _, loss in calls)


def test_start_is_the_float_weight_and_schedule_matches_the_paper():
    case = linear_case(out_features=8, in_features=16, n=16)
    spec = case.specs[0]
    x = spec.real_codes()
    h = rectified_sigmoid(_initial_v(x - torch.floor(x)))
    soft = spec.dequantize(torch.floor(x) + h)
    assert torch.allclose(soft, spec.w, atol=1e-5 * float(spec.scale.max()))
    # regulariser off for the first 20 %, then beta from 20 down to 2
    assert beta_schedule(199, 1000, 0.2, 20.0, 2.0) is None
    assert beta_schedule(200, 1000, 0.2, 20.0, 2.0) == pytest.approx(20.0)
    assert beta_schedule(600, 1000, 0.2, 20.0, 2.0) == pytest.approx(11.0)
    assert beta_schedule(999, 1000, 0.2, 20.0, 2.0) == pytest.approx(2.0, abs=0.05)


@pytest.mark.parametrize("make", [conv_case, linear_case])
def test_hand_written_gradient_matches_autograd(make):
    """The V-gradient (reconstruction through both clamps, plus regulariser) equals autograd's."""
    case = make()
    spec = case.specs[0]
    # a grid 30 % too narrow, so that some floor(x) lie outside [qmin, qmax] and the clamp bites
    spec = RoundedWeight(spec.name, spec.w, spec.scale * 0.7, spec.zero, spec.qmin, spec.qmax)
    soft = _SoftWeight(spec)
    soft.v = soft.v + 3 * torch.randn(soft.v.shape, generator=torch.Generator().manual_seed(0))  # some h clamped
    x, y = case.inputs[:16], case.targets[:16]
    beta, reg_scale = 7.5, 1e-3

    weight = soft.refresh()
    rec = (case.forward({spec.name: weight}, x) - y).square().mean()
    (weight_grad,) = torch.autograd.grad(rec, [weight])
    manual, reg = soft.v_gradient(weight_grad, beta, reg_scale, True)

    v = soft.v.clone().requires_grad_(True)
    h = rectified_sigmoid(v)
    w_soft = (torch.clamp(soft.base + h, spec.qmin, spec.qmax) - soft.zero) * soft.scale
    reference_reg = (1 - (2 * h - 1).abs().pow(beta)).sum()
    loss = (case.forward({spec.name: w_soft}, x) - y).square().mean() + reg_scale * reference_reg
    (reference,) = torch.autograd.grad(loss, [v])

    clamped = float(((soft.base < spec.qmin) | (soft.base + 1 > spec.qmax)).float().mean())
    assert 0.001 < clamped < 0.5 and float((h == 0).float().mean() + (h == 1).float().mean()) > 0.05
    assert torch.allclose(weight, w_soft)
    assert reg == pytest.approx(float(reference_reg), rel=1e-5)
    assert torch.allclose(manual, reference, rtol=1e-4, atol=1e-6 * float(reference.abs().max()))
