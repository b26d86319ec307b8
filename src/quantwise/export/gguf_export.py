"""``quantwise export ARTIFACT --to gguf``: a GGUF file llama.cpp loads, proven twice.

1. Read back with the gguf package: every tensor's bytes are the bytes quantwise packed, and
   gguf's reference dequantizers give quantwise's float32 weights bit for bit (so the codes
   llama.cpp reads are the codes quantwise chose: no second rounding anywhere).
2. Where llama-cpp-python is installed: perplexity in llama.cpp within ``MAX_DELTA_PCT`` of
   quantwise's own evaluation of the same weights (PyTorch, float32) on the same windows, and
   greedy tokens compared (reported; llama.cpp quantizes activations to 8 bits inside its dot
   products, so a near-tie may flip).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from quantwise.errors import QuantwiseError
from quantwise.export.result import DerivedParity
from quantwise.gguf.tensors import model_tensors
from quantwise.gguf.writer import source_architecture, verify, write
from quantwise.llm.model import source_gguf
from quantwise.progress import ProgressFn, no_progress

MAX_DELTA_PCT = 0.5
GREEDY_PROMPT, GREEDY_TOKENS = 32, 32


@dataclass(frozen=True)
class GGUFParity(DerivedParity):
    tensors: int
    quantized_tensors: int
    bytes_equal: bool
    weights_equal: bool
    llamacpp: bool  # the llama.cpp check ran
    windows: int = 0
    context: int = 0
    perplexity_llamacpp: float | None = None
    perplexity_quantwise: float | None = None
    top1_agreement: float | None = None  # llama.cpp's next-token argmax vs PyTorch's on the same weights
    generated_tokens: int = 0
    generated_equal: int = 0  # greedy tokens, from the first, that llama.cpp and PyTorch agree on
    first_mismatch: str = ""

    @property
    def delta_pct(self) -> float | None:
        if self.perplexity_llamacpp is None or self.perplexity_quantwise is None:
            return None
        return 100 * (self.perplexity_llamacpp / self.perplexity_quantwise - 1)

    @property
    def passed(self) -> bool:
        if not (self.bytes_equal and self.weights_equal):
            return False
        return not self.llamacpp or (self.delta_pct is not None and math.isfinite(self.delta_pct) and abs(self.delta_pct) <= MAX_DELTA_PCT)

    @property
    def tolerance(self) -> str:
        return (f"every tensor's bytes and dequantized weights equal quantwise's bit for bit; with llama-cpp-python, perplexity in "
                f"llama.cpp within {MAX_DELTA_PCT}% of quantwise's on the same weights and windows")


def export_gguf(artifact: str | Path, out: str | Path | None = None, overwrite: bool = False, windows: int = 8, context: int = 512,
                text: str | None = None, threads: int | None = None, progress: ProgressFn = no_progress) -> Any:
    from quantwise.artifact import store
    from quantwise.config import GGUFWeights
    from quantwise.export.result import ExportResult, output_path
    from quantwise.files import staged_file
    from quantwise.gguf import llamacpp
    from quantwise.gguf.types import LLAMA_FILE_TYPE
    from quantwise.llm import artifact as lm_artifact
    from quantwise.llm.runtime import materialize

    artifact = Path(artifact)
    stored = lm_artifact.read(artifact)
    if not isinstance(stored.recipe, GGUFWeights):
        raise QuantwiseError(f"the artifact's recipe ({stored.recipe.kind}) is not on a GGUF block grid, so llama.cpp would round its weights again",
                             "quantize with a gguf recipe (gguf-q4_k_m, gguf-q4_0, gguf-q8_0 or gguf:type=...,algorithm=...) to export to GGUF")
    if windows < 1:
        raise QuantwiseError(f"--samples {windows}: the llama.cpp check needs at least one window", "e.g. --samples 8")
    source = source_gguf(stored.spec)
    arch = source_architecture(source)
    path = output_path(artifact, out, "gguf", ".gguf", overwrite)
    start = time.perf_counter()
    model = materialize(stored.model, stored.layers, stored.recipe)
    tensors = model_tensors(model, stored.layers, arch)
    notes = [f"{sum(t.blocks is not None for t in tensors.values())} tensors in block types, {sum(t.blocks is None for t in tensors.values())} float32 (norms)",
             f"metadata, tokenizer and chat template from {source.name}"]
    with staged_file(path) as tmp:
        write(tmp, source, tensors, LLAMA_FILE_TYPE[stored.recipe.file_type])
        check = verify(tmp, tensors)
        seconds = time.perf_counter() - start
        parity = GGUFParity(check.tensors, check.quantized, check.bytes_equal, check.weights_equal, False, first_mismatch=check.first_mismatch)
        if parity.passed and llamacpp.available():
            parity = _llamacpp_parity(tmp, model, stored.tokenizer, parity, windows, context, text, threads, progress)
        elif not llamacpp.available():
            notes.append("llama-cpp-python is not installed: the file was checked with gguf's reference dequantizers only "
                         "(pip install 'quantwise[llamacpp]' adds the perplexity check in llama.cpp)")
        if not parity.passed:
            detail = parity.first_mismatch or f"perplexity in llama.cpp {parity.perplexity_llamacpp:.3f} vs {parity.perplexity_quantwise:.3f} ({parity.delta_pct:+.2f}%)"
            raise QuantwiseError(f"the GGUF file does not hold quantwise's weights ({detail}); nothing was written", "report this model and recipe")
    export = ExportResult(artifact, "gguf", path, path.stat().st_size / 1e6, seconds, parity, notes)
    store.record_export(artifact, "gguf", export.to_dict())
    return export


def _llamacpp_parity(path: Path, model: nn.Module, tokenizer: Any, parity: GGUFParity, windows: int, context: int, text: str | None,
                     threads: int | None, progress: ProgressFn) -> GGUFParity:
    import dataclasses

    from quantwise.llm.decode import Decoder
    from quantwise.llm.perplexity import text_windows, window_scores
    from quantwise.llm.text import text_split

    from quantwise.gguf.llamacpp import run_isolated

    split = text_split(text)
    ids = text_windows(tokenizer, split.evaluation, context, windows * context)
    count = ids[:, 1:].numel()
    with torch.no_grad():
        nll, top, _ = window_scores(lambda w: model(w).logits, ids, progress, "parity: quantwise (PyTorch, same weights)")
        prompt = ids[0, :GREEDY_PROMPT]
        ours = list(Decoder(model, GREEDY_PROMPT + GREEDY_TOKENS).tokens(prompt, GREEDY_TOKENS))
    ran = run_isolated(path, ids, prompt.tolist(), GREEDY_TOKENS, threads or torch.get_num_threads(), path.parent)
    ppl, their_top, theirs = ran["perplexity"], torch.tensor(ran["argmax"], dtype=torch.long), ran["tokens"]
    equal = next((k for k, (a, b) in enumerate(zip(ours, theirs)) if a != b), len(ours))
    return dataclasses.replace(parity, llamacpp=True, windows=len(ids), context=ids.shape[1], perplexity_llamacpp=ppl,
                               perplexity_quantwise=math.exp(nll / count), top1_agreement=float((their_top == top).float().mean()),
                               generated_tokens=len(ours), generated_equal=equal)
