"""The shared pieces of learned rounding: grid spec, RTN codes, reconstruction objective, input checks."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from rounding_cases import block_case, conv_case, linear_case, per_row_spec

from quantwise.algorithms.grid import GroupGrid, qparams_minmax, quantize_with
from quantwise.rounding import (
    Reconstruction,
    RoundedWeight,
    adaround,
    float_targets,
    module_forward,
    reconstruction_mse,
    rtn_codes,
    signround,
)


def _random_codes(spec: RoundedWeight, seed: int) -> torch.Tensor:
    """Floor or floor+1 at random: codes that are neither RTN's nor anything learned."""
    gen = torch.Generator().manual_seed(seed)
    up = torch.rand(spec.w.shape, generator=gen) < 0.5
    return torch.clamp(torch.floor(spec.real_codes()) + up, spec.qmin, spec.qmax)


def test_rtn_codes_match_the_project_grid():
    w = torch.randn(32, 64, generator=torch.Generator().manual_seed(0))
    for grid in (GroupGrid(4, None), GroupGrid(8, None, symmetric=True), GroupGrid(3, 16)):
        scale, zero = qparams_minmax(w, grid)
        expected = quantize_with(w, scale, zero, grid).to(torch.float32)
        n_groups = scale.shape[1]
        expand = lambda t: t.repeat_interleave(64 // n_groups, dim=1)  # noqa: E731
        spec = RoundedWeight("w", w, expand(scale), expand(zero), grid.qmin, grid.qmax)
        codes = rtn_codes(spec)
        assert codes.dtype == torch.float32
        assert torch.equal(codes, expected)


def test_linear_objective_matches_a_float64_loop():
    case = linear_case(out_features=16, in_features=32, n=40)
    spec = case.specs[0]
    codes = _random_codes(spec, 1)
    w_hat = spec.dequantize(codes).double()
    x, y = case.inputs.double(), case.targets.double()
    total = 0.0
    for n in range(len(x)):
        for r in range(w_hat.shape[0]):
            out = sum(float(x[n, k]) * float(w_hat[r, k]) for k in range(w_hat.shape[1]))
            total += (out - float(y[n, r])) ** 2
    slow = total / (len(x) * w_hat.shape[0])
    for batch_size in (1, 7, 64):
        fast = reconstruction_mse(case.forward, {"fc": spec.dequantize(codes)}, case.inputs, case.targets, batch_size)
        assert fast == pytest.approx(slow, rel=1e-5)  # float32 products, float64 sums


def test_conv_and_block_objectives_match_per_sample_float64():
    conv = conv_case(n=12)
    spec = conv.specs[0]
    w_hat = spec.dequantize(_random_codes(spec, 2))
    errs = [
        (F.conv2d(conv.inputs[n : n + 1].double(), w_hat.double(), padding=1)[0] - conv.targets[n].double()).square()
        for n in range(len(conv.inputs))
    ]
    slow = float(torch.stack(errs).mean())
    fast = reconstruction_mse(conv.forward, {"conv": w_hat}, conv.inputs, conv.targets, 5)
    assert fast == pytest.approx(slow, rel=1e-5)

    block = block_case(n=24)
    weights = {s.name: s.dequantize(_random_codes(s, 3)) for s in block.specs}
    b1 = block.parts["b1"].double()
    total = 0.0
    for n in range(len(block.inputs)):
        h = torch.relu(weights["fc1"].double() @ block.inputs[n].double() + b1)
        total += float((weights["fc2"].double() @ h - block.targets[n].double()).square().sum())
    slow = total / block.targets.numel()
    assert reconstruction_mse(block.forward, weights, block.inputs, block.targets, 5) == pytest.approx(slow, rel=1e-5)


def test_training_loss_is_the_mini_batch_mse():
    case = linear_case(n=50)
    spec = case.specs[0]
    problem = Reconstruction(case.specs, case.forward, case.inputs, case.targets, batch_size=16, seed=0)
    index = next(problem.batches())
    w_hat = spec.dequantize(rtn_codes(spec))
    expected = reconstruction_mse(case.forward, {"fc": w_hat}, case.inputs[index], case.targets[index])
    assert float(problem.batch_loss({"fc": w_hat}, index)) == pytest.approx(expected, rel=1e-5)
    # every sample is visited once per epoch
    batches = problem.batches()
    seen = torch.cat([next(batches) for _ in range(4)])
    assert sorted(seen.tolist()) == list(range(50))


def test_module_forward_runs_the_module_and_leaves_its_parameters_alone():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))
    forward = module_forward(net)
    x = torch.randn(64, 16)
    specs = [per_row_spec("0.weight", net[0].weight.detach()), per_row_spec("2.weight", net[2].weight.detach())]
    y = float_targets(forward, specs, x)
    with torch.no_grad():
        assert torch.allclose(y, net(x), atol=1e-6)
    result = adaround(specs, forward, x, y, iterations=20)
    assert set(result.codes) == {"0.weight", "2.weight"}
    assert all(p.grad is None for p in net.parameters())
    with pytest.raises(ValueError, match="not parameters of the Sequential"):
        forward({"1.weight": torch.zeros(32, 16)}, x)


def _linear_spec(**overrides) -> dict:
    w = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    args = dict(name="fc", w=w, scale=torch.full((8, 1), 0.1), zero=torch.full((8, 1), 8.0), qmin=0, qmax=15)
    args.update(overrides)
    return args


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(scale=torch.full((4, 1), 0.1)), r"scale has shape \(4, 1\), which does not broadcast"),
        (dict(zero=torch.zeros(3)), r"zero has shape \(3,\), which does not broadcast"),
        (dict(qmin=15, qmax=15), "qmin must be below qmax"),
        (dict(qmin=0, qmax=2.5), "qmax must be an integer"),
        (dict(scale=torch.zeros(8, 1)), "scale must be positive"),
        (dict(w=torch.full((8, 4), float("nan"))), "NaN"),
        (dict(w=torch.zeros(0, 4)), "empty"),
        (dict(name=""), "non-empty string"),
    ],
)
def test_bad_weight_specs_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        RoundedWeight(**_linear_spec(**overrides))


@pytest.mark.parametrize("algorithm", [adaround, signround])
def test_bad_calibration_and_forward_are_refused(algorithm):
    spec = RoundedWeight(**_linear_spec())
    forward = lambda p, x: x @ p["fc"].T  # noqa: E731
    x = torch.randn(10, 4)
    y = x @ spec.w.T

    def refuses(message, *args, **kwargs):
        with pytest.raises(ValueError, match=message):
            algorithm(*args, **{"iterations": 2, **kwargs})

    refuses("inputs are empty", [spec], forward, x[:0], y[:0])
    refuses("same number of samples, got 10 inputs and 9 targets", [spec], forward, x, y[:9])
    refuses(r"asked for weight 'fc2'", [spec], lambda p, x: x @ p["fc2"].T, x, y)
    refuses(r"does not use weight\(s\) \['fc'\]", [spec], lambda p, x: x @ torch.ones(8, 4).T, x, y)
    shape = r"returned \(10, 3\) for a mini-batch whose targets have shape \(10, 8\)"
    refuses(shape, [spec], lambda p, x: x[:, :3] + 0 * p["fc"].sum(), x, y, batch_size=10)
    refuses("specs is empty", [], forward, x, y)
    refuses(r"duplicates \['fc'\]", [spec, spec], forward, x, y)
    refuses("batch_size must be a positive integer", [spec], forward, x, y, batch_size=0)
    refuses("iterations must be a positive integer", [spec], forward, x, y, iterations=0)
    refuses("lr must be a positive number", [spec], forward, x, y, lr=float("nan"))
    refuses("progress_every must be a positive integer", [spec], forward, x, y, progress_every=True)
