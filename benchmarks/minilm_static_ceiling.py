"""How close to float can static int8 bring minilm-l6?  (issue 20's "cosine to float >= 0.997")

Static int8 gives every Linear's input one calibrated per-tensor range. This script measures,
on minilm-l6's 250 evaluation texts (calibration: its 256 other texts), where the error comes from
and what the known remedies buy:

- int8 per-channel weights with float activations (fake-quantized weights: the weights' share),
- quantwise ``dynamic`` (activations quantized per token at run time, the reference the target names),
- ``static-pt2e`` (nearest rounding) and ``static-adaround`` (learned rounding: does weight rounding matter?),
- ``static-pt2e`` with the FFN output projections kept float (their GELU input has BERT's outlier
  activations), and with those plus the attention output projections kept float,
- ``static:path=pt2e,smoothquant=alpha`` (SmoothQuant: each Linear's input divided per channel by
  ``s = max|x|^alpha / max|W|^(1 - alpha)`` and its weight multiplied by it, exact in float; the
  division stays in the graph as a float multiply before the quantized input), for several alphas;
  and both together: SmoothQuant on the other 30 Linears, the 6 FFN output projections float.

Writes ``benchmarks/results/minilm-static-ceiling.json`` and ``benchmarks/MINILM_STATIC_RESULTS.md``.

    .venv/bin/python benchmarks/minilm_static_ceiling.py     # ~20 min on 2 threads (evaluation dominates)
    .venv/bin/python benchmarks/minilm_static_ceiling.py --render   # the markdown again from the JSON
"""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import torch
from torch import nn

from quantwise import api
from quantwise.evaluate.metrics import outputs
from quantwise.mixed.simulate import fake_quant_weight
from quantwise.versions import machine, versions

HERE = Path(__file__).parent
OUT = HERE / "results" / "minilm-static-ceiling.json"
MD = HERE / "MINILM_STATIC_RESULTS.md"
ALPHAS = (0.5, 0.6, 0.7, 0.8, 0.9)
COMBINED_ALPHAS = (0.5, 0.6, 0.7, 0.8)
FFN_OUT = "encoder.layer.?.output.dense"  # '?' so that attention.output.dense does not match


def weights_only(model: nn.Module) -> nn.Module:
    model = copy.deepcopy(model)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.copy_(fake_quant_weight(m.weight, "per-channel", 8))
    return model


def main() -> None:
    torch.manual_seed(0)
    bundle = api.load_model("minilm-l6")
    float_model = bundle.model
    reference = outputs(float_model, bundle.evaluation)
    rows = []

    def record(label: str, model: nn.Module, seconds: float, notes: list[str]) -> None:
        metrics = api.evaluate(model, bundle, reference)
        row = {"row": label, "cosine": metrics["cosine"], "cosine_min": metrics["cosine_min"], "sqnr_db": metrics["sqnr_db"],
               "quantize_s": round(seconds, 1), "notes": notes}
        rows.append(row)
        print(f"{label:60s} cosine {row['cosine']:.5f}  min {row['cosine_min']:.4f}  SQNR {row['sqnr_db']:.2f} dB  {seconds:.0f} s", flush=True)

    record("int8 per-channel weights, float activations (fake-quant)", weights_only(float_model), 0.0, [])
    for label, spec in (
        ("dynamic (int8 activations per token at run time)", "dynamic"),
        ("static-pt2e", "static-pt2e"),
        ("static-adaround", "static-adaround"),
        ("static-pt2e, FFN output projections float (6 of 36)", f"static:path=pt2e,keep_float={FFN_OUT}"),
        ("static-pt2e, FFN and attention output projections float (12 of 36)", "static:path=pt2e,keep_float=encoder.layer.*.output.dense"),
        *((f"SmoothQuant alpha {a} + static-pt2e (36 of 36 int8)", f"static:path=pt2e,smoothquant={a}") for a in ALPHAS),
        *((f"SmoothQuant alpha {a} + static-pt2e, FFN output projections float (30 of 36 int8)",
           f"static:path=pt2e,keep_float={FFN_OUT},smoothquant={a}") for a in COMBINED_ALPHAS),
    ):
        start = time.perf_counter()
        result = api.quantize(bundle, spec)
        seconds = time.perf_counter() - start
        record(label, result.quantized.module, seconds, [n for n in result.quantized.notes if "int8 weights in" in n or "kept float" in n or "SmoothQuant" in n])

    record_all = {"model": "minilm-l6", "evaluation": bundle.evaluation.description, "calibration": bundle.calibration.description,
                  "threads": torch.get_num_threads(), "machine": machine(), "versions": versions(), "rows": rows}
    OUT.write_text(json.dumps(record_all, indent=2) + "\n")
    render(record_all)


def render(record: dict) -> None:
    lines = [
        "# minilm-l6: how close to float static int8 gets",
        "",
        f"Written by `benchmarks/minilm_static_ceiling.py` ({record['machine'].get('cpu', '')}; "
        f"torch {record['versions'].get('torch', '?')}, torchao {record['versions'].get('torchao', '?')}). "
        "Cosine to float of the sentence embeddings over the evaluation texts (mean and worst), SQNR in dB; "
        "calibration on other texts. Issue 20's target: cosine >= 0.997 for static int8.",
        "",
        "| row | cosine | worst | SQNR dB | quantize s |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {r['row']} | {r['cosine']:.5f} | {r['cosine_min']:.4f} | {r['sqnr_db']:.2f} | {r['quantize_s']:.0f} |" for r in record["rows"]]
    lines += [
        "",
        "Read: learned weight rounding does not move static int8 (the weights alone cost little: first row); the loss is "
        "in the per-tensor activation ranges. Keeping the 6 outlier-carrying FFN output projections float, or SmoothQuant "
        "at its best alpha, each brings static int8 close to the dynamic recipe's cosine; SmoothQuant's result is not "
        "monotone in alpha, so alpha has to be searched per model, end to end. Both together pass the 0.997 target with "
        "30 of 36 Linears static int8 (`static:path=pt2e,keep_float=encoder.layer.?.output.dense,smoothquant=0.5`).",
        "",
    ]
    MD.write_text("\n".join(lines))


if __name__ == "__main__":
    import sys

    if "--render" in sys.argv:  # re-render the markdown from the recorded JSON
        render(json.loads(OUT.read_text()))
    else:
        main()
