"""Side-by-side benchmark of the zoo: quantwise compare with ONNX Runtime as a target and its own
quantizer as peer rows (``--target pytorch,onnxruntime --peers``), one process per
(model, thread count) because Inductor bakes the thread count into compiled kernels.

    .venv/bin/python benchmarks/compare_zoo.py                      # all models, 2 threads
    .venv/bin/python benchmarks/compare_zoo.py --models efficientnet-lite0 --threads 1,2

Writes benchmarks/results/<model>-t<threads>.json and regenerates benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from quantwise.findings import warning_text
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DEFAULT_MODELS = ("mnist-cnn", "efficientnet-lite0")
CAVEATS = [
    "- efficientnet-lite0 agreement: every all-int8 row stays near 0.91-0.93 top-1 agreement with float (static-pt2e 0.910 in PyTorch,"
    " 0.914 through ONNX Runtime, with the percentile observer 0.926; ORT's own quantizer 0.922, at a higher KL to float: 0.030 against"
    " our 0.020-0.021); even bf16 autocast flips 8 of 256 crops (0.969). Many evaluation"
    " crops are near-ties; the >= 99 % agreement target of issue 2 is not met by any 8-bit scheme here. The best mixed-precision"
    " model auto found keeps the first two depthwise convolutions float: 0.957 (benchmarks/AUTO_RESULTS.md). The section"
    " above measures how much agreement these crops allow at all.",
    "- The static-pt2e rows were re-measured on 2026-11-25 after a fix to the saved PT2E model (it had not been torchao's"
    " converted model: observer eps reset on reload; output SQNR 12.9 -> 16.7 dB). mnist-cnn's table predates the fix.",
    "- efficientnet-lite0 `static-pt2e -> onnxruntime`: the PT2E QDQ graph is rewritten for ONNX Runtime's integer kernels"
    " (export/onnx_qdq.py: the 17 zero Pads of `Conv2dStaticSamePadding` folded into their Conv, exact; the 9 conv outputs that"
    " feed residual Adds quantized with calibrated ranges, one rounding more than the PyTorch int8 model). Before that, ORT ran"
    " 25 of 49 convolutions in float (23.6 ms at batch 1, 10x ORT's own static int8); now all 49 are QLinearConv and the 9 adds"
    " QLinearAdd, and the export passes parity with the PyTorch int8 model by the near-tie rule (export/parity.py).",
    "- Since 2026-11-25 (eighth session) every int8 Linear whose output stays float is exported as one MatMulIntegerToFloat carrying its"
    " bias (export/onnx_qdq.py): EfficientNet's classifier Gemm had run in float on a weight ORT dequantized at every call (0.3 ms of"
    " 3.5 at batch 1), minilm-l6 had 25 separate bias Adds. The efficientnet main table's ORT rows predate this (single pass); the two"
    " alternating-rounds sections (minilm-l6 and efficientnet-lite0 in ONNX Runtime) were re-run after it.",
    "- efficientnet-lite0 `static-fx` quantizes, but its artifact cannot be saved yet (functional convolutions leave"
    " packed ScriptObjects in the state); the row shows the error instead of numbers.",
    "- `dynamic` quantizes Linear/LSTM/GRU/Embedding only; on CNNs the convolutions stay float by design.",
    "- mnist-cnn at batch 1: int8 rows are within noise of float compiled (too little work per call), as expected.",
    "- Since 2026-12-06 every ONNX file quantwise writes computes the same on every CPU (export/portable.py): int8 weights that meet"
    " uint8 activations are stored as uint8 + 128, so ONNX Runtime runs its uint8 x uint8 kernels instead of the uint8 x int8 ones,"
    " which saturate on AVX2-only x86 (ORT's own quantizer's files do, and so did ours). The alternating-rounds sections were"
    " re-run that day with both layouts: the default portable file, and `--vnni-only` (the earlier, faster layout, correct only"
    " on CPUs with VNNI, AMX or ARM dot products). That day's machine was an Intel Xeon with AMX, where ORT's uint8 x int8 GEMM"
    " runs on AMX: the portable layout's cost is largest there. The main tables' ONNX rows predate the change.",
]


def child(model: str, threads: int, batches: tuple[int, ...]) -> None:
    import torch

    torch.set_num_threads(threads)
    from quantwise import api
    from quantwise.compare import CompareOptions, compare
    from quantwise.report.table import write_json

    bundle = api.load_model(model)
    recipes = ("dynamic", "static-fx", "static-pt2e") + (("qat",) if bundle.train is not None else ())
    # ONNX Runtime float and its own quantizers as rows; every recipe also exported to ONNX and timed there
    opts = CompareOptions(recipes=recipes, batches=batches, repeats=30, max_seconds=20.0, peers=True, targets=("pytorch", "onnxruntime"))
    write_json(compare(bundle, opts).to_dict(), RESULTS / f"{model}-t{threads}.json")


def _machine_line(data: dict, threads: str = "") -> str:
    m = data["machine"]
    return f"Machine: {m['cpu']}, {m['cores']} cores{threads}; versions: " + ", ".join(f"{k} {v}" for k, v in data["versions"].items())


def summarise() -> None:
    lines = ["# Benchmark results", "", "Written by `benchmarks/compare_zoo.py`; one process per model and thread count.",
             "Latency: median (p90) ms over repeats after warm-up. Speed-up: against the fastest float baseline at that batch.", ""]
    for path in sorted(RESULTS.glob("*-t*.json")):
        data = json.loads(path.read_text())
        if "batches" not in data or "-deploy-" in path.name:  # other benchmarks' results share the folder
            continue
        lines += [f"## {data['model']} ({data['threads']} threads)", "", _machine_line(data),
                  f"Calibration: {data['calibration']}. Evaluation: {data['evaluation']}.", ""]
        batches = data["batches"]
        head = "| row | runtime | size MB (x float) | " + " | ".join(f"batch {b} ms" for b in batches) + " | " + " | ".join(f"speed-up b{b}" for b in batches) + f" | {data['primary']} | warnings |"
        lines += [head, "|" + "---|" * (head.count("|") - 1)]
        for r in data["rows"]:
            if r["error"]:
                lines.append(f"| {r['name']} | n/a | | " + " | ".join("" for _ in batches * 2) + f" | | {r['error']} |")
                continue
            lat = " | ".join(f"{r['latency'][str(b)]['median_ms']:.3g} ({r['latency'][str(b)]['p90_ms']:.3g})" for b in batches)
            sp = " | ".join(f"{r['speedup'][str(b)]:.2f}" for b in batches)
            metric = r["metrics"].get(data["primary"])
            flags = [warning_text(w) for w in r["warnings"]] + (["peer: ONNX Runtime's own quantizer, not quantwise"] if r["kind"] == "peer" else [])
            lines.append(f"| {r['name']} | {r['runtime']} | {r['size_mb']:.3g} ({r['size_ratio']:.2f}) | {lat} | {sp} | {metric:.4f} | {'; '.join(flags)} |")
        lines += ["", "Best quantized row: " + "; ".join(f"batch {b}: {v}" for b, v in data["best"].items()), ""]
    minilm = RESULTS / "onnx-dynamic-minilm.json"
    if minilm.is_file():
        lines += _minilm_ort(json.loads(minilm.read_text()))
    h2h = RESULTS / "efficientnet-ort-h2h.json"
    if h2h.is_file():
        lines += _h2h(json.loads(h2h.read_text()))
    ceiling = RESULTS / "efficientnet-ceiling.json"
    if ceiling.is_file():
        lines += _ceiling(json.loads(ceiling.read_text()))
    lines += ["## Caveats (read before quoting a number)", "", *CAVEATS, ""]
    (HERE / "RESULTS.md").write_text("\n".join(lines) + "\n")


def _h2h(data: dict) -> list[str]:
    """The section written from benchmarks/efficientnet_ort_head_to_head.py's results."""
    lines = ["## efficientnet-lite0 in ONNX Runtime, alternating rounds", "",
             "Written by `benchmarks/efficientnet_ort_head_to_head.py`: the ONNX files built once, then timed in rounds of blocks"
             " of calls in one process (a single pass, as in the table above, moves by 10-20 % here); median (p90) ms; x = median"
             " over rounds of (this row / ORT's own static int8 in the same round). Accuracy against float on the"
             f" {data.get('evaluation_crops', 256)} evaluation crops (agreement is a count: one crop moves it by 0.004).", "",
             _machine_line(data, f", {data['threads']} threads"), "",
             "| row | batch 1 ms | batch 32 ms | agreement with float | KL to float | logit SQNR dB |", "|---|---|---|---|---|---|"]
    for name, row1 in data["latency"]["1"].items():
        cells = []
        for b in ("1", "32"):
            row = data["latency"][b][name]
            ratio = f", x{row['ratio_to_peer']['median']:.3f} ({row['ratio_to_peer']['min']:.2f}-{row['ratio_to_peer']['max']:.2f})" if "ratio_to_peer" in row else ""
            cells.append(f"{row['median_ms']:.3g} ({row['p90_ms']:.3g}){ratio}")
        a = data["accuracy_vs_float"][name]
        lines.append(f"| {name} | {' | '.join(cells)} | {a['agreement']:.4f} | {max(a['kl'], 0.0):.4f} | {a['sqnr_db']:.1f} |")
    rounds = data["latency"]["1"][next(iter(data["recipes"]))]["ratio_to_peer"]
    recipes = "; ".join(f"{n}: `{r}`" for n, r in data["recipes"].items())
    return lines + ["", f"{rounds['rounds']} rounds; recipes: {recipes}.", ""]


def _ceiling(data: dict) -> list[str]:
    """The section written from benchmarks/efficientnet_ceiling.py's results."""
    n = data["n"]
    lines = ["## efficientnet-lite0: how much agreement the evaluation crops allow", "",
             "Written by `benchmarks/efficientnet_ceiling.py`: the float model's own top-1 under perturbations smaller than int8's,"
             " on the same evaluation crops as the table above.", "",
             _machine_line(data, f", {data['threads']} threads"),
             f"Evaluation: {data['evaluation']}.", "",
             f"| variant ({n} crops) | top-1 agreement with float | crops flipped |", "|---|---|---|"]
    lines += [f"| {name} | {value:.3f} | {round((1 - value) * n)} |" for name, value in data["agreement"].items()]
    margins = ", ".join(f"{k}: {v:.1%}" for k, v in data["float_margin_fraction"].items())
    return lines + ["", f"Float top-1 margin (top-1 minus top-2 logit): median {data['float_margin_median']:.3f}; share of crops with margin {margins}.",
                    "Rounding the weights alone to int8 (per channel, round to nearest, activations float) already flips "
                    f"{round((1 - data['agreement']['int8 per-channel weights, float activations (weight-only fake quant)']) * n)} crops,"
                    " and rounding them to bfloat16 (8 significant bits per weight) flips "
                    f"{round((1 - data['agreement']['float weights rounded to bfloat16 (activations float32)']) * n)} (below 99 %):"
                    " on these crops the >= 99 % agreement target of issue 2 sits below the noise floor of 8-bit weights;"
                    " a smarter rounding (GPTQ, AdaRound) would have to beat bfloat16 weights to reach it.", ""]


def _vs_peer(row: dict) -> str:
    spread = row.get("vs_peer_range")
    return f"{row['vs_peer']:.3f}" + (f" ({spread[0]:.2f}-{spread[1]:.2f})" if spread else "")


def _minilm_ort(data: dict) -> list[str]:
    """The section written from benchmarks/onnx_dynamic_minilm.py's results (its own timing protocol)."""
    batches = list(data["latency"])
    lines = [f"## {data['model']} in ONNX Runtime, sequence {data['sequence']} ({data['threads']} threads)", "",
             "Written by `benchmarks/onnx_dynamic_minilm.py`: rounds of blocks of calls, alternating runners, in one process; "
             "median (p90) ms; x peer = median over rounds of (this row's median in the round / ONNX Runtime quantize_dynamic's median "
             "in the same round), with its range.", "",
             _machine_line(data),
             f"Evaluation: {data['evaluation']}.", "",
             "| row | size MB | " + " | ".join(f"batch {b} ms | x peer b{b}" for b in batches) + " | cosine to float |",
             "|---|---|" + "---|---|" * len(batches) + "---|"]
    for name in data["latency"][batches[0]]:
        cells = " | ".join(f"{data['latency'][b][name]['median_ms']:.3g} ({data['latency'][b][name]['p90_ms']:.3g}) | {_vs_peer(data['latency'][b][name])}" for b in batches)
        lines.append(f"| {name} | {data['sizes_mb'].get(name, float('nan')):.1f} | {cells} | {data['cosine_to_float'][name]:.5f} |")
    return lines + ["", "static-pt2e and dynamic-xnnpack keep the 30522-token embedding table float (their quantizers take Linear layers only), hence"
                    " their size. The ExecuTorch row runs the .pte in ExecuTorch's runtime (its own thread pool, which cannot use more than this machine's 2 cores) one"
                    " sample per call, so batch 32 is 32 calls; XNNPACK quantizes each layer input row by row at run time, hence its cosine.", ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    parser.add_argument("--render", action="store_true", help="only rewrite RESULTS.md from the stored results")
    parser.add_argument("--threads", default="2")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "THREADS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    batches = tuple(int(b) for b in args.batches.split(","))
    if args.child:
        child(args.child[0], int(args.child[1]), batches)
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    for model in ([] if args.render else args.models.split(",")):
        for threads in args.threads.split(","):
            env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, HF_HUB_OFFLINE="1")
            start = time.time()
            subprocess.run([sys.executable, __file__, "--child", model, threads, "--batches", args.batches], env=env, check=True)
            print(f"{model} with {threads} threads: {time.time() - start:.0f} s", flush=True)
    summarise()


if __name__ == "__main__":
    main()
