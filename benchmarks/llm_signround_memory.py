"""Peak resident memory of loading smollm2-135m and running SignRound's block loop, measured as
``quantwise compare`` measures a row's "peak MB quantizing" (growth over the process's resident size
before loading). Memory does not depend on the number of steps per block, so this runs 2 (minutes,
not the 32 of the default 200 on a CPU without AMX).

    PYTHONPATH=src .venv/bin/python benchmarks/llm_signround_memory.py            # every block
    PYTHONPATH=src .venv/bin/python benchmarks/llm_signround_memory.py --blocks 3 # the first three

Prints the peak; nothing is written (the figures are quoted in LLM_ROUNDING_RESULTS.md's caveats).
"""
from __future__ import annotations

import argparse
import time

import torch

from quantwise.config import WeightOnly
import quantwise.llm.quantize as Q
from quantwise.llm.memory import release_free_memory, track_peak_rss
from quantwise.llm.model import load_language_model
from quantwise.llm.runtime import for_this_machine


class _BlocksDone(Exception):
    pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=None, help="stop after this many decoder blocks (default: all)")
    parser.add_argument("--algorithm", default="awq-signround")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    recipe, _ = for_this_machine(WeightOnly(algorithm=args.algorithm, iterations=2, lm_head_bits=None))
    every_layer = Q.decoder_layers
    Q.decoder_layers = lambda model: list(every_layer(model))[: args.blocks]
    block_loop = Q._quantize_calibrated

    def stop_after_the_blocks(*a, **k):  # the output layer and the loading of unread blocks are not SignRound's
        block_loop(*a, **k)
        raise _BlocksDone

    Q._quantize_calibrated = stop_after_the_blocks
    release_free_memory()
    start = time.perf_counter()
    with track_peak_rss() as mem:
        lm = load_language_model("smollm2-135m", None, defer_blocks=True)
        try:
            Q.quantize_lm(lm, recipe)
        except _BlocksDone:
            pass
    print(f"{args.algorithm}: peak growth {mem.growth / 1e6:.0f} MB over {args.blocks or 'all'} blocks, {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
