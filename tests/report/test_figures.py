"""Report figures: the Pareto computation against hand-worked answers, and every figure is a
real, non-blank PNG of the expected size."""
from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image

from quantwise.report.figures import (
    DPI,
    Candidate,
    Distribution,
    front_2d,
    histogram_figure,
    pareto_figure,
    pareto_front,
    sensitivity_figure,
    sqnr_figure,
)


def _image(png: bytes) -> np.ndarray:
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(png))
    image.load()  # raises on a truncated or corrupt file
    pixels = np.asarray(image.convert("L"), dtype=np.float64)
    # not blank: a real plot has text, lines and fills, far more than a few grey levels
    assert pixels.std() > 10 and len(np.unique(pixels)) > 20
    return pixels


# Hand-worked: (size MB, latency ms, accuracy, higher is better).
#   a (1, 1, .90)  nothing is as small and as fast and more accurate   -> optimal
#   b (2, 2, .95)  the most accurate                                    -> optimal
#   c (2, 2, .90)  a is smaller, faster and as accurate                 -> dominated by a
#   d (.5, 3, .80) the smallest                                         -> optimal
#   e (1, 1, .90)  equal to a: equal points do not dominate each other  -> optimal
#   f (3, 3, .94)  b is smaller, faster and more accurate               -> dominated by b
HAND = [("a", 1, 1, 0.90), ("b", 2, 2, 0.95), ("c", 2, 2, 0.90), ("d", 0.5, 3, 0.80), ("e", 1, 1, 0.90), ("f", 3, 3, 0.94)]


def test_pareto_front_hand_worked():
    points = [Candidate(n, s, t, m) for n, s, t, m in HAND]
    assert [points[i].name for i in pareto_front(points)] == ["a", "b", "d", "e"]


def test_pareto_front_lower_metric_is_better():
    # like perplexity, lower is better. Same sizes and latencies, metric mirrored (1 - m):
    #   a (1, 1, .10) optimal; b (2, 2, .05) optimal (best metric); c (2, 2, .10) dominated by a;
    #   d (.5, 3, .20) optimal (smallest); e = a, optimal; f (3, 3, .06) dominated by b
    points = [Candidate(n, s, t, round(1 - m, 2), higher_is_better=False) for n, s, t, m in HAND]
    assert [points[i].name for i in pareto_front(points)] == ["a", "b", "d", "e"]
    # flipping the direction of the metric changes the answer: now the least accurate wins on it
    flipped = [Candidate(n, s, t, m, higher_is_better=False) for n, s, t, m in HAND]
    # d (.5, 3, .80) is best on metric and size -> optimal; a/e (1, 1, .90) fastest -> optimal;
    # b (2, 2, .95), c (2, 2, .90), f (3, 3, .94) are all beaten by a on every axis
    assert [flipped[i].name for i in pareto_front(flipped)] == ["a", "d", "e"]


def test_front_2d_sorted_by_x():
    xs = [3.0, 1.0, 2.0, 4.0, 2.0]
    ys = [0.9, 0.7, 0.8, 0.85, 0.75]
    # higher y better: (1, .7), (2, .8), (3, .9) form the staircase; (4, .85) and (2, .75) are beaten
    assert front_2d(xs, ys, higher_y_is_better=True) == [1, 2, 0]
    # lower y better: only (1, .7), fastest and lowest
    assert front_2d(xs, ys, higher_y_is_better=False) == [1]


def test_pareto_figure_is_a_png():
    points = [Candidate(n, s, t, m, chosen=(n == "b"), within_budget=(n != "d")) for n, s, t, m in HAND]
    pixels = _image(pareto_figure(points, "top1", "hand-made"))
    assert pixels.shape == (int(5.2 * DPI), 13 * DPI)
    # the chosen point is drawn in red: some strongly red pixels exist
    rgb = np.asarray(Image.open(io.BytesIO(pareto_figure(points, "top1"))).convert("RGB"), dtype=int)
    assert ((rgb[..., 0] > 180) & (rgb[..., 1] < 80) & (rgb[..., 2] < 80)).sum() > 50


def test_pareto_figure_refuses_mixed_directions():
    with pytest.raises(ValueError, match="agree"):
        pareto_figure([Candidate("a", 1, 1, 1.0), Candidate("b", 1, 1, 1.0, higher_is_better=False)], "m")
    with pytest.raises(ValueError, match="at least one"):
        pareto_figure([], "m")


def test_sensitivity_figure_grows_with_layers():
    rng = np.random.default_rng(0)
    names = [f"blocks.{i}.mlp.fc{i % 2}" for i in range(100)]
    tall = _image(sensitivity_figure(names, -np.abs(rng.normal(0, 0.01, 100)), np.abs(rng.normal(0, 0.01, 100)), "top1"))
    short = _image(sensitivity_figure(names[:5], [-0.01, -0.02, 0.0, float("nan"), -0.001], None, "top1"))
    assert tall.shape[0] >= int(0.22 * 100 * DPI)  # room for 100 names
    assert short.shape[0] < tall.shape[0] / 4
    with pytest.raises(ValueError, match="4 values for 5 layers"):
        sensitivity_figure(names[:5], [0.0] * 4, None, "top1")


def test_sqnr_figure_with_exact_and_missing_layers():
    names = ["conv1", "conv2", "fc1", "fc2"]
    _image(sqnr_figure(names, [35.0, math.inf, 28.0, float("nan")], [35.0, 30.0, 22.0, 18.0], "SQNR"))
    with pytest.raises(ValueError, match="no layers"):
        sqnr_figure([], [], [])


def test_clipped_fraction_is_exact():
    values = np.arange(100, dtype=np.float64)  # 0..99
    d = Distribution("weights", values, 10.0, 89.0)
    assert d.clipped_fraction() == pytest.approx(0.20)  # 0..9 and 90..99
    assert Distribution("weights", values).clipped_fraction() is None


def test_histogram_figure_with_outliers():
    rng = np.random.default_rng(0)
    weights = Distribution("weights", rng.normal(0, 0.05, 5000), -0.12, 0.12)
    acts = Distribution("input activations", np.abs(rng.standard_cauchy(5000)), 0.0, 6.0)  # heavy tail
    pixels = _image(histogram_figure("features.0", [weights, acts]))
    assert pixels.shape[1] == int(2 * 6.2 * DPI)
    _image(histogram_figure("fc", [Distribution("weights", rng.normal(0, 1, 100))]))  # no range: no lines
