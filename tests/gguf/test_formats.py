"""llama.cpp's block formats: our bytes are the bytes llama.cpp's reference writes and reads."""
import numpy as np
import pytest
import torch
from gguf import quants

from quantwise.gguf import choose
from quantwise.gguf.formats import FORMATS, BlockParams, pack, unpack, weights

LEGACY = ("Q8_0", "Q4_0", "Q5_0", "Q4_1", "Q5_1")


def _weight(rows=24, cols=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g) * 0.05
    w[3] = 0.0  # an all-zero row: zero scales must not give NaN
    w[5, :32] = torch.linspace(-0.2, 0.3, 32)
    w[7] *= 40  # a row of large values
    return w


def _random_params(fmt, rows, cols, g):
    nb = cols // fmt.block
    d = (torch.rand(rows, nb, generator=g) * 0.01 - 0.004).to(torch.float16)
    m = sc = mn = None
    if fmt.affine:
        m = (torch.rand(rows, nb, generator=g) * 0.01 - (0 if fmt.super_block else 0.005)).to(torch.float16)
    if fmt.super_block:
        n_sub = fmt.block // fmt.sub
        if fmt.name == "Q6_K":
            sc = torch.randint(-128, 128, (rows, nb, n_sub), generator=g, dtype=torch.int16).to(torch.int8)
        else:
            sc = torch.randint(0, 64, (rows, nb, n_sub), generator=g, dtype=torch.int16).to(torch.uint8)
            mn = torch.randint(0, 64, (rows, nb, n_sub), generator=g, dtype=torch.int16).to(torch.uint8)
    return BlockParams(fmt, d, m, sc, mn)


@pytest.mark.parametrize("name", list(FORMATS))
def test_packed_bytes_dequantize_in_ggufs_reference_to_exactly_our_weights(name):
    fmt = FORMATS[name]
    g = torch.Generator().manual_seed(1)
    rows, cols = 6, 512
    params = _random_params(fmt, rows, cols, g)
    codes = torch.randint(fmt.qmin, fmt.qmax + 1, (rows, cols), generator=g, dtype=torch.int16).to(fmt.code_dtype)
    data = pack(codes, params)
    assert tuple(data.shape) == (rows, fmt.row_bytes(cols))
    theirs = quants.dequantize(data.numpy(), fmt.qtype)
    ours = weights(codes, params).numpy()
    assert theirs.shape == ours.shape
    assert np.array_equal(theirs.view(np.uint32), ours.view(np.uint32))  # bit for bit
    codes2, params2 = unpack(data, fmt, cols)
    assert torch.equal(codes2, codes)
    assert torch.equal(pack(codes2, params2), data)


@pytest.mark.parametrize("name", LEGACY)
def test_reference_rule_writes_the_bytes_llama_cpps_reference_quantizer_writes(name):
    fmt = FORMATS[name]
    w = _weight()
    codes, params = choose.reference(w, fmt)
    ours = pack(codes, params).numpy()
    theirs = quants.quantize(w.numpy(), fmt.qtype)
    assert np.array_equal(ours, theirs)


@pytest.mark.parametrize("name", list(FORMATS))
def test_searched_rule_has_lower_weighted_error_than_the_reference(name):
    fmt = FORMATS[name]
    w = _weight(rows=64, cols=512, seed=2)
    imp = torch.rand(512, generator=torch.Generator().manual_seed(3)) ** 4 * 10  # a few columns matter most
    ref = weights(*choose.reference(w, fmt))
    ours = weights(*choose.searched(w, fmt, imp))
    err_ref = float(((ref - w) ** 2 * imp).sum())
    err_ours = float(((ours - w) ** 2 * imp).sum())
    assert torch.isfinite(ours).all()
    assert err_ours < 0.97 * err_ref, (err_ours, err_ref)


@pytest.mark.parametrize("name", ["Q4_K", "Q5_K", "Q6_K"])
def test_k_quant_reference_rule_is_close_to_the_format_minimum(name):
    """Not bit-identical to llama.cpp's C code (summation order), but the same rule: error within
    the range of the unweighted RTN of its sub-blocks."""
    fmt = FORMATS[name]
    w = _weight(rows=32, cols=512, seed=4)
    codes, params = choose.reference(w, fmt)
    err = ((weights(codes, params) - w) ** 2).mean()
    step = w.abs().amax() / 2 ** fmt.bits
    assert float(err) < float(step) ** 2


def test_a_row_length_that_is_not_a_multiple_of_the_block_is_refused():
    with pytest.raises(ValueError, match="multiple of 256"):
        choose.reference(torch.zeros(2, 576), FORMATS["Q4_K"])
