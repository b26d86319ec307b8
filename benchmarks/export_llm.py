"""SmolLM2-135M to ONNX: each weight-only recipe quantized, saved, exported (MatMulNBits, KV cache
as inputs/outputs) and checked by perplexity and its cache path against the quantized PyTorch
model; then, in one process and in alternating rounds, the prefill of one 512-token window and
greedy decoding at batch 1 (64 tokens after a 128-token prompt, tokens/s after the first): PyTorch
float32, the quantized PyTorch model (as `quantwise eval` runs it: bf16 activations, eager; for
decoding also int8-weight-only under torch.compile, the fastest PyTorch path and `quantwise auto`'s
choice), ONNX Runtime float32 (the same exporter, no layer quantized) and ONNX Runtime on each
export. Run it alone on the machine.

    .venv/bin/python benchmarks/export_llm.py
    .venv/bin/python benchmarks/export_llm.py --recipes int4-rtn --windows 4

Writes benchmarks/results/export-llm.json; benchmarks/export_zoo.py --render puts it in EXPORT_RESULTS.md.
"""
from __future__ import annotations

import argparse
import copy
import shutil
import statistics
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
RECIPES = ("int8-weight-only", "int4-rtn", "int4-hqq", "int4-awq-gptq", "w8a8")
SPEC = "smollm2-135m"


def _median_ms(fn, ids, repeats: int) -> float:
    fn(ids)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(ids)
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def run(recipes: list[str], windows: int, repeats: int, threads: int) -> dict:
    import torch

    from quantwise.config import parse_recipe
    from quantwise.errors import QuantwiseError, first_line
    from quantwise.export import export_artifact
    from quantwise.export.onnx_llm import write as write_onnx
    from quantwise.export.onnx_lm_runtime import OnnxLM
    from quantwise.llm.decode import Decoder, decode_rate
    from quantwise.llm import artifact
    from quantwise.llm.model import load_language_model
    from quantwise.llm.perplexity import token_ids
    from quantwise.llm.quantize import quantize_lm
    from quantwise.versions import machine, versions

    torch.set_num_threads(threads)
    work = Path(tempfile.mkdtemp(prefix="qw-export-llm-"))
    rows, runners, decoders = [], {}, {}
    new_tokens = 64
    try:
        lm = load_language_model(SPEC)
        ids = token_ids(lm.tokenizer, lm.text.evaluation, 512)[:512].view(1, -1)
        prompt = ids[0, :128]
        float_model = lm.model.eval()
        runners["PyTorch float32 (eager)"] = lambda x: float_model(x).logits
        decoders["PyTorch float32 (eager)"] = Decoder(float_model, 128 + new_tokens).tokens
        write_onnx(load_language_model(SPEC).model, {}, work / "float.onnx")
        decoders["PyTorch bfloat16 (torch.compile)"] = Decoder(copy.deepcopy(float_model).to(torch.bfloat16), 128 + new_tokens, compiled=True).tokens
        runners["ONNX Runtime float32"] = OnnxLM(work / "float.onnx", threads)
        decoders["ONNX Runtime float32"] = runners["ONNX Runtime float32"].tokens
        for recipe in recipes:
            row = {"recipe": recipe}
            try:
                q = quantize_lm(load_language_model(SPEC, defer_blocks=True), parse_recipe(recipe))
                path = artifact.save(q, lm.tokenizer, SPEC, work / recipe, verify=False)
                result = export_artifact(path, "onnx", samples=windows, threads=threads)
                row.update(status="ok", size_mb=result.size_mb, artifact_mb=sum(f.stat().st_size for f in path.rglob("*.safetensors")) / 1e6,
                           seconds=result.seconds, parity=result.parity.to_dict(), notes=result.notes)
                quantized = artifact.load(path).model
                runners[f"PyTorch {recipe} (bf16 activations, eager)"] = lambda x, m=quantized: m(x).logits
                decoders[f"PyTorch {recipe} (bf16 activations, eager)"] = Decoder(quantized, 128 + new_tokens).tokens
                if recipe == "int8-weight-only":
                    decoders[f"PyTorch {recipe} (bf16 activations, torch.compile)"] = Decoder(quantized, 128 + new_tokens, compiled=True).tokens
                runners[f"ONNX Runtime {recipe}"] = OnnxLM(result.path, threads)
                decoders[f"ONNX Runtime {recipe}"] = runners[f"ONNX Runtime {recipe}"].tokens
            except QuantwiseError as err:
                row.update(status="unsupported" if "cannot export" in str(err) else "failed", reason=str(err))
            except Exception as err:
                row.update(status="failed", reason=f"{type(err).__name__}: {first_line(err, 200)}")
            print(f"{recipe}: {row['status']}", flush=True)
            rows.append(row)
        timings: dict[str, list[float]] = {name: [] for name in runners}
        with torch.no_grad():
            for _ in range(3):  # rounds, alternating, so that drift hits every runner alike
                for name, fn in runners.items():
                    timings[name].append(_median_ms(fn, ids, repeats))
        prefill = {name: statistics.median(v) for name, v in timings.items()}
        for tokens in decoders.values():  # warm-up (and compilation)
            decode_rate(tokens, prompt, 4, 1)
        rates: dict[str, list[float]] = {name: [] for name in decoders}
        for _ in range(3):
            for name, tokens in decoders.items():
                rates[name] += decode_rate(tokens, prompt, new_tokens, max(1, repeats // 2))
        decode = {name: statistics.median(v) for name, v in rates.items()}
        greedy = {name: list(tokens(prompt, 32)) for name, tokens in decoders.items()}
        reference = greedy["PyTorch float32 (eager)"]
        same_as_float = {name: next((k for k, (a, b) in enumerate(zip(got, reference)) if a != b), len(got)) for name, got in greedy.items()}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"model": SPEC, "threads": threads, "windows": windows, "prefill_tokens": 512, "repeats": repeats,
            "rows": rows, "prefill_ms": prefill, "decode": {"prompt_tokens": 128, "new_tokens": new_tokens, "tokens_per_s": decode,
                                                            "greedy_tokens_equal_to_float_of_32": same_as_float},
            "machine": machine(), "versions": versions()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--windows", type=int, default=16, help="512-token evaluation windows for the perplexity parity")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    from quantwise.report.table import write_json

    data = run(args.recipes.split(","), args.windows, args.repeats, args.threads)
    write_json(data, HERE / "results" / "export-llm.json")
    import export_zoo

    export_zoo.render()
    print((HERE / "EXPORT_RESULTS.md").read_text())


if __name__ == "__main__":
    main()
