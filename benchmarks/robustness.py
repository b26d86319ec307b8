"""The whole robustness suite, as a user meets it: every generated bad input run as its own
``python -m quantwise`` process, plus signals at several moments and concurrent writers.

Writes benchmarks/results/robustness.json and benchmarks/ROBUSTNESS_RESULTS.md (counts per category,
every failure with its command and what went wrong). The CI subset is tests/robustness/.

    .venv/bin/python benchmarks/robustness.py               # everything, 2 processes at a time (~30 min)
    .venv/bin/python benchmarks/robustness.py --fast        # without the language-model cases
"""
from __future__ import annotations

import argparse
import collections
import json
import signal
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "tests" / "robustness"), str(HERE.parent / "src")]

from cases import all_cases, template_artifact  # noqa: E402
from harness import run_case, subprocess_runner  # noqa: E402
from processes import concurrent, interrupted  # noqa: E402

OUT_JSON = HERE / "results" / "robustness.json"
OUT_MD = HERE / "ROBUSTNESS_RESULTS.md"


def process_runs(root: Path) -> list[dict]:
    """Signals at several moments of quantize / export, and two or three writers of one path."""
    runs = []
    quantize = ["quantize", "mnist-cnn", "--recipe", "static-fx", "--out", "art", "--no-eval"]
    for signum in (signal.SIGINT, signal.SIGTERM):
        for after_s in (1.0, 3.0, 4.5, 6.0, 7.5, 9.0):
            problems = interrupted(quantize, root / f"sig-{signum}-{after_s}", after_s, signum, "art")
            runs.append({"id": f"{signal.Signals(signum).name} quantize after {after_s} s", "problems": problems})
    for n in (2, 3):
        problems = concurrent(["quantize", "mnist-cnn", "--recipe", "dynamic", "--out", "art", "--no-eval"], root / f"conc-{n}", "art", n)
        runs.append({"id": f"{n} concurrent quantize to one path", "problems": problems})
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fast", action="store_true", help="leave out the language-model cases")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    import torch

    from quantwise.versions import machine, versions

    cases = [c for c in all_cases() if not (args.fast and c.slow)]
    template_artifact()  # built once, before the processes start
    runner = subprocess_runner()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="quantwise-robustness-") as tmp:
        root = Path(tmp)
        with ThreadPoolExecutor(args.workers) as pool:
            outcomes = list(pool.map(lambda c: run_case(c, root / c.id, runner), cases))
        runs = process_runs(root / "processes")
    seconds = time.perf_counter() - start
    by_category: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for o in outcomes:
        by_category[o.case.category]["ok" if o.ok else "failed"] += 1
        by_category[o.case.category]["exit 0" if o.code == 0 else f"exit {o.code}"] += 1
    failures = [{"id": o.case.id, "args": o.case.args, "problems": o.problems, "error": o.error_line} for o in outcomes if not o.ok]
    result = {"cases": len(outcomes), "failed": len(failures), "by_category": {k: dict(v) for k, v in by_category.items()},
              "failures": failures, "processes": runs, "seconds": seconds, "versions": versions(), "machine": machine(),
              "torch_threads": torch.get_num_threads()}
    OUT_JSON.parent.mkdir(exist_ok=True)
    OUT_JSON.write_text(json.dumps(result, indent=2) + "\n")
    OUT_MD.write_text(render(result))
    print(f"{len(outcomes)} cases, {len(failures)} failed; {len(runs)} process runs, {sum(bool(r['problems']) for r in runs)} failed; {seconds / 60:.1f} min")


def render(r: dict) -> str:
    lines = ["# Robustness: every command over generated bad inputs", "",
             "Written by `benchmarks/robustness.py`: each case is its own `python -m quantwise` process in an empty folder "
             "with the files it needs. A case passes when the run ends with exit code 0 or 2, with no traceback and no "
             "'unexpected' error, at most one `error:` line (exactly one when it fails), no file left behind by a failed run, "
             "and no file that existed before changed or removed (except what the user asked to replace). Cases whose input "
             "turns out valid may succeed and write their output. The CI subset (`tests/robustness/`, in one process) runs "
             "all but the language-model cases.", "",
             f"Machine: {r['machine'].get('cpu')} ({r['machine'].get('cpu_capability')}, native bf16 {r['machine'].get('native_bf16')}); "
             f"torch {r['versions'].get('torch')}, torchao {r['versions'].get('torchao')}; {r['seconds'] / 60:.1f} min.", "",
             f"**{r['cases']} cases, {r['failed']} failed.**", "", "| category | cases | passed | failed | exit 0 | exit 2 | other exit |", "|---|---|---|---|---|---|---|"]
    for cat, c in sorted(r["by_category"].items()):
        other = sum(v for k, v in c.items() if k.startswith("exit") and k not in ("exit 0", "exit 2"))
        lines.append(f"| {cat} | {c.get('ok', 0) + c.get('failed', 0)} | {c.get('ok', 0)} | {c.get('failed', 0)} | {c.get('exit 0', 0)} | {c.get('exit 2', 0)} | {other} |")
    lines += ["", "## Processes: signals at several moments, concurrent writers", "", "| run | result |", "|---|---|"]
    lines += [f"| {p['id']} | {'ok' if not p['problems'] else '; '.join(p['problems'])} |" for p in r["processes"]]
    if r["failures"]:
        lines += ["", "## Failures", "", "| case | command | problems |", "|---|---|---|"]
        lines += [f"| {f['id']} | `{' '.join(f['args'])[:120]}` | {'; '.join(f['problems'])[:200]} |" for f in r["failures"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
