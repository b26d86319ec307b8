"""SignRound per decoder block against round-to-nearest and layer-wise GPTQ, pinned on REAL blocks.

SmolLM2-135M's decoder blocks 5 and 29 with their float inputs captured on 8 calibration windows
x 256 tokens (spread over the calibration articles) and 8 held-out windows x 256 tokens of the
evaluation articles (``gains_cases.load_block_cases``). The measure is the block's output MSE on
the HELD-OUT windows, divided by round-to-nearest's (int4, groups of 64, min/max), 1 thread.

Block 5 is where layer-wise methods over-fit 2048 calibration tokens (``test_algorithm_gains``:
GPTQ doubles its down_proj's error held out); fitting the block's output as a whole, with
learned clipping, SignRound keeps most of its gain there. Measured with these settings (50
steps) and with the pipeline's 200 (in brackets):

| block | GPTQ | SignRound 50 steps (200 steps; 200 steps with 32 windows) |
|---|---|---|
| 5 | 0.819 | 0.488 (0.456; 0.407, GPTQ 0.595) |
| 29 | 0.365 | 0.307 (0.268; 0.236, GPTQ 0.304) |
| 0 | 0.892 | (0.598; 0.538, GPTQ 0.522) |

Runtime: ~10 s to load and capture, ~15 s of SignRound per block, 1 thread.
"""
from __future__ import annotations

import pytest
import torch
from gains_cases import GRID, load_block_cases

from quantwise.llm.block_rounding import round_block

STEPS = 50


@pytest.fixture(scope="module")
def blocks():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cases = load_block_cases((5, 29))
        results = {}
        for index, case in cases.items():
            learned = round_block(case.block, case.linears, case.kwargs, case.x_cal, case.y_cal, GRID, iterations=STEPS)
            rtn = case.output_mse(case.rtn_layers())
            results[index] = (case, learned, case.output_mse(learned.layers) / rtn, case.output_mse(case.gptq_layers()) / rtn)
        yield results
    finally:
        torch.set_num_threads(old)


@pytest.mark.slow
@pytest.mark.parametrize(("index", "below"), [(5, 0.60), (29, 0.40)])  # measured 0.488, 0.307
def test_signround_beats_nearest_rounding_on_heldout_windows(blocks, index, below):
    case, learned, ratio, _ = blocks[index]
    assert learned.fallback is None
    assert ratio < below, f"block {index}: SignRound's held-out output MSE is {ratio:.3f} x RTN's, expected below {below}"


@pytest.mark.slow
@pytest.mark.parametrize(("index", "factor"), [(5, 0.75), (29, 0.95)])  # measured 0.488 / 0.819 = 0.60, 0.307 / 0.365 = 0.84
def test_signround_beats_layerwise_gptq_on_heldout_windows(blocks, index, factor):
    _, _, ratio, gptq = blocks[index]
    assert ratio < factor * gptq, f"block {index}: SignRound {ratio:.3f} x RTN vs GPTQ {gptq:.3f} x RTN"


@pytest.mark.slow
def test_the_calibration_gain_reported_is_the_one_measured(blocks):
    case, learned, _, _ = blocks[5]
    rtn_cal = case.output_mse(case.rtn_layers(), held_out=False)
    assert learned.rtn_mse == pytest.approx(rtn_cal, rel=1e-3)
    assert learned.mse == pytest.approx(case.output_mse(learned.layers, held_out=False), rel=1e-3)
    assert learned.ratio < 0.3  # measured 0.184 on its own calibration windows vs 0.488 held out
