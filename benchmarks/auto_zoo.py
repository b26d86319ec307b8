"""How long does `quantwise auto` take, cold, and what does it choose? (issue 4: < 15 min each)

Each model runs `quantwise auto MODEL --json ...` with default options in its own process,
with an empty sensitivity cache (the data and weight caches are reused: they are downloads
and preprocessing, not search), and the wall-clock time of the whole command is recorded.
Run it alone on the machine: auto times its candidates.

    .venv/bin/python benchmarks/auto_zoo.py
    .venv/bin/python benchmarks/auto_zoo.py --models minilm-l6 --extra=--target=onnxruntime

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
MODELS = ("efficientnet-lite0", "minilm-l6")
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
    chosen = next((c for c in report["candidates"] if c["name"] == report["chosen"]), None)
    row.update(chosen=report["chosen"], candidates=len(report["candidates"]), phases=report.get("seconds", {}),
               primary=report["primary"], float_metric=report["float_metric"], max_drop=report["max_drop"],
               chosen_metric=chosen and chosen["metric"], chosen_latency_ms=chosen and chosen["latency_ms"],
               chosen_size_mb=chosen and chosen["size_mb"], kept_float=chosen and chosen["kept_float"],
               float_latency_ms=min((c["latency_ms"] for c in report["candidates"] if c["recipe"] is None and c["latency_ms"]), default=None))
    return row


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
        metric = "" if r["chosen_metric"] is None else f"{r['primary']} {r['chosen_metric']:.4f} ({r['float_metric']:.4f})"
        latency = "" if r["chosen_latency_ms"] is None else f"{r['chosen_latency_ms']:.2f} ({r['float_latency_ms']:.2f})"
        size = "" if r["chosen_size_mb"] is None else f"{r['chosen_size_mb']:.1f}"
        lines.append(f"| {r['model']} | {r['seconds'] / 60:.1f} min | {'yes' if r['seconds'] < LIMIT_S else '**no**'} | {r['candidates']} | "
                     f"{r['chosen'] or 'none within budget'} | {metric} | {r['max_drop']} | {latency} | {size} | {', '.join(r['kept_float'] or []) or '-'} |")
    lines += ["", "Phases (seconds, from auto's own report):", ""]
    lines += [f"- {r['model']}: " + ", ".join(f"{k} {v:.0f}" for k, v in r.get("phases", {}).items()) for r in rows if r["exit_code"] == 0]
    lines += ["", "Commands:", ""] + [f"- `{r['command']}`" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--extra", default="", help="extra auto options, comma-separated (e.g. --extra=--objective,size)")
    args = parser.parse_args()
    extra = [a for a in args.extra.split(",") if a]
    rows = []
    for model in args.models.split(","):
        rows.append(run(model, extra, args.threads))
        print(f"{model}: {rows[-1]['seconds'] / 60:.1f} min, exit {rows[-1]['exit_code']}", flush=True)
        (HERE / "results" / "auto-runs.json").write_text(json.dumps(rows, indent=2) + "\n")
        (HERE / "AUTO_RESULTS.md").write_text(summarise(rows))
    print((HERE / "AUTO_RESULTS.md").read_text())


if __name__ == "__main__":
    main()
