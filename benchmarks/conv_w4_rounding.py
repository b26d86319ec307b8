"""4-bit convolution weights with int8 activations: round-to-nearest against learned rounding
(AdaRound), on mnist-cnn and efficientnet-lite0 (issue 20's 4-bit targets).

Every pair shares its grid (per-channel symmetric, 16 levels, int8 storage; histogram activation
observer); only the rounding differs. mnist-cnn: top-1 accuracy on the official 10k test digits
against float's (target: learned rounding within 0.3 points). efficientnet-lite0 (no labels): KL
divergence and top-1 agreement with float on the evaluation crops (target: learned rounding's KL at
most a third of nearest's at the same bits), all layers at 4 bits and with depthwise convolutions
(and the stem and classifier) kept at 8 bits through ``keep_int8``. The best efficientnet row is
also exported to ONNX Runtime (parity-checked) and scored there. Writes
benchmarks/results/conv-w4-rounding.json and benchmarks/CONV_W4_RESULTS.md.

    .venv/bin/python benchmarks/conv_w4_rounding.py                  # ~20 min on 2 threads
    .venv/bin/python benchmarks/conv_w4_rounding.py --markdown-only  # rewrite the .md from the .json
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "conv-w4-rounding.json"
MARKDOWN = HERE / "CONV_W4_RESULTS.md"
W4 = "static:path=pt2e,weight_bits=4"
DEPTHWISE = "_blocks.*._depthwise_conv"
ENDS = "_conv_stem|_fc"
# (model, configuration, nearest spec, learned spec); the learned spec is the nearest one plus rounding=adaround
PAIRS = [
    ("mnist-cnn", "every layer 4-bit", W4),
    ("efficientnet-lite0", "every layer 4-bit", W4),
    ("efficientnet-lite0", "depthwise 8-bit", f"{W4},keep_int8={DEPTHWISE}"),
    ("efficientnet-lite0", "depthwise, stem, classifier 8-bit", f"{W4},keep_int8={DEPTHWISE}|{ENDS}"),
]
REFERENCES = {"mnist-cnn": ["static-w4", "static-pt2e"], "efficientnet-lite0": ["static-pt2e"]}
EXPORTED = ("efficientnet-lite0", "depthwise, stem, classifier 8-bit")


def _measure(bundle, reference, spec: str) -> tuple[object, dict]:
    from quantwise import api
    from quantwise.evaluate.metrics import fidelity, outputs

    started = time.perf_counter()
    result = api.quantize(bundle, spec)
    seconds = time.perf_counter() - started
    scores = fidelity("classification", reference, outputs(result.quantized.module, bundle.evaluation), bundle.evaluation.targets)
    return result, {"spec": spec, "quantize_seconds": round(seconds, 1), **scores,
                    "rounding": {k: v for k, v in (result.quantized.meta.get("rounding") or {}).items() if k != "mse_ratio"}}


def _onnx_scores(bundle, reference, result, work: Path, threads: int) -> dict:
    import torch

    from quantwise import api
    from quantwise.evaluate.metrics import fidelity
    from quantwise.export import export_artifact
    from quantwise.export.onnx_target import load

    art = api.save(result, work / "learned")
    exported = export_artifact(art, "onnx", bundle=bundle, samples=len(bundle.evaluation), threads=threads)
    runner = load(exported.path, threads)
    with torch.no_grad():
        ort = torch.cat([torch.as_tensor(runner(*x)).float() for x, _ in bundle.evaluation.batches(32)])
    return {"parity": exported.parity.to_dict(), **fidelity("classification", reference, ort, bundle.evaluation.targets)}


def run(threads: int = 2) -> dict:
    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(threads)
    from quantwise import api
    from quantwise.evaluate.metrics import fidelity, outputs
    from quantwise.versions import machine, versions

    models: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="conv-w4-") as tmp:
        for name in dict.fromkeys(m for m, _, _ in PAIRS):
            bundle = api.load_model(name)
            reference = outputs(bundle.model, bundle.evaluation)
            entry = {"evaluation": len(bundle.evaluation), "calibration": len(bundle.calibration),
                     "float": fidelity("classification", reference, reference, bundle.evaluation.targets), "pairs": [], "references": []}
            for spec in REFERENCES[name]:
                entry["references"].append(_measure(bundle, reference, spec)[1])
                print(name, entry["references"][-1], flush=True)
            for model, configuration, spec in PAIRS:
                if model != name:
                    continue
                _, nearest = _measure(bundle, reference, spec)
                learned_result, learned = _measure(bundle, reference, f"{spec},rounding=adaround")
                pair = {"configuration": configuration, "nearest": nearest, "learned": learned,
                        "kl_ratio": round(nearest["kl"] / learned["kl"], 2) if learned["kl"] > 0 else None}
                if (model, configuration) == EXPORTED:
                    pair["learned_onnxruntime"] = _onnx_scores(bundle, reference, learned_result, Path(tmp), threads)
                entry["pairs"].append(pair)
                print(name, json.dumps(pair), flush=True)
            models[name] = entry
    return {"threads": threads, "models": models, "machine": machine(), "versions": versions()}


def _row(label: str, r: dict, labelled: bool, float_top1: float | None) -> str:
    top1 = f"{r['top1']:.4f} ({100 * (r['top1'] - float_top1):+.2f} pt)" if labelled else "–"
    return f"| {label} | {top1} | {r['agreement']:.4f} | {r['kl']:.4f} | {r['sqnr_db']:.1f} | {r.get('quantize_seconds', '–')} |"


def markdown(result: dict) -> str:
    m, v = result["machine"], result["versions"]
    lines = [
        "# 4-bit convolution weights: nearest against learned rounding",
        "",
        "Written by `benchmarks/conv_w4_rounding.py` (one process). Each pair shares its grid (per-channel symmetric "
        "4-bit weights stored as int8, histogram-calibrated uint8 activations, PT2E x86); only the rounding differs. "
        "Fidelity is against the float model on the evaluation split; efficientnet-lite0's crops have no labels, so "
        "its fidelity is KL divergence first and top-1 agreement second.",
        "",
        f"- machine: {m.get('cpu', m)}, {result['threads']} threads; versions: "
        + ", ".join(f"{k} {val}" for k, val in v.items()),
        "",
    ]
    targets = []
    for name, entry in result["models"].items():
        labelled = "top1" in entry["float"]
        float_top1 = entry["float"].get("top1")
        lines += [f"## {name} ({entry['evaluation']} evaluation samples, {entry['calibration']} calibration)", "",
                  "| recipe | top-1 (vs float) | agreement | KL | SQNR dB | quantize s |", "|---|---|---|---|---|---|"]
        if labelled:
            lines.append(f"| float | {float_top1:.4f} | 1.0000 | 0 | – | – |")
        for r in entry["references"]:
            lines.append(_row(f"`{r['spec']}` (reference)", r, labelled, float_top1))
        for p in entry["pairs"]:
            lines.append(_row(f"{p['configuration']}, nearest", p["nearest"], labelled, float_top1))
            lines.append(_row(f"{p['configuration']}, **learned** (x{p['kl_ratio']} lower KL)", p["learned"], labelled, float_top1))
            if "learned_onnxruntime" in p:
                o = p["learned_onnxruntime"]
                lines.append(_row(f"{p['configuration']}, learned, **ONNX Runtime** (parity {'passed' if o['parity']['passed'] else 'FAILED'})",
                                  o, labelled, float_top1))
        lines.append("")
        lines.append("Specs: " + "; ".join(f"{p['configuration']}: `{p['nearest']['spec']}` and `{p['learned']['spec']}`" for p in entry["pairs"]))
        lines.append("")
        for p in entry["pairs"]:
            if labelled:
                drop = 100 * (float_top1 - p["learned"]["top1"])
                targets.append(f"- {name}, {p['configuration']}: learned rounding within 0.3 points of float top-1: "
                               f"{drop:.2f} points — {'met' if drop <= 0.3 else '**not met**'} (nearest: {100 * (float_top1 - p['nearest']['top1']):.2f})")
            else:
                ratio = p["kl_ratio"]
                targets.append(f"- {name}, {p['configuration']}: KL at least 3x lower than nearest's: x{ratio} — "
                               f"{'met' if ratio and ratio >= 3 else '**not met**'}")
            seconds = p["learned"]["quantize_seconds"]
            if name == "efficientnet-lite0":
                targets.append(f"- {name}, {p['configuration']}: quantize under 10 minutes on {result['threads']} threads: "
                               f"{seconds / 60:.1f} min — {'met' if seconds < 600 else '**not met**'}")
    lines += ["## Targets (issue 20)", ""] + targets + [""]
    lines += [
        "## Reading",
        "",
        "- The targets are relative to nearest rounding at the same bits. In absolute terms a 4-bit efficientnet-lite0 is "
        "still far from float (best agreement above 0.82 against static int8's 0.91): keep such a model for experiments, "
        "or keep more layers at 8 bits (`keep_int8`), and judge it by its numbers.",
        "- mnist-cnn is easy at 4 bits: nearest rounding already stays within 0.3 points, so learned rounding's gain there "
        "is in fidelity (KL, SQNR), not in accuracy.",
        "- 4-bit codes are stored and run as int8 values (no x86 int4 convolution kernel): the artifact and the ONNX file are "
        "int8-sized and as fast as int8. The gain is for targets that pack 4-bit weights; the ONNX file holds the 4-bit "
        "codes unchanged (tested).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    if "--markdown-only" in sys.argv:
        result = json.loads(OUT.read_text())
    else:
        result = run(threads=2)
        OUT.write_text(json.dumps(result, indent=2) + "\n")
    MARKDOWN.write_text(markdown(result))
    print(f"wrote {OUT.relative_to(HERE.parent)} and {MARKDOWN.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
