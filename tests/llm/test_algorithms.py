"""The weight-quantization primitives against direct computations and slow references.

Small seeded matrices only: the whole file runs in a couple of seconds on 2 cores.
"""
from __future__ import annotations

import pytest
import torch

from quantwise.algorithms import (
    AwqResult,
    GroupGrid,
    GroupQuant,
    HessianAccumulator,
    apply_awq_scales,
    awq_clip_search,
    awq_search,
    fake_quantize,
    gptq,
    hqq,
    per_channel_int8_fake,
    per_token_absmax_int8_fake,
    qparams_minmax,
    quantize_with,
    rtn,
    smooth_scales,
    smoothed_output_mse,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _student_t(shape, seed: int, df: float = 3.0) -> torch.Tensor:
    """Heavy-tailed samples: normal / sqrt(chi2(df) / df), from a seeded generator."""
    g = _gen(seed)
    normal = torch.randn(shape, generator=g)
    chi2 = torch.randn((*shape, int(df)), generator=g).pow(2).sum(-1)
    return normal / (chi2 / df).sqrt()


def _expand(t: torch.Tensor, in_features: int) -> torch.Tensor:
    return t.repeat_interleave(in_features // t.shape[1], dim=1)


def _assert_valid(gq: GroupQuant, shape) -> None:
    assert isinstance(gq, GroupQuant)
    assert tuple(gq.qdata.shape) == tuple(shape)
    assert gq.qdata.dtype == gq.grid.code_dtype
    n_groups = gq.grid.groups(shape[1])
    assert gq.scale.shape == (shape[0], n_groups) and gq.scale.dtype == torch.float32
    assert gq.zero.shape == (shape[0], n_groups) and gq.zero.dtype == torch.float32
    assert int(gq.qdata.min()) >= gq.grid.qmin and int(gq.qdata.max()) <= gq.grid.qmax
    assert (gq.scale > 0).all() and torch.isfinite(gq.zero).all()
    assert torch.isfinite(gq.dequantize()).all()


# ----------------------------------------------------------------------------- grid


@pytest.mark.parametrize("bits,group_size", [(4, 32), (3, 16), (8, 64), (2, 8), (4, None)])
def test_rtn_codes_in_range_and_error_within_half_a_step(bits, group_size):
    w = torch.randn(16, 64, generator=_gen(0))
    grid = GroupGrid(bits, group_size)
    gq = rtn(w, grid)
    _assert_valid(gq, w.shape)
    assert gq.qdata.dtype == torch.uint8
    assert (gq.zero == gq.zero.round()).all()  # RTN zero-points are integers
    err = (w - gq.dequantize()).abs()
    assert (err <= _expand(gq.scale, 64) / 2 * (1 + 1e-5)).all()
    assert torch.equal(fake_quantize(w, grid), gq.dequantize())


def test_per_channel_grid_is_one_group_per_row():
    w = torch.randn(8, 48, generator=_gen(1))
    gq = rtn(w, GroupGrid(4, None))
    assert gq.scale.shape == (8, 1)
    lo, hi = w.amin(1).clamp(max=0), w.amax(1).clamp(min=0)
    torch.testing.assert_close(gq.scale[:, 0], (hi - lo) / 15)


def test_symmetric_grid_uses_signed_codes_and_restricted_range():
    w = torch.randn(8, 64, generator=_gen(2))
    grid = GroupGrid(4, 16, symmetric=True)
    gq = rtn(w, grid)
    _assert_valid(gq, w.shape)
    assert gq.qdata.dtype == torch.int8 and (gq.zero == 0).all()
    absmax = w.abs().reshape(8, 4, 16).amax(-1)
    torch.testing.assert_close(gq.scale, absmax / 7)
    assert int(gq.qdata.min()) >= -7 and int(gq.qdata.max()) <= 7
    assert ((w - gq.dequantize()).abs() <= _expand(gq.scale, 64) / 2 * (1 + 1e-5)).all()


def test_non_dividing_group_size_raises_a_readable_error():
    with pytest.raises(ValueError, match="group size 128 does not divide in_features 576; "
                       "use a group size that divides it, e.g. 64 or 32"):
        rtn(torch.zeros(4, 576), GroupGrid(4, 128))


@pytest.mark.parametrize("kwargs", [dict(bits=1, group_size=32), dict(bits=9, group_size=32),
                                    dict(bits=4, group_size=0), dict(bits=4, group_size=-8)])
def test_grid_validation(kwargs):
    with pytest.raises(ValueError):
        GroupGrid(**kwargs)


def test_all_zero_and_one_sided_groups_are_exact_where_they_should_be():
    w = torch.zeros(2, 32)
    w[1, 16:] = torch.linspace(0.5, 2.0, 16)  # all-positive group: range widened to contain 0
    gq = rtn(w, GroupGrid(4, 16))
    deq = gq.dequantize()
    assert torch.equal(deq[0], torch.zeros(32)) and torch.equal(deq[1, :16], torch.zeros(16))
    assert ((deq[1, 16:] - w[1, 16:]).abs() <= gq.scale[1, 1] / 2 + 1e-7).all()


def test_quantize_with_given_params_matches_rtn_and_dequantize_dtype():
    w = torch.randn(4, 32, generator=_gen(3), dtype=torch.float64)
    grid = GroupGrid(4, 8)
    scale, zero = qparams_minmax(w, grid)
    assert scale.dtype == torch.float32
    assert torch.equal(quantize_with(w, scale, zero, grid), rtn(w, grid).qdata)
    assert rtn(w, grid).dequantize(torch.bfloat16).dtype == torch.bfloat16
    assert fake_quantize(w, grid).dtype == torch.float64


def test_group_of_32_reproduces_weights_already_on_a_4bit_grid():
    """The "Q4_1 trap": re-quantizing weights that came from a 4-bit checkpoint must be lossless.

    Every block of 32 lies on 16 levels ``(q - z) * s`` (integer zero-point, both extreme
    codes used). A 32-wide grid aligned with the blocks recovers the codes exactly; a
    64-wide grid, which merges two blocks with different steps, cannot.
    """
    g = _gen(4)
    out, n, G = 6, 128, 32
    codes = torch.randint(0, 16, (out, n), generator=g)
    codes.view(out, n // G, G)[..., 0] = 0
    codes.view(out, n // G, G)[..., 1] = 15
    zero = torch.randint(1, 15, (out, n // G), generator=g).float()
    scale = torch.rand(out, n // G, generator=g) * 0.05 + 0.01
    w = (codes.float() - _expand(zero, n)) * _expand(scale, n)

    gq = rtn(w, GroupGrid(4, 32))
    assert torch.equal(gq.qdata.long(), codes)
    assert torch.equal(gq.zero, zero)
    torch.testing.assert_close(gq.dequantize(), w, rtol=0, atol=1e-6)
    assert (rtn(w, GroupGrid(4, 64)).dequantize() - w).abs().max() > 1e-3


# ----------------------------------------------------------------------------- HQQ


def test_hqq_beats_rtn_mean_absolute_error_on_heavy_tails_and_keeps_scales():
    """Metric: mean |w - w_hat|, the error HQQ's early stop watches (lp-norm with p < 1 inside)."""
    w = _student_t((32, 128), seed=5) * 0.02
    for bits in (2, 3, 4):
        grid = GroupGrid(bits, 32)
        ref = rtn(w, grid)
        out = hqq(w, grid)
        _assert_valid(out, w.shape)
        assert torch.equal(out.scale, ref.scale)
        mae_rtn = (w - ref.dequantize()).abs().mean()
        mae_hqq = (w - out.dequantize()).abs().mean()
        assert mae_hqq < mae_rtn
        # group by group, never worse than the RTN starting point
        per_group = lambda gq: (w - gq.dequantize()).abs().reshape(32, -1, 32).mean(-1)  # noqa: E731
        assert (per_group(out) <= per_group(ref) + 1e-7).all()


def test_hqq_zero_iterations_is_rtn_and_symmetric_is_rejected():
    w = torch.randn(8, 64, generator=_gen(6))
    grid = GroupGrid(4, 16)
    out, ref = hqq(w, grid, iters=0), rtn(w, grid)
    assert torch.equal(out.qdata, ref.qdata) and torch.equal(out.zero, ref.zero)
    with pytest.raises(ValueError, match="asymmetric"):
        hqq(w, GroupGrid(4, 16, symmetric=True))


# ----------------------------------------------------------------------------- GPTQ


def _hessian(x: torch.Tensor) -> torch.Tensor:
    return 2.0 / x.shape[0] * x.T @ x


def _slow_gptq(w: torch.Tensor, H: torch.Tensor, bits: int, group: int, damp: float):
    """Column-by-column Optimal Brain Surgeon with an explicit inverse Hessian (no Cholesky, no blocks).

    Group parameters: min/max (range widened to contain 0) of the current, compensated
    weights of the group, taken when its first column is reached.
    """
    qmax = 2**bits - 1
    W = w.double().clone()
    H = H.double().clone()
    n = W.shape[1]
    for i in range(n):
        if H[i, i] == 0:
            H[i, i] = 1.0
            W[:, i] = 0.0
    H = H + damp * H.diagonal().mean() * torch.eye(n, dtype=torch.float64)
    Hinv = torch.linalg.inv(H)
    codes = torch.zeros(W.shape, dtype=torch.long)
    deq = torch.zeros_like(W)
    for j in range(n):
        if j % group == 0:
            lo = W[:, j : j + group].min(1).values.clamp(max=0)
            hi = W[:, j : j + group].max(1).values.clamp(min=0)
            scale = ((hi - lo) / qmax).float()
            zero = torch.round(-lo / scale.double()).clamp(0, qmax).float()
        q = torch.round(W[:, j] / scale.double() + zero.double()).clamp(0, qmax)
        codes[:, j] = q.long()
        deq[:, j] = ((q.float() - zero) * scale).double()
        err = (W[:, j] - deq[:, j]) / Hinv[j, j]
        W[:, j:] -= err[:, None] * Hinv[j, j:][None, :]
        Hinv = Hinv - Hinv[:, j : j + 1] @ Hinv[j : j + 1, :] / Hinv[j, j]  # eliminate column j
    return codes, deq


def test_gptq_matches_a_slow_reference_for_any_block_size():
    g = _gen(7)
    x = torch.randn(64, 32, generator=g, dtype=torch.float64) @ torch.randn(32, 32, generator=g, dtype=torch.float64)
    x[:, 5] = 0.0  # a dead input
    w = torch.randn(8, 32, generator=g, dtype=torch.float64)
    H = _hessian(x)
    codes, deq = _slow_gptq(w, H, bits=3, group=8, damp=0.01)
    assert (deq[:, 5] == 0).all()
    for block_size in (3, 8, 12, 32):
        out = gptq(w, H, GroupGrid(3, 8), damp=0.01, block_size=block_size)
        _assert_valid(out, w.shape)
        assert torch.equal(out.qdata.long(), codes), block_size
        torch.testing.assert_close(out.dequantize(torch.float64), deq, rtol=0, atol=1e-6)


def _correlated(seed: int):
    g = _gen(seed)
    z = torch.randn(256, 64, generator=g) * torch.logspace(0, -2, 64)
    x = z @ torch.randn(64, 64, generator=g)
    w = torch.randn(32, 64, generator=g)
    return x, w


@pytest.mark.parametrize("grid", [GroupGrid(4, 16), GroupGrid(3, 32), GroupGrid(4, None), GroupGrid(4, 16, True)])
def test_gptq_output_error_is_clearly_below_rtn_on_correlated_inputs(grid):
    x, w = _correlated(8)
    acc = HessianAccumulator(64)
    acc.add(x)
    y = x @ w.T
    err_rtn = (y - x @ rtn(w, grid).dequantize().T).norm()
    for kwargs in (dict(), dict(static_groups=True), dict(act_order=True)):
        out = gptq(w, acc.hessian(), grid, **kwargs)
        _assert_valid(out, w.shape)
        assert (y - x @ out.dequantize().T).norm() < 0.8 * err_rtn, kwargs


def test_gptq_on_hqq_group_parameters_keeps_them_and_beats_both():
    x, w = _correlated(10)
    acc = HessianAccumulator(64)
    acc.add(x)
    grid = GroupGrid(4, 16)
    init = hqq(w, grid)
    out = gptq(w, acc.hessian(), grid, act_order=True, qparams=(init.scale, init.zero))
    _assert_valid(out, w.shape)
    assert torch.equal(out.scale, init.scale) and torch.equal(out.zero, init.zero)
    y = x @ w.T
    error = lambda q: (y - x @ q.dequantize().T).norm()  # noqa: E731
    assert error(out) < 0.8 * error(init)
    with pytest.raises(ValueError, match="qparams must be"):
        gptq(w, acc.hessian(), grid, qparams=(init.scale[:, :2], init.zero))


def test_gptq_act_order_keeps_the_original_column_groups():
    x, w = _correlated(9)
    H = _hessian(x)
    grid = GroupGrid(4, 16)
    out = gptq(w, H, grid, act_order=True)
    _assert_valid(out, w.shape)
    # static groups: the parameters are min/max of the original groups, in the original order
    scale, zero = qparams_minmax(w, grid)
    assert torch.equal(out.scale, scale) and torch.equal(out.zero, zero)
    # and the codes are those of a quantization with the same parameters (the GroupQuant is consistent)
    torch.testing.assert_close(out.dequantize(), (out.qdata.float() - _expand(zero, 64)) * _expand(scale, 64))


def test_gptq_is_pure_and_reports_a_failed_cholesky():
    x, w = _correlated(10)
    H = _hessian(x)
    w0, H0 = w.clone(), H.clone()
    gptq(w, H, GroupGrid(4, 16), act_order=True)
    assert torch.equal(w, w0) and torch.equal(H, H0)
    with pytest.raises(ValueError, match="larger damp"):
        gptq(w, -torch.eye(64), GroupGrid(4, 16))


def test_hessian_accumulator_is_two_over_n_xtx():
    g = _gen(11)
    a = torch.randn(3, 5, 16, generator=g)
    b = torch.randn(7, 16, generator=g)
    acc = HessianAccumulator(16)
    acc.add(a)
    acc.add(b)
    x = torch.cat([a.reshape(-1, 16), b])
    assert acc.n_samples == 22
    torch.testing.assert_close(acc.hessian(), 2.0 / 22 * x.T @ x, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError):
        acc.add(torch.zeros(4, 15))
    with pytest.raises(ValueError):
        HessianAccumulator(16).hessian()


def test_hessian_rescale_is_the_hessian_of_scaled_inputs():
    """AWQ before GPTQ divides the inputs by s: the collected Hessian must follow exactly."""
    g = _gen(12)
    x = torch.randn(40, 16, generator=g)
    s = torch.rand(16, generator=g) + 0.5
    acc, direct = HessianAccumulator(16), HessianAccumulator(16)
    acc.add(x)
    acc.rescale(1.0 / s)
    direct.add(x / s)
    torch.testing.assert_close(acc.hessian(), direct.hessian(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError):
        acc.rescale(torch.ones(15))


# ----------------------------------------------------------------------------- AWQ


def _outlier_inputs(seed: int, channels=(3, 10, 50), factor: float = 30.0):
    g = _gen(seed)
    x = torch.randn(256, 64, generator=g)
    x[:, list(channels)] *= factor
    weights = [torch.randn(32, 64, generator=g), torch.randn(16, 64, generator=g)]
    return x, weights


def test_awq_beats_rtn_when_a_few_channels_are_large():
    x, weights = _outlier_inputs(12)
    before = [w.clone() for w in weights]
    for grid in (GroupGrid(4, 32), GroupGrid(3, 32), GroupGrid(4, None)):
        res = awq_search(x, weights, grid)
        assert isinstance(res, AwqResult) and res.scales.shape == (64,)
        assert res.loss <= res.loss_rtn
        assert res.loss < 0.9 * res.loss_rtn and res.ratio > 0
        # the reported loss is the loss of the reported scales
        y = torch.cat([x @ w.T for w in weights], 1)
        yq = torch.cat([x @ (fake_quantize(w * res.scales, grid) / res.scales).T for w in weights], 1)
        assert (y - yq).pow(2).mean().item() == pytest.approx(res.loss, rel=1e-5)
    assert all(torch.equal(w, w0) for w, w0 in zip(weights, before))


def test_awq_ratio_zero_is_rtn_and_loss_never_exceeds_rtn():
    x, weights = _outlier_inputs(13)
    grid = GroupGrid(4, 32)
    res = awq_search(x, weights, grid, n_grid=1)
    assert res.ratio == 0.0 and torch.equal(res.scales, torch.ones(64))
    y = torch.cat([x @ w.T for w in weights], 1)
    y_rtn = torch.cat([x @ fake_quantize(w, grid).T for w in weights], 1)
    assert res.loss == res.loss_rtn == pytest.approx((y - y_rtn).pow(2).mean().item(), rel=1e-6)
    # plain Gaussian inputs: whatever the search finds, it is never worse than RTN
    g = _gen(14)
    res = awq_search(torch.randn(128, 64, generator=g), [torch.randn(8, 64, generator=g)], grid, n_grid=5)
    assert res.loss <= res.loss_rtn


def test_awq_with_a_custom_block_forward():
    x, (gate, up) = _outlier_inputs(15)
    up = up.repeat(2, 1)  # same out_features as gate

    def mlp(inp, ws):
        return torch.nn.functional.silu(inp @ ws[0].T) * (inp @ ws[1].T)

    res = awq_search(x, [gate, up], GroupGrid(4, 32), forward=mlp)
    assert res.loss <= res.loss_rtn and res.loss < res.loss_rtn


def test_awq_scales_fold_exactly_in_float():
    x, weights = _outlier_inputs(16)
    s = awq_search(x, weights, GroupGrid(4, 32), n_grid=5).scales
    scaled = apply_awq_scales(weights, s)
    for w, ws in zip(weights, scaled):
        torch.testing.assert_close((x / s) @ ws.T, x @ w.T, rtol=1e-4, atol=1e-3)
        assert ws is not w


def test_awq_clip_search_lowers_the_output_error_on_heavy_tailed_weights():
    w = _student_t((32, 64), seed=17)
    x = torch.randn(256, 64, generator=_gen(18))
    grid = GroupGrid(3, 32)
    w0 = w.clone()
    clipped = awq_clip_search(x, w, grid)
    assert torch.equal(w, w0) and clipped.shape == w.shape
    assert (clipped.abs() <= w.abs()).all()
    assert 0 < (clipped != w).float().mean() < 0.2  # only the tails move
    y = x @ w.T
    err = lambda v: (y - x @ fake_quantize(v, grid).T).pow(2).mean()  # noqa: E731
    assert err(clipped) < err(w)
    # no shrink allowed (one candidate, the full range): nothing changes
    assert torch.equal(awq_clip_search(x, w, grid, n_grid=1, max_shrink=1.0), w)
    # rows are independent: the batch size only bounds memory
    assert torch.equal(awq_clip_search(x, w, grid, row_batch=5), awq_clip_search(x, w, grid, row_batch=1000))


# ----------------------------------------------------------------------------- SmoothQuant


def _smooth_case(seed: int):
    g = _gen(seed)
    x = torch.randn(128, 64, generator=g)
    x[:, [3, 17, 40]] *= 50
    w = torch.randn(32, 64, generator=g) * 0.1
    return x, w


def test_smoothing_folds_exactly_in_float():
    x, w = _smooth_case(19)
    s = smooth_scales(x.abs().amax(0), [w], 0.5)
    torch.testing.assert_close((x / s) @ (w * s).T, x @ w.T, rtol=1e-4, atol=1e-4)


def test_smoothing_reduces_w8a8_error_with_outlier_channels():
    x, w = _smooth_case(20)
    y = x @ w.T
    s = smooth_scales(x.abs().amax(0), [w], 0.5)
    err_plain = (per_token_absmax_int8_fake(x) @ per_channel_int8_fake(w).T - y).pow(2).mean()
    err_smooth = (per_token_absmax_int8_fake(x / s) @ per_channel_int8_fake(w * s).T - y).pow(2).mean()
    assert err_smooth < 0.5 * err_plain


def test_smoothed_output_mse_is_the_direct_error_computed_in_chunks():
    x, w = _smooth_case(22)
    w2 = torch.randn(8, 64, generator=_gen(23))
    alphas = (0.0, 0.5, 0.8)
    direct = []
    for alpha in alphas:
        s = smooth_scales(x.abs().amax(0), [w, w2], alpha)
        xq = per_token_absmax_int8_fake(x / s)
        out = torch.cat([xq @ per_channel_int8_fake(v * s).T for v in (w, w2)], dim=1)
        direct.append(float((out - torch.cat([x @ w.T, x @ w2.T], dim=1)).pow(2).mean()))
    for chunk in (7, 128, 1000):  # uneven, exact and larger than the token count
        assert smoothed_output_mse(x, [w, w2], x.abs().amax(0), alphas, chunk=chunk) == pytest.approx(direct, rel=1e-5)
    assert min(direct) < direct[0]  # with outlier channels, some migration beats none


def test_smooth_scales_formula_alpha_limits_and_degenerate_channels():
    g = _gen(21)
    a = torch.rand(16, generator=g) + 0.5
    w1, w2 = torch.randn(4, 16, generator=g), torch.randn(6, 16, generator=g)
    w_max = torch.maximum(w1.abs().amax(0), w2.abs().amax(0))
    torch.testing.assert_close(smooth_scales(a, [w1, w2], 0.5), a.sqrt() / w_max.sqrt())
    torch.testing.assert_close(smooth_scales(a, [w1, w2], 0.0), 1.0 / w_max)  # weights only
    torch.testing.assert_close(smooth_scales(a, [w1, w2], 1.0), a)  # activations only
    a[2] = 0.0
    w1[:, 7] = 0.0
    w2[:, 7] = 0.0
    s = smooth_scales(a, [w1, w2], 0.5)
    assert s[2] == 1.0 and s[7] == 1.0 and (s >= 1e-5).all()
    with pytest.raises(ValueError):
        smooth_scales(a, [w1], 1.5)


def test_int8_fake_quantizers_are_symmetric_absmax():
    x = torch.randn(2, 5, 64, generator=_gen(22))
    fx = per_token_absmax_int8_fake(x)
    assert fx.shape == x.shape
    step = x.abs().amax(-1, keepdim=True) / 127
    assert ((fx - x).abs() <= step / 2 + 1e-7).all()
    assert torch.allclose(fx.abs().amax(-1), x.abs().amax(-1))
    w = torch.randn(8, 64, generator=_gen(23))
    fw = per_channel_int8_fake(w)
    assert ((fw - w).abs() <= w.abs().amax(1, keepdim=True) / 254 + 1e-7).all()
