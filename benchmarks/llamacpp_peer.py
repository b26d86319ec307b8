"""Benchmark-only peer: llama.cpp (llama-cpp-python) on the same GGUF model, token ids and
windows that quantwise's LLM ``compare`` uses, so both can be reported side by side.

    .venv/bin/pip install -e ".[llamacpp]"                   # once: builds llama-cpp-python (setup.sh does)
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/llamacpp_peer.py [--threads 2] [--json out.json]

For each kind (llama.cpp's F32, Q8_0, Q4_0 by default) the source GGUF is requantized once
with llama.cpp's own quantizer (``llama_model_quantize``, default recipe, requantizing
allowed) into ``<quantwise cache>/llamacpp/`` and then measured:

- perplexity: every window (a row of ``eval_windows``) is evaluated from an empty KV cache
  with logits for every position, and scored exactly like ``quantwise.llm.perplexity``:
  the sum over t = 1..ctx-1 of -log p(row[t] | row[:t]) (log-softmax in float64), over all
  windows, exp(total / count). The ids are fed directly; llama.cpp's tokenizer is not used.
- decode: greedy (argmax) at batch 1 after a short prompt (default: the first 32 ids of the
  first window, quantwise's prompt). As in ``quantwise.llm.decode.measure_speed`` the prompt
  eval and the first token it yields are not timed; the timed part is the remaining
  ``decode_tokens - 1`` single-token evals, rate = (decode_tokens - 1) / seconds. Median of
  ``repeats`` after one warm-up generation.
- prefill: one eval of the first window (``eval_windows[0]``, 512 tokens in the default
  run) from an empty cache with logits for every position (the same work as quantwise's
  prefill, a full forward returning all logits), rate = window length / seconds (512, not
  511). Median of ``repeats`` after the perplexity pass has warmed up.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import logging
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

NOMINAL_BITS = {"F32": 32, "F16": 16, "BF16": 16, "Q8_0": 8, "Q4_0": 4, "Q4_1": 4}
PROMPT_TOKENS = 32  # quantwise.llm.compare.PROMPT_TOKENS


def _llama_cpp():
    try:
        import llama_cpp
    except Exception as err:  # ImportError, or a broken native library (OSError)
        raise RuntimeError("llama-cpp-python is not installed; pip install -e \".[llamacpp]\"") from err
    return llama_cpp


def _ftype(llama_cpp, kind: str) -> int:
    names = {"F32": "LLAMA_FTYPE_ALL_F32", "F16": "LLAMA_FTYPE_MOSTLY_F16", "BF16": "LLAMA_FTYPE_MOSTLY_BF16",
             "Q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "Q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0", "Q4_1": "LLAMA_FTYPE_MOSTLY_Q4_1"}
    if kind not in names:
        raise ValueError(f"unknown llama.cpp kind {kind!r}; use one of {', '.join(names)}")
    return int(getattr(llama_cpp, names[kind]))


def quantized_gguf(source: Path, kind: str, threads: int = 2) -> Path:
    """``source`` requantized by llama.cpp to ``kind``, made once under the quantwise cache.

    The file is rebuilt when the source is newer than it; it is written under a temporary
    name and renamed into place, so a crashed or concurrent writer leaves no partial file.
    """
    from quantwise.data.cache import cache_dir

    llama_cpp = _llama_cpp()
    source = Path(source)
    stem = "smollm2" if source.name.lower().startswith("smollm2-135m") else source.stem
    target = cache_dir() / "llamacpp" / f"{stem}-{kind}.gguf"
    if target.is_file() and target.stat().st_mtime >= source.stat().st_mtime:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = _ftype(llama_cpp, kind)
    params.allow_requantize = True
    params.nthread = threads
    llama_cpp.llama_backend_init()
    # llama.cpp logs one INFO line per tensor. llama-cpp-python's own log callback maps
    # ggml's old level numbers (INFO is now 2, which it reads as WARNING), so it cannot
    # filter them: collect the messages with a callback of our own while quantizing, keep
    # the warnings and errors (levels 3 and 4), and put llama-cpp-python's callback back.
    messages: list[tuple[int, str]] = []

    @llama_cpp.llama_log_callback
    def collect(level, text, user_data):
        level = messages[-1][0] if level == 5 and messages else level  # 5: continues the previous line
        messages.append((level, text.decode("utf-8", "replace")))

    llama_cpp.llama_log_set(collect, ctypes.c_void_p(0))
    try:
        rc = llama_cpp.llama_model_quantize(str(source).encode(), str(tmp).encode(), ctypes.byref(params))
        problems = "".join(text for level, text in messages if level in (3, 4)).strip()
        if rc != 0 or not tmp.is_file():
            raise RuntimeError(f"llama.cpp could not requantize {source.name} to {kind} (llama_model_quantize returned {rc})"
                               + (f": {problems}" if problems else ""))
        if problems:
            logging.getLogger(__name__).warning("llama.cpp, quantizing %s to %s: %s", source.name, kind, problems)
        os.replace(tmp, target)
    finally:
        from llama_cpp import _logger
        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
        tmp.unlink(missing_ok=True)
    return target


def gguf_tensor_types(path: Path) -> dict[str, int]:
    """Count of weight tensors per storage type in a GGUF file (e.g. {'Q4_0': 210, 'F32': 61})."""
    from gguf import GGUFReader

    counts: dict[str, int] = {}
    for tensor in GGUFReader(str(path)).tensors:
        counts[tensor.tensor_type.name] = counts.get(tensor.tensor_type.name, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def _log_softmax_nll(logits: np.ndarray, targets: np.ndarray) -> float:
    """sum_t -log softmax(logits[t])[targets[t]] in float64."""
    x = logits.astype(np.float64, copy=False)
    peak = x.max(axis=1, keepdims=True)
    lse = np.log(np.exp(x - peak).sum(axis=1)) + peak[:, 0]
    return float((lse - x[np.arange(len(targets)), targets]).sum())


def _perplexity(llm, eval_windows: torch.Tensor) -> tuple[float, int]:
    total, count = 0.0, 0
    for row in eval_windows.tolist():
        llm.reset()
        llm.eval(row)
        logits = np.asarray(llm.scores[: len(row) - 1])  # logits[t] predicts row[t + 1]
        total += _log_softmax_nll(logits, np.asarray(row[1:], dtype=np.int64))
        count += len(row) - 1
    return math.exp(total / count), count


def _greedy(llm, prompt: list[int], new_tokens: int) -> tuple[list[int], float]:
    """Greedy tokens after ``prompt`` and the seconds spent on all but the first (see module doc)."""
    llm.reset()
    llm.eval(prompt)
    tokens = [int(np.argmax(llm.scores[llm.n_tokens - 1]))]
    t0 = time.perf_counter()
    for _ in range(new_tokens - 1):
        llm.eval([tokens[-1]])
        tokens.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
    return tokens, time.perf_counter() - t0


def _prefill_seconds(llm, window: list[int]) -> float:
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(window)
    return time.perf_counter() - t0


def measure_llamacpp(gguf_path: Path, eval_windows: torch.Tensor, *, kinds=("F32", "Q8_0", "Q4_0"), threads: int = 2,
                     decode_tokens: int = 64, repeats: int = 5, prompt_ids: list[int] | None = None) -> list[dict]:
    """llama.cpp perplexity, decode and prefill speed of ``gguf_path`` requantized to each kind.

    ``eval_windows`` is quantwise's [n_windows, context] int64 window tensor
    (``quantwise.llm.perplexity.windows``); ``prompt_ids`` defaults to its first 32 ids.
    Returns one dict per kind (see the module docstring for what is timed).
    """
    llama_cpp = _llama_cpp()
    if decode_tokens < 2:
        raise ValueError("decode_tokens must be at least 2 (the first token comes from the untimed prompt eval)")
    context = int(eval_windows.shape[1])
    prompt = list(prompt_ids) if prompt_ids is not None else eval_windows[0, :PROMPT_TOKENS].tolist()
    n_ctx = max(context, len(prompt) + decode_tokens)
    runtime = f"llama.cpp {llama_cpp.__version__}"
    results = []
    for kind in kinds:
        path = quantized_gguf(Path(gguf_path), kind, threads)
        llm = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, n_threads=threads,
                              n_threads_batch=threads, logits_all=True, verbose=False)
        try:
            ppl, scored = _perplexity(llm, eval_windows)
            window = eval_windows[0].tolist()
            prefill = [len(window) / _prefill_seconds(llm, window) for _ in range(repeats)]
            _greedy(llm, prompt, min(decode_tokens, 8))  # warm-up
            decode = []
            for _ in range(repeats):
                _, seconds = _greedy(llm, prompt, decode_tokens)
                decode.append((decode_tokens - 1) / seconds)
        finally:
            llm.close()
        results.append({
            "runtime": runtime, "method": kind, "bits": NOMINAL_BITS[kind], "size_mb": path.stat().st_size / 1e6,
            "perplexity": ppl, "decode_tokens_per_s": statistics.median(decode),
            "prefill_tokens_per_s": statistics.median(prefill), "perplexity_tokens": scored,
        })
    return results


def _table(rows: list[dict]) -> str:
    head = f"{'runtime':<18} {'method':<6} {'bits':>4} {'size MB':>8} {'perplexity':>10} {'decode tok/s':>12} {'prefill tok/s':>13} {'scored':>7}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['runtime']:<18} {r['method']:<6} {r['bits']:>4} {r['size_mb']:>8.1f} {r['perplexity']:>10.3f} "
                     f"{r['decode_tokens_per_s']:>12.1f} {r['prefill_tokens_per_s']:>13.1f} {r['perplexity_tokens']:>7}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--kinds", default="F32,Q8_0,Q4_0")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--eval-tokens", type=int, default=24576)
    parser.add_argument("--decode-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args(argv)

    _llama_cpp()  # fail early, before the model load
    from quantwise.llm.model import load_language_model
    from quantwise.llm.perplexity import token_ids, windows

    lm = load_language_model(args.model)
    if lm.gguf_path is None:
        raise SystemExit(f"{args.model} has no GGUF file to give llama.cpp")
    ids = token_ids(lm.tokenizer, lm.text.evaluation, max(args.eval_tokens, args.context + PROMPT_TOKENS))
    eval_windows = windows(ids, args.context, args.eval_tokens)
    gguf_path = lm.gguf_path
    del lm  # the float32 torch model is not needed any more

    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    start = time.perf_counter()
    rows = measure_llamacpp(gguf_path, eval_windows, kinds=kinds, threads=args.threads,
                            decode_tokens=args.decode_tokens, repeats=args.repeats)
    print(f"llama.cpp peer: {gguf_path.name}; {eval_windows.shape[0]} windows x {eval_windows.shape[1]} tokens "
          f"(stride {eval_windows.shape[1]}); {args.threads} threads (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}); "
          f"decode: batch 1, greedy, {args.decode_tokens - 1} timed tokens after a {PROMPT_TOKENS}-token prompt, "
          f"median of {args.repeats}; prefill: one {eval_windows.shape[1]}-token eval with all logits; "
          f"{time.perf_counter() - start:.0f} s")
    print(_table(rows))
    for kind in kinds:
        path = quantized_gguf(gguf_path, kind, args.threads)
        print(f"  {kind}: {path} tensor types {gguf_tensor_types(path)}")
    text = json.dumps(rows, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
