"""The debug report as an HTML document: diagnosis, per-layer table, SQNR isolated vs
propagated, and histograms of the selected layer with its quantized ranges."""
from __future__ import annotations

import math

from quantwise.debug.results import DebugReport
from quantwise.report.compare_html import environment
from quantwise.report.figures import Distribution, histogram_figure, sqnr_figure
from quantwise.report.grid import Cell, Table, number
from quantwise.report.html import Document
from quantwise.versions import machine, versions



def debug_document(report: DebugReport) -> Document:
    doc = Document(f"quantwise debug: {report.model} · {report.recipe}", data=report.to_dict())
    doc.setting("model", report.model)
    doc.setting("recipe", report.recipe)
    doc.setting("data", f"{report.samples} samples: {report.data}")
    doc.setting("output", ", ".join(f"{k} {v:.4g}" for k, v in report.output.items()))
    environment(doc, versions(), machine())
    d = report.diagnosis
    summary = doc.section("Diagnosis")
    summary.paragraph(d.summary)
    summary.items(d.hints + report.notes)
    layers = [layer for layer in report.layers]
    names = [layer.name for layer in layers]
    figure = doc.section("Per-layer SQNR")
    figure.figure(sqnr_figure(names, [l.isolated.sqnr_db if l.isolated else math.nan for l in layers], [l.propagated.sqnr_db for l in layers],
                              title=f"{report.model} · {report.recipe}"),
                  "Isolated: the quantized layer fed the float model's input (its own error). Propagated: fed the quantized model's own activations (accumulated error). Higher is better.")
    rows, styles = [], []
    worst = sorted(layers, key=lambda l: l.propagated.sqnr_db)[:3]
    for layer in layers:
        iso, prop = layer.isolated, layer.propagated
        inputs = layer.inputs
        rows.append([Cell(layer.name), Cell(layer.quantized_as), number(iso.sqnr_db if iso else None, 3), number(prop.sqnr_db, 3), number(prop.cosine, 5),
                     number(layer.weights.sqnr_db if layer.weights else None, 3), number(layer.weights.outlier_ratio if layer.weights else None, 3),
                     number(inputs.clip_fraction if inputs else None, 3), Cell(", ".join(layer.fused[1:]))])
        styles.append("bad" if layer in worst else "")
    table = doc.section("Layers")
    table.table(Table(["layer", "quantized as", "isolated SQNR dB", "propagated SQNR dB", "propagated cosine", "weight SQNR dB",
                       "weight outliers", "input clipped", "fused with"], rows, caption="In network order; the three worst propagated layers in red.",
                      row_styles=styles, right_from=2))
    h = report.histogram
    if h is not None:
        dists = []
        if h.weights is not None:
            lo, hi = h.weight_range if h.weight_range else (None, None)
            dists.append(Distribution("weights", h.weights.numpy(), lo, hi))
        if h.activations is not None:
            lo, hi = h.activation_range if h.activation_range else (None, None)
            dists.append(Distribution("inputs", h.activations.numpy(), lo, hi))
        if dists:
            doc.section(f"Layer {h.layer}").figure(histogram_figure(h.layer, dists),
                                                   "Float values with the quantized range (dashed); the legend gives the fraction outside it.")
    return doc
