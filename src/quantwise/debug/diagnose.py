"""The one-line diagnosis: which layer has the largest own error, where the error
accumulates, and what the largest layer's own error comes from.

A quantized layer has up to three quantization steps: its input grid, its weights and its
output grid. debug/ablation.py measures each alone at the layer's output; their noises
roughly add, so the step with the lowest SQNR dominates the layer's own error. An input
or output step is *clipping*-dominated when clamping alone (no rounding) makes more than
half of its noise, else *rounding*-dominated.
"""
from __future__ import annotations

import math

from quantwise.debug.results import Diagnosis, LayerDebug

CLIP_MARGIN_DB = 10 * math.log10(2)  # clipping noise > half of the step's noise
MIN_DROP_DB = 1.0  # a smaller step in propagated SQNR is noise, not accumulation
_CAP = 200.0  # dB: stands for infinite SQNR in comparisons


def _finite(x: float | None) -> float:
    if x is None or math.isnan(x):
        return _CAP
    return max(min(x, _CAP), -_CAP)


def sources(layer: LayerDebug) -> dict[str, float]:
    """SQNR (dB) at the layer's output of each quantization step alone: input, weight, output."""
    src = layer.sources
    if src is None:
        return {}
    found = {"input": src.input_db, "weight": src.weight_db, "output": src.output_db}
    return {k: v for k, v in found.items() if v is not None}


def cause(layer: LayerDebug) -> str:
    """e.g. "input clipping", "output rounding", "weight rounding"; "" when nothing is known.

    A step is clipping-dominated when clamping alone makes more than half its noise, i.e.
    its clipping-only SQNR is less than 3 dB above its full SQNR."""
    found = sources(layer)
    if not found:
        return ""
    source = min(found, key=lambda k: _finite(found[k]))
    if source != "weight" and clipping_dominated(layer, source):
        return f"{source} clipping"
    return f"{source} rounding"


def clipping_dominated(layer: LayerDebug, step: str) -> bool:
    """Whether clamping alone makes more than half of the noise of ``step`` ("input" or "output")."""
    src = layer.sources
    if src is None:
        return False
    full, clip = (src.input_db, src.input_clipping_db) if step == "input" else (src.output_db, src.output_clipping_db)
    return full is not None and clip is not None and _finite(clip) < _finite(full) + CLIP_MARGIN_DB


def _own(layer: LayerDebug) -> float:
    return _finite(layer.isolated.sqnr_db if layer.isolated is not None else layer.propagated.sqnr_db)


def diagnose(layers: list[LayerDebug], output: dict[str, float]) -> Diagnosis:
    if not layers:
        return Diagnosis(None, None, None, None, "", "no quantized layer")
    worst = min(layers, key=_own)
    why = cause(worst)
    own = worst.isolated.sqnr_db if worst.isolated is not None else worst.propagated.sqnr_db
    parts = [f"largest own error: {worst.name} ({'isolated' if worst.isolated else 'propagated'} SQNR {own:.1f} dB{', ' + why + '-dominated' if why else ''})"]
    drops = [(_finite(a.propagated.sqnr_db) - _finite(b.propagated.sqnr_db), a, b) for a, b in zip(layers, layers[1:])]
    drop, before, at = max(drops, key=lambda d: d[0]) if drops else (0.0, None, None)
    if at is not None and drop >= MIN_DROP_DB:
        parts.append(f"error mostly accumulates at {at.name} (propagated SQNR {before.propagated.sqnr_db:.1f} -> {at.propagated.sqnr_db:.1f} dB)")
    else:
        at = None
        parts.append(f"no single layer adds much error downstream (last layer: propagated SQNR {layers[-1].propagated.sqnr_db:.1f} dB)")
    return Diagnosis(worst.name, own, at.name if at else None, drop if at else None, why, "; ".join(parts), _hints(layers, worst, why))


def _hints(layers: list[LayerDebug], worst: LayerDebug, why: str) -> list[str]:
    hints = []
    found = sources(worst)
    if found:
        hints.append(f"{worst.name}: noise sources " + ", ".join(f"{k} {v:.1f} dB" for k, v in found.items()) + " at its output (the lowest dominates)")
    static = [l for l in layers if l.sources is not None and l.sources.input_db is not None]
    clipped = [l for l in static if clipping_dominated(l, "input")]
    if static:
        hints.append(f"{len(clipped)} of {len(static)} statically quantized layer inputs lose more to clipping than to rounding"
                     + (f": {', '.join(l.name for l in clipped[:5])}{' ...' if len(clipped) > 5 else ''}" if clipped else ""))
    source, _, kind = why.partition(" ")
    stats = {"input": worst.inputs, "output": worst.outputs}.get(source)
    if kind == "clipping" and stats is not None:
        hints.append(
            f"{worst.name}: {100 * stats.clip_fraction:.3g} % of its {source} values fall outside [{stats.range_lo:.3g}, {stats.range_hi:.3g}] "
            f"(float range [{stats.min:.3g}, {stats.max:.3g}]): "
            "widen the range (observer=minmax, or a percentile closer to 100)"
        )
    elif kind == "rounding" and stats is not None:
        hints.append(
            f"{worst.name}: {source} range [{stats.range_lo:.3g}, {stats.range_hi:.3g}] is coarse for most values "
            f"(float range [{stats.min:.3g}, {stats.max:.3g}], outlier ratio {stats.outlier_ratio:.2g}); "
            "a tighter range (observer=mse or percentile), 8-bit activations (backend without reduce_range) or keeping this layer float would help"
        )
    elif source == "weight":
        hints.append(f"{worst.name}: the weights dominate: finer weight granularity or more bits, or keep this layer float")
    return hints
