"""Report figures: plain numbers in, PNG bytes out (matplotlib, Agg canvas, no global state).

Every function takes simple typed values (names, floats, the small dataclasses below), so any
result (compare rows, per-layer debugging, sensitivity, a mixed-precision search) can be
drawn by mapping it onto them. Nothing here measures anything.
"""
from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

DPI = 100
LABEL_ALL_UP_TO = 12  # more candidates than this: label only the Pareto-optimal and chosen ones
QUANTIZED, FLOAT, CHOSEN = "#d62728", "#1f77b4", "#d62728"


@dataclass(frozen=True)
class Candidate:
    """One point of a size / latency / metric trade-off (a compare row, a searched configuration)."""

    name: str
    size_mb: float
    latency_ms: float
    metric: float
    higher_is_better: bool = True
    chosen: bool = False
    within_budget: bool | None = None  # None: no budget was set for this point


@dataclass(frozen=True)
class Distribution:
    """Values seen by one quantizer and the range its observer chose (None: no clipping range)."""

    label: str  # e.g. "weights" or "input activations"
    values: np.ndarray | Sequence[float]
    low: float | None = None
    high: float | None = None

    def clipped_fraction(self) -> float | None:
        if self.low is None or self.high is None:
            return None
        v = np.asarray(self.values, dtype=np.float64)
        return float(np.mean((v < self.low) | (v > self.high))) if v.size else 0.0


def pareto_front(points: Sequence[Candidate]) -> list[int]:
    """Indices of the points no other point dominates on (size, latency, metric).

    ``a`` dominates ``b`` when it is no worse on all three (smaller size, lower latency,
    better metric) and strictly better on at least one. Equal points do not dominate each other.
    """
    return _front([_objectives(p) for p in points])


def front_2d(xs: Sequence[float], ys: Sequence[float], higher_y_is_better: bool) -> list[int]:
    """Indices of the points optimal on (lower x, better y), sorted by x."""
    keys = [(x, -y if higher_y_is_better else y) for x, y in zip(xs, ys)]
    return sorted(_front(keys), key=lambda i: (xs[i], keys[i][1]))


def _objectives(p: Candidate) -> tuple[float, float, float]:
    return (p.size_mb, p.latency_ms, -p.metric if p.higher_is_better else p.metric)


def _front(keys: Sequence[Sequence[float]]) -> list[int]:
    def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
        return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))

    return [i for i, k in enumerate(keys) if not any(dominates(o, k) for j, o in enumerate(keys) if j != i)]


def pareto_figure(points: Sequence[Candidate], metric_name: str, title: str = "", latency_label: str = "latency (ms)") -> bytes:
    """Two panels: latency vs metric (colour = size) and size vs metric (colour = latency).

    Each panel joins its own two-objective front with a step line and rings the points optimal
    on all three objectives; the chosen point is a red star with its name; points outside the
    budget are crosses. Axes spanning more than 20x
    are logarithmic.
    """
    if not points:
        raise ValueError("pareto_figure needs at least one point")
    if len({p.higher_is_better for p in points}) > 1:
        raise ValueError("all points must agree on whether a higher metric is better")
    higher = points[0].higher_is_better
    optimal = set(pareto_front(points))
    fig = _figure((13, 5.2))
    left, right = fig.subplots(1, 2)
    size = [p.size_mb for p in points]
    latency = [p.latency_ms for p in points]
    _pareto_panel(left, points, latency, size, latency_label, "size (MB)", optimal, higher)
    _pareto_panel(right, points, size, latency, "size (MB)", latency_label, optimal, higher)
    arrow = "higher is better" if higher else "lower is better"
    for ax in (left, right):
        ax.set_ylabel(f"{metric_name} ({arrow})")
    left.set_title(f"{latency_label} vs {metric_name}")
    right.set_title("size vs " + metric_name)
    if title:
        fig.suptitle(title)
    return _png(fig)


def _pareto_panel(ax: Axes, points: Sequence[Candidate], xs: list[float], colour: list[float], xlabel: str, clabel: str, optimal: set[int], higher: bool) -> None:
    ys = [p.metric for p in points]
    front = front_2d(xs, ys, higher)
    fx, fy = [xs[i] for i in front], [ys[i] for i in front]
    ax.step(fx, fy, where="post", color="0.55", linestyle="--", linewidth=1.2, zorder=1)
    inside = [i for i, p in enumerate(points) if p.within_budget is not False]
    outside = [i for i, p in enumerate(points) if p.within_budget is False]
    vmin, vmax = min(colour), max(colour)
    common = dict(c=None, cmap="viridis", vmin=vmin, vmax=vmax if vmax > vmin else vmin + 1, zorder=3)
    scatter = None
    if inside:
        common["c"] = [colour[i] for i in inside]
        scatter = ax.scatter([xs[i] for i in inside], [ys[i] for i in inside], s=70, edgecolors="black", linewidths=0.6, **common)
    if outside:
        common["c"] = [colour[i] for i in outside]
        scatter = ax.scatter([xs[i] for i in outside], [ys[i] for i in outside], s=70, marker="X", linewidths=0.6, edgecolors="black", **common)
    ax.figure.colorbar(scatter, ax=ax, pad=0.01).set_label(clabel)
    ring = sorted(optimal)  # optimal on all three objectives, whichever two this panel shows
    ax.scatter([xs[i] for i in ring], [ys[i] for i in ring], s=190, facecolors="none", edgecolors="black", linewidths=1.1, zorder=2)
    chosen = [i for i, p in enumerate(points) if p.chosen]
    if chosen:
        ax.scatter([xs[i] for i in chosen], [ys[i] for i in chosen], s=320, marker="*", facecolors="none", edgecolors=CHOSEN, linewidths=1.8, zorder=4)
    if _wide(xs):
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.margins(x=0.15, y=0.15)
    ax.grid(True, alpha=0.3)
    label_all = len(points) <= LABEL_ALL_UP_TO
    labelled = [i for i, p in enumerate(points) if label_all or i in optimal or p.chosen]
    _place_labels(ax, xs, ys, labelled, points)
    handles = [Line2D([], [], color="0.55", linestyle="--", label="front of this panel's two axes")]
    handles.append(Line2D([], [], marker="o", linestyle="", markerfacecolor="0.8", markeredgecolor="black", label="within budget" if outside else "candidate"))
    if outside:
        handles.append(Line2D([], [], marker="X", linestyle="", markerfacecolor="0.8", markeredgecolor="black", label="outside budget"))
    handles.append(Line2D([], [], marker="o", markersize=13, linestyle="", markerfacecolor="none", markeredgecolor="black", label="Pareto-optimal on size, latency and metric"))
    if chosen:
        handles.append(Line2D([], [], marker="*", markersize=14, linestyle="", markerfacecolor="none", markeredgecolor=CHOSEN, label="chosen"))
    ax.legend(handles=handles, loc="best", fontsize=8)


def _place_labels(ax: Axes, xs: list[float], ys: list[float], which: list[int], points: Sequence[Candidate]) -> None:
    """Put each name next to its point where it overlaps no other name and no marker.

    Greedy over a few offsets in display space, chosen point first; the figure is drawn
    once so the axes have their final size and limits.
    """
    fig = ax.figure
    fig.canvas.draw()
    scale = fig.dpi / 72.0  # pixels per point
    px = ax.transData.transform(np.column_stack([xs, ys]))
    frame = ax.get_window_extent()
    markers = [(x - 6 * scale, y - 6 * scale, x + 6 * scale, y + 6 * scale) for x, y in px]
    taken: list[tuple[float, float, float, float]] = []
    offsets = [(7, 5), (7, -13), (-7, 5), (-7, -13), (7, 15), (-7, -23), (7, -23), (-7, 15)]
    for i in sorted(which, key=lambda i: not points[i].chosen):
        p = points[i]
        text = f"chosen: {p.name}" if p.chosen else p.name
        w, h = 0.62 * 8 * len(text) * scale, 10 * scale
        best = None
        for dx, dy in offsets:
            x0 = px[i][0] + dx * scale - (w if dx < 0 else 0)
            box = (x0, px[i][1] + dy * scale, x0 + w, px[i][1] + dy * scale + h)
            clashes = sum(_overlap(box, b) for b in taken + [m for j, m in enumerate(markers) if j != i])
            clashes += 2 * (box[0] < frame.x0 or box[2] > frame.x1 or box[1] < frame.y0 or box[3] > frame.y1)
            if best is None or clashes < best[0]:
                best = (clashes, dx, dy, box)
            if clashes == 0:
                break
        _, dx, dy, box = best
        taken.append(box)
        ax.annotate(text, (xs[i], ys[i]), xytext=(dx, dy), textcoords="offset points", fontsize=8, ha="right" if dx < 0 else "left",
                    fontweight="bold" if p.chosen else "normal", color=CHOSEN if p.chosen else "0.15", zorder=5)


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def sensitivity_figure(layers: Sequence[str], quantized_only: Sequence[float], float_only: Sequence[float] | None, metric_name: str,
                       higher_is_better: bool = True, title: str = "") -> bytes:
    """Per-layer metric change as horizontal bars, layers top to bottom in network order.

    ``quantized_only[i]``: change of the metric when only layer i is quantized (vs float).
    ``float_only[i]``: change when only layer i is kept float (vs everything quantized).
    NaN draws no bar.
    """
    n = len(layers)
    _same_length(layers, quantized_only=quantized_only, float_only=float_only)
    series = [("only this layer quantized (vs float)", quantized_only, QUANTIZED)]
    if float_only is not None:
        series.append(("only this layer kept float (vs all quantized)", float_only, FLOAT))
    better = "higher" if higher_is_better else "lower"
    fig, ax = _tall_figure(n, f"change in {metric_name} ({better} is better)", title)
    pos = np.arange(n)
    height = 0.8 / len(series)
    for k, (label, values, colour) in enumerate(series):
        offset = (k - (len(series) - 1) / 2) * height
        ax.barh(pos + offset, np.asarray(values, dtype=np.float64), height=height, color=colour, label=label)
    ax.axvline(0.0, color="black", linewidth=0.8)
    _layer_axis(ax, layers)
    fig.legend(loc="outside upper center", ncols=2, fontsize=8)
    return _png(fig)


def sqnr_figure(layers: Sequence[str], isolated_db: Sequence[float], propagated_db: Sequence[float], title: str = "") -> bytes:
    """Per-layer SQNR (dB), layers top to bottom in network order: each layer quantized alone
    with float inputs (isolated) and inside the quantized network (propagated). An infinite
    SQNR (exact output) is drawn at the right edge with a triangle; NaN is skipped."""
    n = len(layers)
    _same_length(layers, isolated_db=isolated_db, propagated_db=propagated_db)
    fig, ax = _tall_figure(n, "SQNR (dB, higher is better)", title)
    pos = np.arange(n)
    finite = [v for v in [*isolated_db, *propagated_db] if math.isfinite(v)]
    cap = (max(finite) if finite else 0.0) + 5.0
    inf_label = "exact output (SQNR = inf), drawn at the edge"
    for label, values, colour, marker in (("isolated (float inputs)", isolated_db, FLOAT, "o"), ("propagated (quantized network)", propagated_db, QUANTIZED, "s")):
        v = np.asarray(values, dtype=np.float64)
        shown = np.where(np.isposinf(v), cap, v)
        ax.plot(shown, pos, marker=marker, markersize=4, linewidth=1.2, color=colour, label=label)
        inf = np.isposinf(v)
        if inf.any():
            ax.scatter(shown[inf], pos[inf], marker=">", s=60, color=colour, zorder=4, label=inf_label)
            inf_label = "_nolegend_"
    _layer_axis(ax, layers)
    fig.legend(loc="outside upper center", ncols=2, fontsize=8)
    return _png(fig)


def histogram_figure(layer: str, distributions: Sequence[Distribution], bins: int = 100) -> bytes:
    """One panel per distribution (e.g. weights, activations): log-count histogram, the
    observer's clipping range as dashed lines, the clipped fraction in the legend."""
    if not distributions:
        raise ValueError("histogram_figure needs at least one distribution")
    fig = _figure((6.2 * len(distributions), 4.2))
    axes = np.atleast_1d(fig.subplots(1, len(distributions)))
    for ax, d in zip(axes, distributions):
        v = np.asarray(d.values, dtype=np.float64).ravel()
        v = v[np.isfinite(v)]
        lo, hi = _view(v, d.low, d.high)
        shown = v[(v >= lo) & (v <= hi)]
        ax.hist(shown, bins=bins, range=(lo, hi), color="0.45", log=True, label=f"{v.size:,} values")
        fraction = d.clipped_fraction()
        if fraction is not None:
            ax.axvline(d.low, color=QUANTIZED, linestyle="--", linewidth=1.3, label=f"clipping range [{d.low:.4g}, {d.high:.4g}]")
            ax.axvline(d.high, color=QUANTIZED, linestyle="--", linewidth=1.3, label=f"clipped: {100 * fraction:.3g} % of values")
        if shown.size < v.size:
            ax.plot([], [], " ", label=f"{v.size - shown.size:,} values beyond the view (min {v.min():.4g}, max {v.max():.4g})")
        ax.set_title(f"{layer}: {d.label}")
        ax.set_xlabel("value")
        ax.set_ylabel("count (log)")
        ax.legend(loc="upper right", fontsize=8)
        ax.grid(True, alpha=0.3)
    return _png(fig)


def _view(v: np.ndarray, low: float | None, high: float | None) -> tuple[float, float]:
    """The x range: all values, unless outliers would squash the clipping range into a
    sliver; then the clipping range with a margin of its own width on each side."""
    lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 1.0)
    if low is not None and high is not None:
        span = max(high - low, 1e-12)
        if hi - lo > 4 * span:
            return min(low, max(lo, low - span)), max(high, min(hi, high + span))
        lo, hi = min(lo, low), max(hi, high)
    return (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)


def _tall_figure(n: int, xlabel: str, title: str) -> tuple[Figure, Axes]:
    # about 0.22 inch per layer keeps 7-pt names apart at 100 layers (about 24 inches)
    fig = _figure((10, max(3.0, 0.22 * n + 1.6)))
    ax = fig.subplots()
    ax.set_xlabel(xlabel)
    ax.xaxis.set_tick_params(labeltop=True, top=True)  # readable at both ends of a long figure
    ax.grid(True, axis="x", alpha=0.3)
    if title:
        ax.set_title(title)  # an axes title: a figure title would collide with the outside legend
    return fig, ax


def _layer_axis(ax: Axes, layers: Sequence[str]) -> None:
    ax.set_yticks(np.arange(len(layers)), [str(name) for name in layers], fontsize=7 if len(layers) > 30 else 9)
    ax.set_ylim(len(layers) - 0.5, -0.5)  # first layer on top


def _same_length(layers: Sequence[str], **series: Sequence[float] | None) -> None:
    if not layers:
        raise ValueError("no layers to draw")
    for name, values in series.items():
        if values is not None and len(values) != len(layers):
            raise ValueError(f"{name} has {len(values)} values for {len(layers)} layers")


def _wide(values: Sequence[float]) -> bool:
    positive = [v for v in values if v > 0]
    return len(positive) == len(values) and max(positive) / min(positive) > 20


def _figure(size: tuple[float, float]) -> Figure:
    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)  # a real canvas: draw() lays the figure out (label placement needs it)
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()
