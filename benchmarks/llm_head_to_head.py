"""Decode speed head to head: bf16 compiled (the fastest float baseline) against int4 and int8
weight-only, compiled, in one process, timed in alternation (round-robin, the order rotated every
round) so that drift of the shared machine hits every model alike. The ratio reported is the
median over rounds of each round's ratio: the number issue 3's "int4 >= 2x the best float decode"
target is judged on, alongside compare_llm.py's one-pass table.

    .venv/bin/python benchmarks/llm_head_to_head.py            # 2 threads, 9 rounds

Writes benchmarks/results/smollm2-135m-h2h-t<threads>.json; compare_llm.py --render puts it into
benchmarks/LLM_RESULTS.md.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RECIPES = ("int4-rtn", "int8-weight-only")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)

    import torch

    torch.set_num_threads(args.threads)
    from quantwise.config import parse_recipe
    from quantwise.llm.compare import PROMPT_TOKENS
    from quantwise.llm.decode import Decoder
    from quantwise.llm.model import load_language_model
    from quantwise.llm.perplexity import token_ids
    from quantwise.llm.quantize import quantize_lm
    from quantwise.llm.runtime import materialize
    from quantwise.versions import machine, versions

    lm = load_language_model(args.model)
    prompt = token_ids(lm.tokenizer, lm.text.evaluation, PROMPT_TOKENS)[:PROMPT_TOKENS]
    models = {"bf16 compiled": copy.deepcopy(lm.model).to(torch.bfloat16).eval(), "float32 compiled": lm.model}
    for name in RECIPES:
        q = quantize_lm(load_language_model(args.model, defer_blocks=True), parse_recipe(name))
        models[f"{name} compiled"] = materialize(q.model, q.layers, q.recipe)
    decoders = {}
    for name, model in models.items():
        start = time.perf_counter()
        decoders[name] = Decoder(model, PROMPT_TOKENS + args.tokens, compiled=True)
        for _ in decoders[name].tokens(prompt, 4):  # compile and warm up
            pass
        print(f"{name}: compiled in {time.perf_counter() - start:.0f} s", flush=True)

    def rate(decoder: Decoder) -> float:
        stream = decoder.tokens(prompt, args.tokens)
        next(stream)  # prefill + first token
        t0 = time.perf_counter()
        count = sum(1 for _ in stream)
        return count / (time.perf_counter() - t0)

    names = list(decoders)
    rounds: list[dict[str, float]] = []
    with torch.no_grad():
        for r in range(args.rounds):
            order = names[r % len(names):] + names[: r % len(names)]
            rounds.append({name: rate(decoders[name]) for name in order})
            print(f"round {r + 1}: " + ", ".join(f"{n} {v:.1f}" for n, v in rounds[-1].items()), flush=True)
    base = "bf16 compiled"
    data = {
        "model": args.model, "threads": args.threads, "rounds": rounds, "tokens": args.tokens - 1, "prompt_tokens": PROMPT_TOKENS,
        "median_tokens_per_s": {n: statistics.median(r[n] for r in rounds) for n in names},
        "median_ratio_vs_bf16_compiled": {n: statistics.median(r[n] / r[base] for r in rounds) for n in names if n != base},
        "machine": machine(), "versions": versions(),
    }
    out = HERE / "results" / f"{args.model}-h2h-t{args.threads}.json"
    out.write_text(json.dumps(data, indent=2))
    print(json.dumps({k: data[k] for k in ("median_tokens_per_s", "median_ratio_vs_bf16_compiled")}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
