"""sensitivity and auto as HTML documents: per-layer sensitivity bars, the Pareto front of every
candidate auto tried (the chosen one marked), and the same numbers as their JSON."""
from __future__ import annotations

from quantwise.mixed.auto import AutoReport
from quantwise.mixed.sensitivity import SensitivityReport
from quantwise.report import figures
from quantwise.report.compare_html import environment, pareto_section
from quantwise.report.grid import Cell, Table, number
from quantwise.report.html import Document
from quantwise.versions import machine, versions



def sensitivity_document(report: SensitivityReport) -> Document:
    doc = Document(f"quantwise sensitivity: {report.model} · {report.recipe_name}", data=report.to_dict())
    doc.setting("model", report.model)
    doc.setting("recipe", report.recipe_name)
    doc.setting("metric", f"{report.primary} on {report.n_evaluation} evaluation samples ({report.evaluation}); float {report.float_metric:.5g}, all layers quantized {report.quantized_metric:.5g}")
    doc.setting("proxy", f"{report.proxy} on {report.proxy_samples} samples ({'the real quantized layers' if report.proxy_exact else 'fake quantization'})")
    doc.setting("time", ", ".join(f"{k} {v:.0f} s" for k, v in report.seconds.items()) + (" (cached)" if report.cached else ""))
    environment(doc, versions(), machine())
    layers = sorted(report.layers, key=lambda l: l.proxy_rank)
    figure = doc.section("Per-layer sensitivity (proxy)")
    figure.figure(figures.sensitivity_figure([l.name for l in layers], [l.proxy_alone for l in layers], [l.proxy_float for l in layers],
                                             f"{report.proxy} (dB)", higher_is_better=True, title=f"{report.model} · {report.recipe_name}"),
                  "Output SQNR to float when only this layer is quantized, and when only this layer is kept float (everything else quantized). Most sensitive first.")
    confirmed = [l for l in layers if l.metric_float is not None or l.metric_alone is not None]
    by = report.ranking_metric or report.primary
    rows = [[Cell(l.name), Cell(str(l.proxy_rank)), number(l.proxy_gain, 3), number(l.metric_float, 5), number(l.sqnr_float, 4), number(l.ranked_float, 5),
             number(l.metric_alone, 5), Cell("" if l.full_rank is None else str(l.full_rank)), Cell("control" if l.control else "top-k")] for l in confirmed]
    table = doc.section("Confirmed with the real metric")
    table.paragraph(f"Top-5 agreement between the proxy's and the real metric's ranking: "
                    f"{'–' if report.top5_agreement is None else f'{report.top5_agreement:.0%}'}; rank correlation "
                    f"{'–' if report.rank_correlation is None else f'{report.rank_correlation:.2f}'}"
                    + f"; the real rank orders by {by} over the whole evaluation split"
                    + (f" ({report.primary} counts samples, too coarse to order single layers)" if by != report.primary else "")
                    + (f"; {report.tied} confirmed layers tie on {by} and are ordered by the output SQNR over the whole split." if report.tied else "."))
    table.table(Table(["layer", "proxy rank", "proxy gain dB", f"{report.primary}, this layer float", "output SQNR dB, this layer float (whole split)",
                       f"{by}, this layer float (whole split)", f"{report.primary}, only this layer int8", "real rank", "why confirmed"], rows, right_from=1))
    return doc


def auto_document(report: AutoReport) -> Document:
    doc = Document(f"quantwise auto: {report.model}", data=report.to_dict())
    doc.setting("model", report.model)
    doc.setting("budget", f"{report.primary} may drop at most {report.max_drop:g} from float ({report.float_metric:.5g}); objective: {report.objective}")
    doc.setting("evaluation data", report.evaluation)
    doc.setting("latency", f"batch {report.batch}, {report.threads} threads")
    environment(doc, versions(), machine())
    verdict = doc.section("Result")
    if report.chosen:
        verdict.paragraph(f"Chosen: {report.chosen}" + (f"; recipe written to {report.recipe_path}" if report.recipe_path else ""))
    else:
        verdict.warning("No candidate meets the budget. Best trade-offs: " + "; ".join(report.tradeoffs))
    verdict.items([f"{name} kept float: {why}" for name, why in report.why_float.items()] + report.notes)
    points = [figures.Candidate(c.name, c.size_mb, c.latency_ms, c.metric, report.higher_is_better, c.name == report.chosen, c.within_budget)
              for c in report.candidates if c.error is None and None not in (c.size_mb, c.latency_ms, c.metric)]
    if points:
        pareto_section(doc.section("Every candidate tried"), points, report.primary, report.model, f"latency (ms, batch {report.batch})",
                       "Size, latency and metric of every candidate with all three measured; crosses are outside the budget, the star is the choice.")
    rows, styles = [], []
    for c in report.candidates:
        rows.append([Cell(c.name), Cell(c.stage), number(c.size_mb, 3), number(c.latency_ms, 3), number(c.metric, 5), number(c.drop, 3),
                     Cell("yes" if c.within_budget else "no"), Cell(", ".join(c.kept_float)), Cell(c.error or "; ".join(c.notes))])
        styles.append("good" if c.name == report.chosen else ("bad" if c.error or not c.within_budget else ""))
    doc.section("Candidates").table(Table(["candidate", "stage", "size MB", "latency ms", report.primary, "drop", "within budget", "kept float", "notes"],
                                          rows, row_styles=styles, right_from=2))
    return doc
