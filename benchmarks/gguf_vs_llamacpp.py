"""quantwise's GGUF files against llama.cpp's own quantizer, everything measured in llama.cpp.

    bash benchmarks/build_llamacpp.sh                 # once: llama.cpp's tools from llama-cpp-python's source
    PYTHONPATH=src .venv/bin/python benchmarks/gguf_vs_llamacpp.py [--types Q8_0,Q4_0,Q4_K_M] \
        [--algorithms reference,searched,gptq,awq-gptq] [--chunks 40] [--rounds 3]

Same float model for everyone: smollm2-135m's float32 weights (the zoo's Q4_1 GGUF dequantized),
written once by quantwise's GGUF writer as an all-F32 GGUF. Then, for each file type:

- llama.cpp: ``llama-quantize`` from that F32 file, without and with an importance matrix
  (``llama-imatrix`` on the calibration articles only, 512-token chunks);
- quantwise: ``gguf:type=T,algorithm=A`` for each algorithm, calibrated on the same calibration
  articles (128 windows x 512 tokens), written with ``export --to gguf``'s writer.

Every file is measured by llama.cpp's own tools on 2 threads: ``llama-perplexity`` on the
evaluation articles (never seen by any calibration) with ``--kl-divergence`` against the F32
file's logits (perplexity, mean KL divergence, same-top-token rate, as the tool reports them),
and ``llama-bench`` for prefill (512 tokens) and decode (64 tokens) speed, files alternating in
every round, median over rounds. Quantization time and peak memory are those of the
quantizing process (wall clock; ``ru_maxrss`` of the child process).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BIN = Path(os.environ.get("LLAMA_CPP_BIN", Path.home() / ".cache" / "quantwise" / "llama.cpp" / "bin"))
WORK = Path.home() / ".cache" / "quantwise" / "gguf-bench"
# type=auto's candidate block types per budget: the types llama.cpp's own file of that type uses on this
# model (Q4_K_M: Q4_K, its Q5_0 fallback, Q6_K, Q8_0), plus Q5_0 at Q4_0. Never Q4_1 / Q5_1: SmolLM2's
# weights came from a Q4_1 file, so those grids reproduce them almost exactly (a win of the source, not of the allocation).
AUTO_TYPES = {"Q4_K_M": ("Q4_K", "Q5_0", "Q6_K", "Q8_0"), "Q4_0": ("Q4_0", "Q5_0", "Q8_0")}


def _child(cmd: list[str], env: dict[str, str]) -> tuple[str, float, float]:
    """Run ``cmd``; (stdout + stderr, wall seconds, the child's own peak RSS in MB via wait4). Raises on failure."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed (exit {proc.returncode}):\n{out[-3000:]}")
    return out, seconds, usage.ru_maxrss / 1024


def _run(cmd: list[str], bin_dir: Path) -> tuple[str, float, float]:
    """A llama.cpp tool from ``bin_dir``."""
    return _child(cmd, {**os.environ, "LD_LIBRARY_PATH": str(bin_dir)})


def _timed_child(cmd: list[str], env_extra: dict[str, str] | None = None) -> tuple[str, float, float]:
    return _child(cmd, {**os.environ, **(env_extra or {})})


def write_float_gguf(path: Path) -> None:
    """The float model as an all-F32 GGUF (quantwise's writer, the zoo GGUF's metadata)."""
    from quantwise.gguf.tensors import model_tensors
    from quantwise.gguf.writer import write
    from quantwise.llm.model import load_language_model

    lm = load_language_model("smollm2-135m")
    tensors = model_tensors(lm.model, {}, "llama")
    write(path, lm.gguf_path, tensors, 0)  # general.file_type 0: all F32


def quantwise_file(file_type: str, algorithm: str, out: Path) -> None:
    """(child process) quantize with quantwise and write the GGUF, checked against gguf's dequantizers."""
    from quantwise.config import GGUFWeights
    from quantwise.llm.compare_llamacpp import write_quantized
    from quantwise.llm.model import load_language_model
    from quantwise.llm.quantize import quantize_lm
    from quantwise.llm.runtime import materialize

    if file_type.startswith("auto-"):  # types from measured sensitivity within the size of llama.cpp's file of that type
        budget = file_type.removeprefix("auto-")
        recipe = GGUFWeights(type="auto", budget=budget, types=AUTO_TYPES[budget], algorithm=algorithm)
    else:
        recipe = GGUFWeights(type=file_type, algorithm=algorithm)
    lm = load_language_model("smollm2-135m", defer_blocks=True)
    q = quantize_lm(lm, recipe)
    model = materialize(q.model, q.layers, q.recipe)
    tmp = out.with_suffix(".tmp")
    write_quantized(model, q.layers, recipe, lm.gguf_path, "llama", tmp)  # read back and checked bit for bit
    tmp.replace(out)
    print(json.dumps({"quantize_s": q.seconds, "notes": q.notes}))


def _perplexity(bin_dir: Path, model: Path, text: Path, chunks: int, base: Path, threads: int) -> dict:
    out, seconds, _ = _run([str(bin_dir / "llama-perplexity"), "-m", str(model), "-f", str(text), "-c", "512", "--chunks", str(chunks),
                            "-t", str(threads), "--kl-divergence-base", str(base), "--kl-divergence"], bin_dir)

    def grab(pattern: str) -> float:
        m = re.search(pattern, out)
        if not m:
            raise RuntimeError(f"llama-perplexity output lacks {pattern!r}:\n{out[-1500:]}")
        return float(m.group(1))

    return {"perplexity": grab(r"Mean PPL\(Q\)\s*:\s*([0-9.]+)"), "perplexity_base": grab(r"Mean PPL\(base\)\s*:\s*([0-9.]+)"),
            "kld": grab(r"Mean\s+KLD:\s*([-0-9.]+)"), "same_top": grab(r"Same top p:\s*([0-9.]+)") / 100, "eval_s": seconds}


def _bench(bin_dir: Path, models: list[Path], rounds: int, threads: int) -> dict[str, dict[str, float]]:
    """Prefill / decode tokens per second, files alternating within each round; median over rounds."""
    samples: dict[str, dict[str, list[float]]] = {str(m): {"pp": [], "tg": []} for m in models}
    for r in range(rounds):
        order = models if r % 2 == 0 else list(reversed(models))
        for m in order:
            out, _, _ = _run([str(bin_dir / "llama-bench"), "-m", str(m), "-p", "512", "-n", "64", "-t", str(threads), "-r", "2", "-o", "json"], bin_dir)
            for row in json.loads(out[out.index("["):]):
                kind = "pp" if row["n_prompt"] else "tg"
                samples[str(m)][kind].append(float(row["avg_ts"]))
    return {k: {"prefill_tok_s": statistics.median(v["pp"]), "decode_tok_s": statistics.median(v["tg"])} for k, v in samples.items()}


def _types_in(path: Path) -> dict[str, int]:
    from gguf import GGMLQuantizationType, GGUFReader

    counts: dict[str, int] = {}
    for t in GGUFReader(str(path)).tensors:
        name = GGMLQuantizationType(t.tensor_type).name
        counts[name] = counts.get(name, 0) + 1
    return counts


def _bpw(path: Path) -> float:
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    weights = sum(int(t.n_elements) for t in reader.tensors)
    data = sum(int(t.n_bytes) for t in reader.tensors)
    return 8 * data / weights


def render(result: dict) -> str:
    """benchmarks/GGUF_RESULTS.md from the JSON: one table, then each target judged from the numbers."""
    rows = result["rows"]
    m = result["machine"]
    lines = ["# quantwise GGUF files vs llama.cpp's own quantizer (SmolLM2-135M, everything run in llama.cpp)", "",
             f"Machine: {m.get('cpu', '?')}, {result['threads']} threads; {m.get('cpu_capability', '')}. "
             f"quantwise {result['versions'].get('quantwise', '?')}, torch {result['versions'].get('torch', '?')}, llama.cpp tools from llama-cpp-python 0.3.36's source.",
             f"Evaluation: `llama-perplexity -c 512 --chunks {result['chunks']}` on the evaluation articles (never used for calibration), "
             f"KL divergence and same-top-token rate against the F32 file's logits. Importance matrix: `llama-imatrix` on the calibration "
             f"articles, {result['imatrix_chunks']} chunks of 512. quantwise calibration: the same articles, 128 windows of 512. Speed: "
             f"`llama-bench -p 512 -n 64`, files alternating, median of {result['rounds']} rounds. Reproduce: `bash benchmarks/build_llamacpp.sh && "
             "PYTHONPATH=src .venv/bin/python benchmarks/gguf_vs_llamacpp.py`.", ""]
    if "merged" in result:
        mg = result["merged"]
        lines += [f"The {', '.join(mg['types'])} rows (llama.cpp's files and quantwise's) come from a later run of the same script on the same "
                  f"machine and day ({mg['file']}); speed ratios are taken within a run. "
                  f"Its F32 perplexity: {mg['f32_perplexity']:.4f}.", ""]
    lines += [
             "| quantizer | type | algorithm | MB | bits/weight | perplexity | Δ ppl % | KL div. | same top | decode tok/s | prefill tok/s | quantize s | peak MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        q = f"{r['quantize_s']:.1f}" if "quantize_s" in r else ""
        pk = f"{r['peak_mb']:.0f}" if "peak_mb" in r else ""
        lines.append(f"| {r['quantizer']} | {r['type']} | {r['algorithm']} | {r['size_mb']:.1f} | {r['bits_per_weight']:.2f} | {r['perplexity']:.4f} | "
                     f"{r['delta_ppl_pct']:+.2f} | {r['kld']:.5f} | {r['same_top']:.4f} | {r['decode_tok_s']:.1f} | {r['prefill_tok_s']:.1f} | {q} | {pk} |")
    lines += ["", "## Targets", "",
              "Per file type, each quantwise algorithm against llama.cpp's file of the same type without (plain) and with (imatrix) an "
              "importance matrix. Targets: Δ perplexity and KL at most half of plain's and below imatrix's (Q4_0, Q4_K_M); "
              "Δ perplexity no larger than llama.cpp's (Q8_0). Decode speed: ratio to llama.cpp's plain file of the type in the same run "
              "(the same tensor types use the same kernels: differences between files of identical types are measurement noise).", ""]
    order = [r["type"] for r in rows]
    for t in sorted({r["type"] for r in rows if r["type"] != "F32"}, key=order.index):
        plain = next(r for r in rows if r["type"] == t and r["algorithm"] == "default")
        imat = next(r for r in rows if r["type"] == t and r["algorithm"] == "imatrix")
        lines.append(f"- **{t}** (llama.cpp plain {plain['delta_ppl_pct']:+.2f} % / KL {plain['kld']:.5f}; imatrix {imat['delta_ppl_pct']:+.2f} % / KL {imat['kld']:.5f}):")
        for r in rows:
            if r["type"] != t or r["quantizer"] != "quantwise" or r["algorithm"] == "reference":
                continue
            if t == "Q8_0":
                verdict = f"Δ perplexity {'≤' if r['delta_ppl_pct'] <= min(plain['delta_ppl_pct'], imat['delta_ppl_pct']) else '>'} llama.cpp's"
            else:
                checks = [("half of plain, perplexity", r["delta_ppl_pct"] <= plain["delta_ppl_pct"] / 2), ("half of plain, KL", r["kld"] <= plain["kld"] / 2),
                          ("below imatrix, perplexity", r["delta_ppl_pct"] < imat["delta_ppl_pct"]), ("below imatrix, KL", r["kld"] < imat["kld"])]
                verdict = "; ".join(f"{name}: {'met' if ok else 'not met'}" for name, ok in checks)
            same = "tensor types as llama.cpp's" if r["tensor_types"] in (imat["tensor_types"], plain["tensor_types"]) else "tensor types differ"
            lines.append(f"  - {r['algorithm']}: {r['delta_ppl_pct']:+.2f} % / KL {r['kld']:.5f} — {verdict}; decode {r['decode_tok_s'] / plain['decode_tok_s']:.3f}x, "
                         f"{same}, {r['size_mb']:.1f} MB" + (f" ({', '.join(f'{k} x{v}' for k, v in sorted(r['tensor_types'].items()) if k != 'F32')})"
                                                              if same == "tensor types differ" else ""))
            if r.get("caveat"):
                lines.append(f"    ({r['caveat']})")
        ref = next((r for r in rows if r["type"] == t and r["algorithm"] == "reference"), None)
        if ref is not None:
            lines.append(f"  - reference (llama.cpp's rule reproduced): {ref['delta_ppl_pct']:+.2f} % / KL {ref['kld']:.5f} against plain's "
                         f"{plain['delta_ppl_pct']:+.2f} % / {plain['kld']:.5f}")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", type=Path, default=DEFAULT_BIN, help="folder with llama-quantize, llama-imatrix, llama-perplexity, llama-bench")
    ap.add_argument("--types", default="Q8_0,Q4_0,Q4_K_M")
    ap.add_argument("--algorithms", default="reference,searched,gptq,awq-gptq")
    ap.add_argument("--chunks", type=int, default=40, help="512-token chunks of evaluation text for llama-perplexity")
    ap.add_argument("--auto", default="", help="file types (of Q4_K_M, Q4_0) that also get a quantwise row with type=auto at that size")
    ap.add_argument("--auto-algorithm", default="gptq")
    ap.add_argument("--imatrix-chunks", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "gguf_vs_llamacpp.json")
    ap.add_argument("--render", action="store_true", help="only write benchmarks/GGUF_RESULTS.md from --json")
    ap.add_argument("--merge", type=Path, help="with --render: replace --json's rows of the file types this later run measured")
    ap.add_argument("--reuse", action="store_true", help="reuse quantwise files (and their recorded quantization time) from an earlier run")
    ap.add_argument("--one", nargs=3, metavar=("TYPE", "ALGORITHM", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        quantwise_file(args.one[0], args.one[1], Path(args.one[2]))
        return
    md = ROOT / "benchmarks" / "GGUF_RESULTS.md"
    if args.render:
        result = json.loads(args.json.read_text())
        if args.merge:
            later = json.loads(args.merge.read_text())
            types = [r["type"] for r in later["rows"] if r["type"] != "F32"]
            replaced = [r for r in later["rows"] if r["type"] != "F32"]
            rows, placed = [], False
            for r in result["rows"]:  # the later rows where the earlier ones of those types were
                if r["type"] in types:
                    if not placed:
                        rows += replaced
                        placed = True
                    continue
                rows.append(r)
            result["rows"] = rows if placed else rows + replaced
            result["merged"] = {"types": sorted(set(types)), "file": args.merge.name, "f32_perplexity": later["rows"][0]["perplexity"]}
            args.json.write_text(json.dumps(result, indent=2))
        md.write_text(render(result))
        return

    from quantwise.llm.text import text_split
    from quantwise.versions import machine, versions

    WORK.mkdir(parents=True, exist_ok=True)
    split = text_split(None)
    calib, evaluation = WORK / "calibration.txt", WORK / "evaluation.txt"
    calib.write_text("\n\n".join(split.calibration))
    evaluation.write_text("\n\n".join(split.evaluation))
    f32 = WORK / "smollm2-135m-F32.gguf"
    if not f32.exists():
        write_float_gguf(f32)
    base = WORK / "f32.kld"
    rows: list[dict] = []
    t0 = time.perf_counter()
    base_out, _, _ = _run([str(args.bin / "llama-perplexity"), "-m", str(f32), "-f", str(evaluation), "-c", "512", "--chunks", str(args.chunks),
                           "-t", str(args.threads), "--kl-divergence-base", str(base)], args.bin)
    f32_ppl = float(re.search(r"Final estimate: PPL = ([0-9.]+)", base_out).group(1))
    print(f"F32: perplexity {f32_ppl:.4f} in llama.cpp ({time.perf_counter() - t0:.0f} s)", flush=True)
    imatrix = WORK / "imatrix.gguf"
    if not imatrix.exists():
        _, im_s, _ = _run([str(args.bin / "llama-imatrix"), "-m", str(f32), "-f", str(calib), "-c", "512", "--chunks", str(args.imatrix_chunks),
                           "-t", str(args.threads), "-o", str(imatrix)], args.bin)
        print(f"imatrix: {im_s:.0f} s", flush=True)
    files: list[tuple[dict, Path]] = [({"quantizer": "float", "type": "F32", "algorithm": "-"}, f32)]
    for file_type in args.types.split(","):
        for with_imatrix in (False, True):
            out = WORK / f"llamacpp-{file_type}{'-imatrix' if with_imatrix else ''}.gguf"
            cmd = [str(args.bin / "llama-quantize")] + (["--imatrix", str(imatrix)] if with_imatrix else []) + [str(f32), str(out), file_type, str(args.threads)]
            _, seconds, peak = _run(cmd, args.bin)
            files.append(({"quantizer": "llama.cpp", "type": file_type, "algorithm": "imatrix" if with_imatrix else "default",
                           "quantize_s": seconds, "peak_mb": peak}, out))
            print(f"llama-quantize {file_type}{' (imatrix)' if with_imatrix else ''}: {seconds:.1f} s", flush=True)
        runs = [(file_type, a, a) for a in args.algorithms.split(",")]
        if file_type in args.auto.split(","):
            runs.append((f"auto-{file_type}", args.auto_algorithm, f"{args.auto_algorithm}, auto types"))
        for spec, algorithm, label in runs:
            out = WORK / f"quantwise-{spec}-{algorithm}.gguf"
            sidecar = out.with_suffix(".json")
            if args.reuse and out.exists() and sidecar.exists():
                row = json.loads(sidecar.read_text())
            else:
                log, seconds, peak = _timed_child([sys.executable, __file__, "--one", spec, algorithm, str(out)], {"PYTHONPATH": str(ROOT / "src")})
                info = json.loads(log.strip().splitlines()[-1])
                row = {"quantizer": "quantwise", "type": file_type, "algorithm": label, "quantize_s": seconds,
                       "quantize_algorithm_s": info["quantize_s"], "peak_mb": peak, "notes": info["notes"]}
                sidecar.write_text(json.dumps(row))
            files.append((row, out))
            print(f"quantwise {spec} {algorithm}: {row['quantize_s']:.0f} s", flush=True)
    for row, path in files:
        row.update(file=path.name, size_mb=path.stat().st_size / 1e6, bits_per_weight=_bpw(path), tensor_types=_types_in(path))
        if row["type"] != "F32":
            row.update(_perplexity(args.bin, path, evaluation, args.chunks, base, args.threads))
        else:
            row.update(perplexity=f32_ppl, kld=0.0, same_top=1.0)
        row["delta_ppl_pct"] = 100 * (row["perplexity"] / f32_ppl - 1)
        print(f"{row['quantizer']:<10} {row['type']:<7} {row['algorithm']:<9} ppl {row['perplexity']:.4f} ({row['delta_ppl_pct']:+.2f}%) "
              f"KLD {row['kld']:.5f} top {row['same_top']:.4f}", flush=True)
        rows.append(row)
    speeds = _bench(args.bin, [p for _, p in files], args.rounds, args.threads)
    for row, path in zip(rows, [p for _, p in files]):
        row.update(speeds[str(path)])
    result = {"machine": machine(), "versions": versions(), "llama_cpp_tools": str(args.bin), "chunks": args.chunks,
              "imatrix_chunks": args.imatrix_chunks, "rounds": args.rounds, "threads": args.threads, "rows": rows,
              "platform": platform.platform()}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    md.write_text(render(result))
    print(f"wrote {args.json} and {md}")


if __name__ == "__main__":
    main()
