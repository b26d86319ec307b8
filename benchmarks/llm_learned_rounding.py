"""Learned rounding for language models: ``int4-signround`` beside ``int4-rtn`` in one
``quantwise compare`` run (same evaluation windows, runtime, threads and process), against the
recorded rows of the other int4 algorithms and, where it was run, AutoRound (the peer).

    .venv/bin/python benchmarks/llm_learned_rounding.py                 # 2 threads, ~25 min (native bf16; ~55 without)
    .venv/bin/python benchmarks/llm_learned_rounding.py --recipes int4-rtn,int4-awq-signround   # AWQ scales, then SignRound
    .venv/bin/python benchmarks/llm_learned_rounding.py --recipes int4-rtn,int4-awq-signround --float-head
                                      # the learned recipe with its output layer left float (lm_head_bits=none), as AutoRound leaves it
    .venv/bin/python benchmarks/llm_learned_rounding.py --render        # only rewrite the markdown

Writes benchmarks/results/smollm2-135m-<learned recipe>-t<threads>.json (e.g. ...-signround-t2.json) and
benchmarks/LLM_ROUNDING_RESULTS.md, which shows every learned-rounding run recorded for the model.
AutoRound's row comes from benchmarks/results/autoround-smollm2-135m.json (benchmarks/autoround_peer.py,
a benchmark-only dependency) when that file exists.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from quantwise.config import parse_recipe, recipe_name
from quantwise.findings import warning_text

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
RECORDED = ("int4-hqq", "int4-gptq", "int4-awq", "int4-awq-gptq")  # from benchmarks/compare_llm.py's last full run
LEARNED = ("int4-signround", "int4-awq-signround")
TARGET_PCT = 6.0
TARGET_MINUTES = 30.0
FLOAT_HEAD = " (output layer float)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--recipes", default="int4-rtn,int4-signround")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eval-tokens", type=int, default=24576)
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--float-head", action="store_true",
                        help="leave the learned recipe's output layer float (lm_head_bits=none), as AutoRound does: the like-for-like peer comparison")
    parser.add_argument("--render", action="store_true", help="only rewrite the markdown from the stored JSON")
    args = parser.parse_args()
    recipes = args.recipes.split(",")
    learned = [r for r in recipes if r in LEARNED]
    if len(learned) != 1:
        parser.error(f"--recipes names one learned-rounding recipe ({', '.join(LEARNED)}), beside int4-rtn")
    out = run_path(args.model, learned[0], args.threads, args.float_head)
    specs = [float_head_spec(r) if args.float_head and r in LEARNED else r for r in recipes]
    if args.render:
        data = json.loads(out.read_text())
    else:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        import torch

        from quantwise.llm.compare import LLMCompareOptions, compare_lm

        torch.set_num_threads(args.threads)
        start = time.time()
        report = compare_lm(args.model, LLMCompareOptions(recipes=tuple(specs), context=args.context, eval_tokens=args.eval_tokens))
        data = report.to_dict()
        for row in data["rows"]:  # the float-head spec's row is named after its preset
            if args.float_head and row["method"] == recipe_name(parse_recipe(float_head_spec(learned[0]))):
                row["method"] = f"{learned[0]}{FLOAT_HEAD}"
        data["seconds"] = time.time() - start
    data["recorded"] = recorded_rows(args)
    data["peer"] = peer_row(args.model)
    data["targets"] = targets(data)
    RESULTS.mkdir(exist_ok=True)
    out.write_text(json.dumps(data, indent=2))
    others = [json.loads(p.read_text()) for m in LEARNED for head in (False, True)
              if (m, head) != (learned[0], args.float_head) and (p := run_path(args.model, m, args.threads, head)).is_file()]
    (HERE / "LLM_ROUNDING_RESULTS.md").write_text(markdown(data, others))
    print(json.dumps(data["targets"], indent=2))
    print(f"wrote {out} and {HERE / 'LLM_ROUNDING_RESULTS.md'}")


def run_path(model: str, recipe: str, threads: int, float_head: bool = False) -> Path:
    return RESULTS / f"{model}-{recipe.removeprefix('int4-')}{'-floathead' if float_head else ''}-t{threads}.json"


def float_head_spec(preset: str) -> str:
    """The preset with its output layer float: ``weight-only:algorithm=...,lm_head_bits=none``."""
    return f"weight-only:algorithm={parse_recipe(preset).algorithm},lm_head_bits=none"


def is_learned(method: str) -> bool:
    return method.removesuffix(FLOAT_HEAD) in LEARNED


def recorded_rows(args) -> list[dict]:
    path = RESULTS / f"{args.model}-t{args.threads}.json"
    if not path.is_file():
        return []
    full = json.loads(path.read_text())
    where = f"{full['machine'].get('cpu', '?')}, quantwise of {path.name}"
    return [{**r, "recorded_on": where} for r in full["rows"] if r["method"] in RECORDED]


def peer_row(model: str) -> dict | None:
    path = RESULTS / f"autoround-{model}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def targets(data: dict) -> dict:
    rows = {r["method"]: r for r in data["rows"] if not r.get("error")}
    out = {}
    sr = next((r for m, r in rows.items() if is_learned(m)), None)
    if sr is None:
        return out
    out[f"smollm2-135m int4 g64: perplexity increase <= {TARGET_PCT:g} %"] = {"value": f"{sr['delta_pct']:.2f} %", "met": sr["delta_pct"] <= TARGET_PCT}
    minutes = sr["quantize_s"] / 60
    out[f"quantize in under {TARGET_MINUTES:g} minutes on {data['threads']} threads"] = {"value": f"{minutes:.1f} min", "met": minutes < TARGET_MINUTES}
    limit = 1.5 * data["float_mb"] + (sr.get("block_input_mb") or 0)
    out["peak memory while loading + quantizing <= 1.5x float + one block's calibration input"] = {
        "value": f"{sr['peak_quantize_mb']:.0f} MB vs {limit:.0f} MB", "met": sr["peak_quantize_mb"] <= limit}
    best_other = min((r for r in [*data.get("recorded", []), *rows.values()] if not is_learned(r["method"]) and r["method"] != "int4-rtn"
                      and r.get("delta_pct") is not None and r["method"].startswith("int4-")), key=lambda r: r["delta_pct"], default=None)
    if best_other is not None:
        out["better than every other int4 algorithm here"] = {"value": f"{sr['delta_pct']:.2f} % vs {best_other['method']} {best_other['delta_pct']:.2f} % (recorded)",
                                                             "met": sr["delta_pct"] < best_other["delta_pct"]}
    peer = data.get("peer")
    p = (peer or {}).get("perplexity", {}).get("autoround_quantwise_int4_runtime")
    if p is not None:  # AutoRound's codes on quantwise's int4 runtime (its output layer float; quantwise's int8 unless --float-head)
        same = "output layers float in both" if sr["method"].endswith(FLOAT_HEAD) else "quantwise's output layer int8, AutoRound's float"
        out[f"at least as accurate as AutoRound (same bits, same runtime; {same})"] = {"value": f"{sr['perplexity']:.3f} vs AutoRound {p:.3f}", "met": sr["perplexity"] <= p}
    return out


def markdown(data: dict, others: list[dict]) -> str:
    def fmt(v, digits=1):
        return "–" if v is None else f"{v:.{digits}f}"

    lines = [
        f"# Learned rounding for language models: {data['model']}",
        "",
        "Written by `benchmarks/llm_learned_rounding.py` (one `quantwise compare` run; the other int4 algorithms' rows are the",
        "recorded ones of `benchmarks/compare_llm.py`, same evaluation windows and runtime, marked *recorded*).",
        "",
        f"- machine: {data['machine'].get('cpu', '')}, {data['threads']} threads; versions: " + ", ".join(f"{k} {v}" for k, v in data["versions"].items()),
        f"- perplexity: {data['perplexity_setting']}",
        "",
        "| method | runtime | size MB | perplexity | Δ ppl % | decode tok/s | quantize s | peak MB quantizing |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        if r.get("error"):
            lines.append(f"| {r['method']} | {r['runtime']} | error: {r['error']} | | | | | |")
            continue
        lines.append(f"| {r['method']} | {r['runtime']} | {fmt(r['size_mb'])} | {fmt(r['perplexity'], 3)} | {fmt(r['delta_pct'], 2)} | "
                     f"{fmt(r['decode_tokens_per_s'])} | {fmt(r['quantize_s'])} | {fmt(r['peak_quantize_mb'], 0)} |")
    for other in others:  # the other learned-rounding runs, each its own compare run on the same windows
        for r in other["rows"]:
            if is_learned(r["method"]) and not r.get("error"):
                lines.append(f"| {r['method']} (*run of {other['machine'].get('cpu', '?')}, {other['threads']} threads*) | {r['runtime']} | {fmt(r['size_mb'])} | "
                             f"{fmt(r['perplexity'], 3)} | {fmt(r['delta_pct'], 2)} | {fmt(r['decode_tokens_per_s'])} | {fmt(r['quantize_s'])} | "
                             f"{fmt(r['peak_quantize_mb'], 0)} |")
    peer_ppl = (data.get("peer") or {}).get("perplexity", {})
    float_ppl = peer_ppl.get("float32")
    for key, runtime in (("autoround_quantwise_int4_runtime", "quantwise int4 runtime"), ("autoround_fake_quant_float32", "float32 fake-quant")):
        if key in peer_ppl and float_ppl:
            lines.append(f"| AutoRound 0.16.1 (*peer; output layer float*) | {runtime} | – | {peer_ppl[key]:.3f} | {100 * (peer_ppl[key] / float_ppl - 1):.2f} | – | – | – |")
    for r in data.get("recorded", []):
        lines.append(f"| {r['method']} (*recorded*) | {r['runtime']} | {fmt(r['size_mb'])} | {fmt(r['perplexity'], 3)} | {fmt(r['delta_pct'], 2)} | "
                     f"{fmt(r['decode_tokens_per_s'])} | {fmt(r['quantize_s'])} | {fmt(r['peak_quantize_mb'], 0)} |")
    if data.get("recorded"):
        lines += ["", f"*Recorded* rows: {data['recorded'][0].get('recorded_on', 'an earlier run')}. Their perplexity is comparable (same windows, "
                  "same model, deterministic); their size, speed, time and memory are not (another CPU, and an older layout that kept the "
                  "token table float beside an int8 output layer: 152 MB instead of 95 MB)."]
    peer = data.get("peer")
    if peer:
        lines += ["", "## AutoRound (peer, benchmarks/autoround_peer.py)", "", f"- status: {peer.get('status', 'complete')}",
                  f"- perplexity: {json.dumps(peer.get('perplexity'))}", f"- settings: {json.dumps(peer.get('autoround_settings'))}",
                  f"- full record: benchmarks/results/autoround-{data['model']}.json"]
    for run in [data, *others]:
        learned = next((r["method"] for r in run["rows"] if is_learned(r["method"])), "?")
        lines += ["", f"## Targets, {learned}", ""]
        for name, t in run["targets"].items():
            lines.append(f"- {name}: {t['value']} — {'met' if t['met'] else '**not met**'}")
        lines += [f"- caveat: {c}" for c in run.get("caveats", [])]
    lines += ["", "## Notes", ""]
    for r in data["rows"]:
        for n in r.get("notes", []) + [warning_text(w) for w in r.get("warnings", [])]:
            lines.append(f"- {r['method']}: {n}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
