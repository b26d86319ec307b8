"""Every zoo model x every workflow x every export target: does the export succeed, and does
parity hold? One row per combination, with the refusal reason where a target does not take a
recipe. Parity only (no timing), so it may run while the machine is busy.

    .venv/bin/python benchmarks/export_zoo.py
    .venv/bin/python benchmarks/export_zoo.py --models mnist-cnn --recipes static-pt2e

Writes benchmarks/results/exports.json and benchmarks/EXPORT_RESULTS.md.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODELS = ("mnist-cnn", "efficientnet-lite0", "minilm-l6", "resemblyzer-lstm")
RECIPES = ("static-pt2e", "static-xnnpack", "static-fx", "qat", "dynamic")
TARGETS = ("onnx", "pt2", "torchscript", "executorch")
SIZES = {"mnist-cnn": (512, 2000), "efficientnet-lite0": (None, None), "minilm-l6": (None, None), "resemblyzer-lstm": (None, None)}


# Measured outside this script's last run (it was cut short on a shared, loaded machine): keep with the table.
NOTES = [
    "- efficientnet-lite0 `static-pt2e` (16 calibration / 64 evaluation crops, one-off run of export_artifact): `onnx` FAILED parity,"
    " top-1 agreement 0.984 with the PyTorch int8 model (1 of 64 crops flipped; needs 0.99). The int8 model itself agrees with"
    " float on only ~0.91 of these crops and bf16 on 0.969: many crops are near-ties, so ORT's rounding flips some. `torchscript`"
    " passed (agreement 1.0, cosine 0.99984) after tracing at batch 1; `pt2` passed in the earlier, cut-short run.",
    "- minilm-l6 (earlier cut-short run, table not written): `static-pt2e` to onnx, pt2 and torchscript passed; `dynamic` to onnx (measured by the helper session on 250 texts) passes"
    " by the within-noise rule (cosine 0.99736 to the int8 model, 0.99680 to float vs the int8 model's own 0.99679; see export/parity.py).",
]


def save(rows: list[dict], planned: list[str]) -> None:
    """Write the results so far (after every row: a run cut short still leaves its table). Rows of
    models this run does not cover are kept from the previous results file."""
    import json

    from quantwise.report.table import write_json
    from quantwise.versions import machine, versions

    path = HERE / "results" / "exports.json"
    kept = [r for r in json.loads(path.read_text())["rows"] if r["model"] not in planned] if path.is_file() else []
    rows = sorted(kept + rows, key=lambda r: MODELS.index(r["model"]) if r["model"] in MODELS else len(MODELS))
    done = list(dict.fromkeys(r["model"] for r in rows))
    planned = list(dict.fromkeys([*(r["model"] for r in kept), *planned]))
    data = {"machine": machine(), "versions": versions(), "rows": rows, "models_planned": planned, "models_reached": done}
    write_json(data, HERE / "results" / "exports.json")
    (HERE / "EXPORT_RESULTS.md").write_text(summarise(data))


def run(models: list[str], recipes: list[str], targets: list[str]) -> list[dict]:
    import torch

    from quantwise import api
    from quantwise.errors import QuantwiseError, first_line
    from quantwise.export import export_artifact

    rows = []
    for model in models:
        n_cal, n_eval = SIZES.get(model, (None, None))
        bundle = api.load_model(model, n_calibration=n_cal, n_evaluation=n_eval)
        for recipe in recipes:
            if recipe == "qat" and bundle.train is None:
                rows.append({"model": model, "recipe": recipe, "target": "*", "status": "n/a", "reason": "no training split for QAT"})
                continue
            work = Path(tempfile.mkdtemp(prefix="qw-export-"))
            try:
                start = time.perf_counter()
                path = api.save(api.quantize(bundle, recipe), work / "artifact")
                print(f"{model} {recipe}: quantized in {time.perf_counter() - start:.0f} s", flush=True)
            except Exception as err:
                rows.append({"model": model, "recipe": recipe, "target": "*", "status": "quantize failed", "reason": first_line(err, 200)})
                shutil.rmtree(work, ignore_errors=True)
                continue
            for target in targets:
                row = {"model": model, "recipe": recipe, "target": target}
                try:
                    result = export_artifact(path, target, bundle=bundle, samples=256)
                    row.update(status="ok", size_mb=result.size_mb, seconds=result.seconds, parity=result.parity.to_dict(), notes=result.notes)
                except QuantwiseError as err:
                    refused = "cannot export" in str(err) or "not installed" in str(err)
                    row.update(status="unsupported" if refused else "failed", reason=str(err))
                except Exception as err:
                    row.update(status="failed", reason=f"{type(err).__name__}: {first_line(err, 200)}")
                print(f"  -> {target}: {row['status']}", flush=True)
                rows.append(row)
                save(rows, models)
            shutil.rmtree(work, ignore_errors=True)
        del bundle
        torch.set_num_threads(torch.get_num_threads())
    return rows


def summarise(data: dict) -> str:
    lines = ["# Export results", "", "Written by `benchmarks/export_zoo.py`: each zoo model quantized with each workflow, exported to each target,",
             "and checked on 256 held-out evaluation samples against the quantized PyTorch model and against float.",
             "Tolerance: top-1 agreement >= 0.99 with the quantized PyTorch model (classifiers), mean cosine >= 0.999 (embeddings).", "",
             f"Machine: {data['machine']['cpu']}; versions: " + ", ".join(f"{k} {v}" for k, v in data["versions"].items()), "",
             "Models reached: " + ", ".join(data["models_reached"]) + (" (run cut short before: " + ", ".join(m for m in data["models_planned"] if m not in data["models_reached"]) + ")" if set(data["models_planned"]) - set(data["models_reached"]) else ""), "",
             "| model | recipe | target | status | size MB | vs quantized: max abs / cosine / top-1 | vs float: cosine / top-1 | reason or note |",
             "|---|---|---|---|---|---|---|---|"]
    for r in data["rows"]:
        if r["status"] != "ok" or "parity" not in r:
            lines.append(f"| {r['model']} | {r['recipe']} | {r['target']} | {r['status']} | | | | {r.get('reason', '')} |")
            continue
        q, f = r["parity"]["vs_quantized"], r["parity"]["vs_float"]
        top = lambda a: "" if a["agreement"] is None else f" / {a['agreement']:.4f}"  # noqa: E731
        lines.append(f"| {r['model']} | {r['recipe']} | {r['target']} | ok | {r['size_mb']:.2f} | {q['max_abs']:.3g} / {q['cosine']:.5f}{top(q)} | "
                     f"{f['cosine']:.5f}{top(f)} | {'; '.join(n for n in r['notes'] if 'deprecated' in n or 'NOT' in n or 'delegated' in n)} |")
    lines += ["", "## Notes", "", *NOTES]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--targets", default=",".join(TARGETS))
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    run(args.models.split(","), args.recipes.split(","), args.targets.split(","))
    print((HERE / "EXPORT_RESULTS.md").read_text())


if __name__ == "__main__":
    main()
