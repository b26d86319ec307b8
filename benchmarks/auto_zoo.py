"""How long does `quantwise auto` take, cold, and what does it choose? (issue 4: < 15 min each)

Each model runs `quantwise auto MODEL --json ...` with default options in its own process,
with an empty sensitivity cache (the data and weight caches are reused: they are downloads
and preprocessing, not search), and the wall-clock time of the whole command is recorded.
Run it alone on the machine: auto times its candidates.

    .venv/bin/python benchmarks/auto_zoo.py
    .venv/bin/python benchmarks/auto_zoo.py --models minilm-l6 --extra=--target=onnxruntime
    .venv/bin/python benchmarks/auto_zoo.py --models smollm2-135m   # the language model (perplexity budget, default +2 %)

Rows of models not run this time are kept from the last run (results/auto-runs.json).

Writes benchmarks/results/auto-MODEL.json (auto's own report) and benchmarks/AUTO_RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODELS = ("efficientnet-lite0", "minilm-l6")  # smollm2-135m runs too (--models smollm2-135m), about 20 min
LIMIT_S = 15 * 60  # issue 4's target per model


def isolated_cache(real: Path) -> Path:
    """A cache folder that links every entry of the real one except the sensitivity reports."""
    fresh = Path(tempfile.mkdtemp(prefix="qw-auto-cache-"))
    if real.is_dir():
        for entry in real.iterdir():
            if entry.name != "sensitivity":
                (fresh / entry.name).symlink_to(entry)
    return fresh


def run(model: str, extra: list[str], threads: int) -> dict:
    from quantwise.data.cache import cache_dir

    cache = isolated_cache(cache_dir())
    out = HERE / "results" / f"auto-{model}.json"
    recipe = cache / "recipe.json"
    cmd = [sys.executable, "-m", "quantwise", "--threads", str(threads), "auto", model, "--json", str(out), "--recipe-out", str(recipe), *extra]
    env = {**os.environ, "QUANTWISE_CACHE": str(cache), "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    shutil.rmtree(cache, ignore_errors=True)
    row = {"model": model, "command": "quantwise " + " ".join(cmd[3:]), "seconds": seconds, "exit_code": proc.returncode}
    if proc.returncode != 0:
        row["error"] = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return row
    report = json.loads(out.read_text())
    if "compare" in report:  # a language model: candidates are LLM recipes, the budget a perplexity increase in %
        return {**row, **_language_model(report)}
    chosen = next((c for c in report["candidates"] if c["name"] == report["chosen"]), None)
    row.update(chosen=report["chosen"], candidates=len(report["candidates"]), phases=report.get("seconds", {}),
               primary=report["primary"], float_metric=report["float_metric"], max_drop=report["max_drop"],
               chosen_metric=chosen and chosen["metric"], chosen_latency_ms=chosen and chosen["latency_ms"],
               chosen_size_mb=chosen and chosen["size_mb"], kept_float=chosen and chosen["kept_float"],
               float_latency_ms=min((c["latency_ms"] for c in report["candidates"] if c["recipe"] is None and c["latency_ms"]), default=None))
    return row


def _language_model(report: dict) -> dict:
    rows = report["compare"]["rows"]
    floats = [r for r in rows if r["method"] in ("float32", "bf16") and r.get("decode_tokens_per_s")]
    best_float = max(floats, key=lambda r: r["decode_tokens_per_s"]) if floats else None
    chosen = next((r for r in rows if r["method"] == report.get("chosen_row")), None)
    return {"chosen": report["chosen"], "candidates": sum(1 for r in rows if r["method"] not in ("float32", "bf16")),
            "phases": {}, "primary": "perplexity", "float_metric": rows[0]["perplexity"], "max_drop": f"+{report['max_drop_pct']:g} %",
            "chosen_metric": chosen and chosen["perplexity"], "chosen_size_mb": chosen and chosen["size_mb"],
            "chosen_tokens_per_s": chosen and chosen["decode_tokens_per_s"], "float_tokens_per_s": best_float and best_float["decode_tokens_per_s"],
            "float_name": best_float and f"{best_float['method']} {best_float['runtime']}", "kept_float": report.get("kept_higher_precision", []),
            "reason": report["reason"], "tradeoffs": report.get("tradeoffs", []),
            "candidate_rows": [{k: r.get(k) for k in ("method", "runtime", "perplexity", "delta_pct", "decode_tokens_per_s", "size_mb", "error")} for r in rows]}


def summarise(rows: list[dict]) -> str:
    from quantwise.versions import machine, versions

    lines = ["# `quantwise auto`: wall-clock time and choice (issue 4)", "",
             "Written by `.venv/bin/python benchmarks/auto_zoo.py`: default options, one process per model, empty sensitivity",
             "cache, nothing else running. Target: under 15 minutes per model on 2 cores.", "",
             f"Machine: {machine()['cpu']}, {machine()['cores']} cores; versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()), "",
             "| model | wall clock | within 15 min | candidates | chosen | metric (float) | budget | latency ms (best float) | size MB | kept float |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["exit_code"] != 0:
            lines.append(f"| {r['model']} | {r['seconds'] / 60:.1f} min | failed | | {r.get('error', '')} | | | | | |")
            continue
        if "chosen_tokens_per_s" in r:
            speed = "" if r["chosen_tokens_per_s"] is None else f"{r['chosen_tokens_per_s']:.1f} tokens/s ({r['float_name']}: {r['float_tokens_per_s']:.1f})"
            metric = "" if r["chosen_metric"] is None else f"perplexity {r['chosen_metric']:.3f} ({r['float_metric']:.3f})"
            size = "" if r["chosen_size_mb"] is None else f"{r['chosen_size_mb']:.1f}"
            lines.append(f"| {r['model']} | {r['seconds'] / 60:.1f} min | {'yes' if r['seconds'] < LIMIT_S else 'no (no target for LLMs)'} | {r['candidates']} | "
                         f"{r['chosen'] or 'none within budget'} | {metric} | {r['max_drop']} | {speed} | {size} | {'; '.join(r['kept_float'])} |")
            continue
        metric = "" if r["chosen_metric"] is None else f"{r['primary']} {r['chosen_metric']:.4f} ({r['float_metric']:.4f})"
        latency = "" if r["chosen_latency_ms"] is None else f"{r['chosen_latency_ms']:.2f} ({r['float_latency_ms']:.2f})"
        size = "" if r["chosen_size_mb"] is None else f"{r['chosen_size_mb']:.1f}"
        lines.append(f"| {r['model']} | {r['seconds'] / 60:.1f} min | {'yes' if r['seconds'] < LIMIT_S else '**no**'} | {r['candidates']} | "
                     f"{r['chosen'] or 'none within budget'} | {metric} | {r['max_drop']} | {latency} | {size} | {', '.join(r['kept_float'] or []) or '-'} |")
    for r in rows:
        if r["exit_code"] == 0 and "candidate_rows" in r:
            lines += ["", f"{r['model']}: every candidate, measured by auto (perplexity on the evaluation articles, decode at batch 1):", "",
                      "| row | runtime | perplexity | delta | decode tokens/s | size MB |", "|---|---|---|---|---|---|"]
            for c in r["candidate_rows"]:
                num = lambda v, f: "" if v is None else format(v, f)  # noqa: E731
                lines.append(f"| {c['method']} | {c['runtime']} | {num(c['perplexity'], '.3f')} | {num(c['delta_pct'], '+.2f')} | "
                             f"{num(c['decode_tokens_per_s'], '.1f')} | {num(c['size_mb'], '.0f')} |" + (f" {c['error']}" if c.get("error") else ""))
            lines += ["", f"Why: {r['reason']}"]
    lines += ["", "Phases (seconds, from auto's own report):", ""]
    lines += [f"- {r['model']}: " + ", ".join(f"{k} {v:.0f}" for k, v in r.get("phases", {}).items()) for r in rows if r["exit_code"] == 0 and r.get("phases")]
    lines += ["", "Commands:", ""] + [f"- `{r['command']}`" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--extra", default="", help="extra auto options, comma-separated (e.g. --extra=--objective,size)")
    args = parser.parse_args()
    extra = [a for a in args.extra.split(",") if a]
    models = args.models.split(",")
    previous = HERE / "results" / "auto-runs.json"
    rows = [r for r in json.loads(previous.read_text()) if r["model"] not in models] if previous.is_file() else []  # other models' last runs
    for model in models:
        rows.append(run(model, extra, args.threads))
        print(f"{model}: {rows[-1]['seconds'] / 60:.1f} min, exit {rows[-1]['exit_code']}", flush=True)
        (HERE / "results" / "auto-runs.json").write_text(json.dumps(rows, indent=2) + "\n")
        (HERE / "AUTO_RESULTS.md").write_text(summarise(rows))
    print((HERE / "AUTO_RESULTS.md").read_text())


if __name__ == "__main__":
    main()
