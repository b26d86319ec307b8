"""The gain of each weight-quantization algorithm over round-to-nearest, pinned on REAL layers.

SmolLM2-135M's own Linear layers, their inputs captured from the float model on real text:
calibration inputs from 8 windows x 256 tokens of the calibration articles, held-out inputs
from 8 windows x 256 tokens of the (disjoint) evaluation articles, both spread evenly over
the text (see ``gains_cases.py``). Every number is the layer's output MSE on the HELD-OUT
inputs divided by that of the baseline on the same inputs:

- int4, asymmetric, groups of 64 (``GRID``; not 32, which would reproduce SmolLM2's stored
  Q4_1 blocks almost exactly): HQQ (no data), GPTQ, AWQ (scales + clip search), AWQ then
  GPTQ, AdaRound and SignRound (on the RTN grid) against RTN;
- GGUF Q4_0 (blocks of 32, symmetric ``d * (q - 8)``, a different grid from the stored
  Q4_1 one): ``searched`` and ``gptq`` against ``reference`` (llama.cpp's own quantizer).

Measured with 1 thread; "measured" is window selection 0 (the one used here), the range
is over three disjoint window selections (``load_cases(selection=0, 1, 2)``). Each bound
leaves slack above the worst selection.

Not every algorithm beats RTN everywhere, and the table says so instead of hiding it:

- HQQ minimises the WEIGHT error (an lp norm), not the output error. On block 0's o_proj the
  inputs are dominated by their mean (norm of the per-channel mean 0.58 vs 0.35 for the
  per-channel standard deviations), so the output error is mostly the input-weighted sum of
  each row's weight errors, which HQQ's float zero-points do not control: its weight MSE is
  34% below RTN's, its output MSE 10-20% ABOVE.
- On block 5's down_proj (1536 inputs) 2048 calibration tokens are too few for the methods
  that fit the full input covariance: GPTQ cuts RTN's error to ~0.25x on the calibration
  inputs and DOUBLES it on held-out ones (over-fitting; measured separately, GPTQ needs
  ~16k calibration tokens just to break even there, 0.97 at 24k). AWQ+GPTQ and GGUF gptq
  follow GPTQ; AdaRound and SignRound gain on calibration and lose a few percent held out.
  HQQ (no data), AWQ (one exponent) and GGUF ``searched`` (diagonal importance) keep their
  gains. The down_proj of blocks 0, 10, 15, 20 and 25 behave the same way to a lesser
  degree (GPTQ 1.06-1.78 with these 2048 tokens); blocks 2 and 29 do not.
- AWQ is not tested on o_proj: SmolLM2 uses grouped-query attention (v_proj has 192
  outputs, o_proj 576 inputs), so o_proj's input scales cannot be folded into v_proj and the
  pipeline does not scale o_proj. AWQ's scales are searched for the layer alone here (the
  pipeline searches q/k/v and gate/up jointly, and does not clip q/k).

Runtime: ~15 s to load the model and capture the inputs, ~40 s of algorithms (AdaRound
300 and SignRound 200 iterations per layer dominate), 1 thread.
"""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from gains_cases import LAYERS, gguf_ratio, heldout_ratio, learned_rounding, load_cases


@dataclass(frozen=True)
class Row:
    """Held-out MSE ratio of ``algorithm`` on ``layer`` must be below ``below`` (and above ``above``)."""

    algorithm: str
    layer: str
    below: float
    above: float | None = None  # set where the algorithm does NOT beat the baseline


Q, O, GATE, DOWN29, DOWN5 = LAYERS
assert LAYERS == ("0.self_attn.q_proj", "0.self_attn.o_proj", "20.mlp.gate_proj", "29.mlp.down_proj", "5.mlp.down_proj")

# Ratio to RTN (int4 g64) on held-out inputs. "measured X (A-B)": X with the windows used
# here, A-B over three disjoint window selections.
INT4_ROWS = [
    # HQQ: calibration-free; ~0.63 wherever the output error follows the weight error
    Row("hqq", Q, below=0.80),  # measured 0.706 (0.694-0.706)
    Row("hqq", O, below=1.40, above=1.03),  # measured 1.094 (1.094-1.199): HQQ is WORSE than RTN here (see above)
    Row("hqq", GATE, below=0.75),  # measured 0.635 (0.633-0.636)
    Row("hqq", DOWN29, below=0.75),  # measured 0.620 (0.620-0.639)
    Row("hqq", DOWN5, below=0.75),  # measured 0.629 (0.629-0.635)
    # GPTQ, damp 0.01, act_order (static groups)
    Row("gptq", Q, below=0.35),  # measured 0.249 (0.249-0.271)
    Row("gptq", O, below=0.15),  # measured 0.085 (0.057-0.085)
    Row("gptq", GATE, below=0.72),  # measured 0.608 (0.537-0.608)
    Row("gptq", DOWN29, below=0.42),  # measured 0.309 (0.255-0.320)
    Row("gptq", DOWN5, below=3.0, above=1.5),  # measured 2.059 (1.986-2.139): over-fits, WORSE than RTN
    # AWQ: scale search, clip search on the scaled weight, RTN of the result; input x / s
    Row("awq", Q, below=0.78),  # measured 0.637 (0.637-0.667)
    Row("awq", GATE, below=0.80),  # measured 0.700 (0.668-0.700)
    Row("awq", DOWN29, below=0.40),  # measured 0.298 (0.261-0.298)
    Row("awq", DOWN5, below=1.0),  # measured 0.941 (0.927-0.946): beats RTN, barely
    # AWQ scales (no clipping), then GPTQ on W * s with the Hessian of x / s, as the pipeline does
    Row("awq+gptq", Q, below=0.40),  # measured 0.263 (0.263-0.313)
    Row("awq+gptq", GATE, below=0.76),  # measured 0.646 (0.546-0.646)
    Row("awq+gptq", DOWN29, below=0.33),  # measured 0.246 (0.196-0.246)
    Row("awq+gptq", DOWN5, below=3.0, above=1.5),  # measured 2.097 (2.008-2.162): over-fits like GPTQ
    # AdaRound, 300 iterations, mini-batches of 256 tokens, on the RTN grid
    Row("adaround", Q, below=0.62),  # measured 0.508 (0.507-0.519)
    Row("adaround", O, below=0.62),  # measured 0.490 (0.484-0.509)
    Row("adaround", GATE, below=0.84),  # measured 0.727 (0.697-0.727)
    Row("adaround", DOWN29, below=0.68),  # measured 0.548 (0.498-0.571)
    Row("adaround", DOWN5, below=1.25, above=0.95),  # measured 1.046 (1.020-1.057): no gain held out
    # SignRound, 200 iterations, mini-batches of 256 tokens, on the RTN grid
    Row("signround", Q, below=0.74),  # measured 0.625 (0.610-0.634)
    Row("signround", O, below=0.56),  # measured 0.448 (0.416-0.448)
    Row("signround", GATE, below=1.0),  # measured 0.842 (0.833-0.910): a small gain
    Row("signround", DOWN29, below=0.82),  # measured 0.692 (0.671-0.704)
    Row("signround", DOWN5, below=1.25, above=0.95),  # measured 1.054 (1.039-1.054): no gain held out
]

# Ratio to llama.cpp's reference Q4_0 quantizer, on held-out inputs.
GGUF_ROWS = [
    # searched: scales searched under the diagonal of the Hessian (importance)
    Row("searched", Q, below=0.60),  # measured 0.497 (0.497-0.502)
    Row("searched", O, below=0.56),  # measured 0.461 (0.430-0.461)
    Row("searched", GATE, below=0.74),  # measured 0.630 (0.621-0.630)
    Row("searched", DOWN29, below=0.56),  # measured 0.461 (0.453-0.464)
    Row("searched", DOWN5, below=0.90),  # measured 0.802 (0.795-0.806)
    # gptq: the searched grid, then GPTQ codes on it (act_order)
    Row("gptq", Q, below=0.35),  # measured 0.244 (0.244-0.267)
    Row("gptq", O, below=0.12),  # measured 0.065 (0.045-0.065)
    Row("gptq", GATE, below=0.63),  # measured 0.523 (0.471-0.523)
    Row("gptq", DOWN29, below=0.26),  # measured 0.190 (0.162-0.195)
    Row("gptq", DOWN5, below=2.8, above=1.4),  # measured 1.840 (1.778-1.928): over-fits, WORSE than reference
]


@pytest.fixture(scope="module")
def cases():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield load_cases(selection=0)
    finally:
        torch.set_num_threads(old)


def _check(ratio: float, row: Row, baseline: str) -> None:
    what = f"{row.algorithm} on {row.layer}: held-out output MSE {ratio:.3f} x {baseline}'s"
    assert ratio < row.below, f"{what}, expected below {row.below}"
    if row.above is not None:
        assert ratio > row.above, f"{what}, expected above {row.above} (a documented loss: update the table if it improved)"


def _params(rows: list[Row]) -> list:
    return [pytest.param(r, id=f"{r.algorithm}-{r.layer}") for r in rows]


@pytest.mark.slow
@pytest.mark.parametrize("row", _params(INT4_ROWS))
def test_int4_g64_algorithm_vs_rtn_on_heldout_inputs(cases, row):
    _check(heldout_ratio(cases[row.layer], row.algorithm), row, "RTN")


@pytest.mark.slow
@pytest.mark.parametrize("row", _params(GGUF_ROWS))
def test_gguf_q4_0_algorithm_vs_reference_on_heldout_inputs(cases, row):
    _check(gguf_ratio(cases[row.layer], row.algorithm, "Q4_0"), row, "reference")


@pytest.mark.slow
def test_block5_down_proj_losses_are_overfitting_not_bugs(cases):
    """Where the data-driven algorithms lose held out, they win big on their own calibration inputs."""
    case = cases[DOWN5]
    # GPTQ: measured 0.28 on its calibration inputs (0.23-0.28) vs 2.059 held out
    assert heldout_ratio(case, "gptq", x=case.x_cal) < 0.4 < 1.5 < heldout_ratio(case, "gptq")
    # AdaRound / SignRound: measured 0.57 / 0.66 on calibration (0.53-0.57 / 0.59-0.66) vs ~1.05 held out
    assert learned_rounding(case, "adaround").mse_ratio < 0.7
    assert learned_rounding(case, "signround").mse_ratio < 0.8
