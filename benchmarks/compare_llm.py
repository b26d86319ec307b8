"""Language-model benchmark: ``quantwise compare smollm2-135m`` plus llama.cpp on the same GGUF,
the same evaluation token ids and windows, the same thread count, in one process.

    .venv/bin/python benchmarks/compare_llm.py                  # 2 threads, every LLM preset
    .venv/bin/python benchmarks/compare_llm.py --recipes int4-rtn,int4-hqq --eval-tokens 20480

llama.cpp rows need ``pip install -e ".[llamacpp]"`` (benchmark-only; builds from
source). Writes benchmarks/results/smollm2-135m-t<threads>.json and benchmarks/LLM_RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from quantwise.findings import warning_text
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
INT8_FLOAT32 = "weight-only:bits=8,group_size=None,activations=float32"  # int8 weights, float32 activations
CAVEATS = [
    "- The model's weights were stored as Q4_1 (4-bit, groups of 32 along the inputs): int4 with group 32 would reproduce"
    " them almost exactly, so the honest int4 figures are at group 64; group 128 does not divide the hidden size 576 and is refused.",
    "- Decode speed depends on the kernel, not on the algorithm that chose the codes: int4 RTN/HQQ/GPTQ/AWQ share one timing.",
    "- int8 weight-only runs with bfloat16 activations: compiled, Inductor lowers its matmul to the int8 x bf16 CPU kernel"
    " (`_weight_int8pack_mm`); with float32 activations (the last row) the matmul stays float on a converted weight and"
    " decodes slower than bf16 (Inductor's `freezing=True` did not change that: 15.2 vs 15.2 tokens/s, measured once).",
    "- Naive w8a8 costs only a few percent because torchao quantizes activations per token; ZOO.md's 22.6 -> 88.7 is the"
    " legacy per-tensor dynamic int8.",
    "- Peak memory: resident-set growth over loading the float model from the cache and quantizing it (sampled every"
    " 10 ms), as `quantwise quantize` does: each decoder block's float weights are read from the file only when"
    " quantization reaches it and freed once it is quantized, so the float model is never resident as a whole. Before"
    " that change (previous runs) the whole float model was read first: int4-gptq 889-1012 MB, int4-awq 855-986,"
    " int4-awq-gptq 942-1034 (over the 958 MB limit in some runs); now 627 / 699 / 686.",
    "- Decode speed varies between runs of the same code by more than the int4 target's margin: bf16 compiled 31.4 tokens/s"
    " in the previous run, 38.4 in this one (int4 67.3 vs 75.2); judge ratios from one run, and see the head-to-head"
    " section when present.",
    "- llama.cpp timings are only valid on an idle machine (its threads spin-wait); this run was alone on the 2 cores.",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--recipes", default=None, help="comma-separated LLM recipes (default: every LLM preset)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eval-tokens", type=int, default=24576)
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--no-llamacpp", action="store_true")
    parser.add_argument("--render", action="store_true", help="only rewrite LLM_RESULTS.md from the stored results (and head-to-head) JSON")
    args = parser.parse_args()
    if args.render:
        data = json.loads((RESULTS / f"{args.model}-t{args.threads}.json").read_text())
        data["targets"] = targets(data, head_to_head(args))
        (RESULTS / f"{args.model}-t{args.threads}.json").write_text(json.dumps(data, indent=2))
        (HERE / "LLM_RESULTS.md").write_text(markdown(data, head_to_head(args)))
        print(f"wrote {HERE / 'LLM_RESULTS.md'}")
        return
    os.environ["OMP_NUM_THREADS"] = str(args.threads)

    import torch

    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(HERE))
    from quantwise.config import LLM_COMPARE_DEFAULTS
    from quantwise.llm.compare import LLMCompareOptions, compare_lm
    from quantwise.report.llm_table import print_llm_compare

    recipes = tuple(args.recipes.split(",")) if args.recipes else (*LLM_COMPARE_DEFAULTS, INT8_FLOAT32)
    start = time.time()
    report = compare_lm(args.model, LLMCompareOptions(recipes=recipes, context=args.context, eval_tokens=args.eval_tokens))
    print_llm_compare(report)
    data = report.to_dict()
    data["peers"] = [] if args.no_llamacpp else llamacpp_rows(args)
    data["seconds"] = time.time() - start
    data["targets"] = targets(data, head_to_head(args))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{args.model}-t{args.threads}.json"
    out.write_text(json.dumps(data, indent=2))
    (HERE / "LLM_RESULTS.md").write_text(markdown(data, head_to_head(args)))
    print(json.dumps({"peers": data["peers"], "targets": data["targets"]}, indent=2))
    print(f"wrote {out} and {HERE / 'LLM_RESULTS.md'}")


def llamacpp_rows(args) -> list[dict]:
    from quantwise.llm.model import load_language_model
    from quantwise.llm.perplexity import token_ids, windows

    try:
        from llamacpp_peer import measure_llamacpp
    except ImportError as err:
        return [{"runtime": "llama.cpp", "error": f"not measured: {err}"}]
    lm = load_language_model(args.model)
    ids = token_ids(lm.tokenizer, lm.text.evaluation, args.eval_tokens)
    try:
        return measure_llamacpp(lm.gguf_path, windows(ids, args.context, args.eval_tokens), threads=args.threads, prompt_ids=ids[:32].tolist())
    except RuntimeError as err:
        return [{"runtime": "llama.cpp", "error": str(err)}]


def head_to_head(args) -> dict | None:
    """benchmarks/llm_head_to_head.py's results for this model and thread count, if it was run."""
    path = RESULTS / f"{args.model}-h2h-t{args.threads}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def targets(data: dict, h2h: dict | None = None) -> dict:
    rows = {r["method"]: r for r in data["rows"] if not r.get("error")}
    floats = [r for r in data["rows"] if r["method"] in ("float32", "bf16") and r.get("decode_tokens_per_s")]
    best_float = max(r["decode_tokens_per_s"] for r in floats)
    out = {}
    if "int8-weight-only" in rows:
        d = rows["int8-weight-only"]["delta_pct"]
        out["int8 weight-only: delta perplexity <= 0.5%"] = {"value": round(d, 3), "met": d <= 0.5}
    int4 = {m: r for m, r in rows.items() if m.startswith("int4-")}
    if "int4-rtn" in int4 and len(int4) > 1:
        best = min((r for m, r in int4.items() if m != "int4-rtn"), key=lambda r: r["delta_pct"])
        rtn = int4["int4-rtn"]["delta_pct"]
        out["int4 g64: best algorithm's delta <= half of RTN's"] = {"value": f"{best['method']} {best['delta_pct']:.2f}% vs RTN {rtn:.2f}%", "met": best["delta_pct"] <= rtn / 2}
    if int4:
        speed = max(r["decode_tokens_per_s"] or 0 for r in int4.values())
        out["int4 decode >= 2x best float decode (this table, one pass per row)"] = {"value": f"{speed:.1f} vs {best_float:.1f} tokens/s ({speed / best_float:.2f}x)", "met": speed >= 2 * best_float}
    if h2h:
        ratio = h2h["median_ratio_vs_bf16_compiled"]["int4-rtn compiled"]
        out["int4 decode >= 2x best float decode (head to head, median of per-round ratios)"] = {
            "value": f"{ratio:.2f}x bf16 compiled over {len(h2h['rounds'])} alternating rounds (float32 compiled "
                     f"{h2h['median_ratio_vs_bf16_compiled']['float32 compiled']:.2f}x, so bf16 compiled is the best float)",
            "met": ratio >= 2 and h2h["median_ratio_vs_bf16_compiled"]["float32 compiled"] <= 1}
    peaks = [r for r in rows.values() if r.get("peak_quantize_mb") is not None]
    if peaks:
        over = [f"{r['method']} {r['peak_quantize_mb']:.0f} MB > {1.5 * data['float_mb'] + (r.get('block_input_mb') or 0):.0f}"
                for r in peaks if r["peak_quantize_mb"] > 1.5 * data["float_mb"] + (r.get("block_input_mb") or 0)]
        worst = max(peaks, key=lambda r: r["peak_quantize_mb"] - (r.get("block_input_mb") or 0))
        out["peak memory while loading + quantizing <= 1.5x float + one block's calibration input"] = {
            "value": "; ".join(over) if over else f"all {len(peaks)} recipes within; closest {worst['method']} {worst['peak_quantize_mb']:.0f} MB "
                     f"vs {1.5 * data['float_mb'] + (worst.get('block_input_mb') or 0):.0f} MB (float {data['float_mb']:.0f} MB)",
            "met": not over}
    return out


def markdown(data: dict, h2h: dict | None = None) -> str:
    lines = [
        f"# {data['model']}: language-model benchmark ({data['threads']} threads)",
        "",
        f"Generated by `.venv/bin/python benchmarks/compare_llm.py` in {data['seconds'] / 60:.0f} min. Machine: {data['machine']}. Versions: {data['versions']}.",
        "",
        f"- text: {data['text']}",
        f"- perplexity: {data['perplexity_setting']}",
        f"- speed: {data['decode_setting']}",
        "",
        "| method | runtime | bits | group | size MB | perplexity | Δ ppl % | decode tok/s | prefill tok/s | quantize s | peak MB quantizing |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    fmt = lambda v, d=1: "–" if v is None else f"{v:.{d}f}"  # noqa: E731
    for r in data["rows"]:
        if r.get("error"):
            lines.append(f"| {r['method']} | n/a: {r['error']} |||||||||| ")
            continue
        lines.append(f"| {r['method']} | {r['runtime']} | {r['bits']} | {r['group']} | {fmt(r['size_mb'])} | {fmt(r['perplexity'], 3)} | {fmt(r['delta_pct'], 2)} | {fmt(r['decode_tokens_per_s'])} | {fmt(r['prefill_tokens_per_s'])} | {fmt(r['quantize_s'])} | {fmt(r['peak_quantize_mb'], 0)} |")
    float_ppl = next(r["perplexity"] for r in data["rows"] if r["method"] == "float32")
    for p in data["peers"]:
        if p.get("error"):
            lines.append(f"| llama.cpp | {p['error']} |||||||||| ")
            continue
        delta = 100 * (p["perplexity"] / float_ppl - 1)
        lines.append(f"| llama.cpp {p['method']} | {p['runtime']} | {p['bits']} | 32 | {fmt(p['size_mb'])} | {fmt(p['perplexity'], 3)} | {delta:.2f} (vs our float32) | {fmt(p['decode_tokens_per_s'])} | {fmt(p['prefill_tokens_per_s'])} | – | – |")
    lines += ["", "Notes per row:", ""]
    for r in data["rows"]:
        for n in r.get("notes", []) + [f"**warning:** {warning_text(w)}" for w in r.get("warnings", [])]:
            lines.append(f"- {r['method']}: {n}")
    lines += ["", f"Best: {data['best']}", "", "## Caveats", "", *CAVEATS, ""]
    if h2h:
        lines += ["## Decode head to head (`benchmarks/llm_head_to_head.py`)", "",
                  f"Compiled decoders of every model built once in one process, then timed in alternation, {len(h2h['rounds'])} rounds with the "
                  f"order rotated each round; {h2h['tokens']} tokens after a {h2h['prompt_tokens']}-token prompt, batch 1, {h2h['threads']} threads.", "",
                  "| model | median tokens/s | median ratio to bf16 compiled | per round |", "|---|---|---|---|"]
        for name, rate in h2h["median_tokens_per_s"].items():
            ratio = h2h["median_ratio_vs_bf16_compiled"].get(name)
            lines.append(f"| {name} | {rate:.1f} | {'1 (baseline)' if ratio is None else f'{ratio:.2f}'} | {', '.join(f'{r[name]:.1f}' for r in h2h['rounds'])} |")
        lines.append("")
    lines += ["## Targets (issue 3)", ""]
    for name, t in data["targets"].items():
        lines.append(f"- {name}: {t['value']} — {'met' if t['met'] else '**not met**'}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
