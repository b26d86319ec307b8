"""Export a language-model artifact and prove it: perplexity of the exported file against the
quantized PyTorch model (and float) on the same evaluation windows.

Tolerance: the export's perplexity within ``MAX_DELTA_PCT`` of the quantized PyTorch model's.
The PyTorch model runs its activations in bfloat16 and the ONNX graph in float32, so the two
differ by rounding; a wrong translation (a swapped nibble, a lost zero-point) moves perplexity
by far more. The KV cache path is checked against the file's own one-pass logits (tokens fed one
at a time through the cache must give the logits the whole sequence gives, cosine >=
``MIN_CACHE_COSINE`` at every position), and greedy generation through it is compared with the
quantized PyTorch model's (reported, not judged: bf16 against float32 rounding can flip a near-tie).
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from quantwise.artifact import store
from quantwise.errors import QuantwiseError, first_line
from quantwise.export.result import DerivedParity
from quantwise.llm.perplexity import window_scores
from quantwise.progress import ProgressFn, no_progress

MAX_DELTA_PCT = 0.5
MIN_CACHE_COSINE = 0.999
CACHE_PREFIX, CACHE_STEPS = 32, 32  # the cache check: 32 tokens at once, then 32 one at a time
TARGETS = ("onnx", "gguf")


@dataclass(frozen=True)
class LMParity(DerivedParity):
    windows: int
    context: int
    tokens: int
    perplexity_export: float
    perplexity_quantized: float
    perplexity_float: float | None
    logits_cosine: float  # mean over positions of the first window, export vs quantized PyTorch model
    logits_max_abs: float
    top1_agreement: float  # next-token argmax, export vs quantized PyTorch model, over all scored positions
    cache_cosine_min: float  # logits through the KV cache vs the same file's one-pass logits, worst position
    cache_max_abs: float
    generated_tokens: int  # greedy tokens generated through the cache after a prompt from the first window
    generated_equal: int  # how many of them, from the first, the quantized PyTorch model generates too

    @property
    def delta_pct(self) -> float:
        return 100 * (self.perplexity_export / self.perplexity_quantized - 1)

    @property
    def passed(self) -> bool:
        return math.isfinite(self.perplexity_export) and abs(self.delta_pct) <= MAX_DELTA_PCT and self.cache_cosine_min >= MIN_CACHE_COSINE

    @property
    def tolerance(self) -> str:
        return (f"perplexity within {MAX_DELTA_PCT}% of the quantized PyTorch model's on the same windows; logits through the KV cache "
                f"at cosine >= {MIN_CACHE_COSINE} to the one-pass logits at every position")


def check_target(target: str) -> None:
    if target not in TARGETS:
        raise QuantwiseError(f"cannot export a language model to {target}: quantwise exports language models to ONNX (MatMulNBits) and GGUF (llama.cpp)",
                             "use --to onnx (int4 or int8 weight-only recipes) or --to gguf (gguf recipes)")


def _cache_check(run: Any, quantized: Any, ids: torch.Tensor) -> dict[str, Any]:
    """The KV cache path of the export (``run``: an ``OnnxLM``) on the 1-D ``ids``, and greedy
    generation through it against the quantized PyTorch model's."""
    from quantwise.llm.decode import Decoder

    ids = ids[: CACHE_PREFIX + CACHE_STEPS]
    one_pass, cached = run(ids.view(1, -1))[0], run.cached_logits(ids, CACHE_PREFIX)[0]
    prompt = ids[:CACHE_PREFIX]
    ours = list(run.tokens(prompt, CACHE_STEPS))
    theirs = list(Decoder(quantized, CACHE_PREFIX + CACHE_STEPS).tokens(prompt, CACHE_STEPS))
    equal = next((k for k, (a, b) in enumerate(zip(ours, theirs)) if a != b), len(ours))
    return {"cache_cosine_min": float(F.cosine_similarity(cached, one_pass, dim=-1).min()),
            "cache_max_abs": float((cached - one_pass).abs().max()), "generated_tokens": len(ours), "generated_equal": equal}


def parity(run: Any, quantized: Any, float_model: Any | None, ids: torch.Tensor, progress: ProgressFn = no_progress) -> LMParity:
    """Score the windows ``ids`` [n, context] with the export (``run``: an ``OnnxLM``), the
    quantized PyTorch model and, when given, the float model (``model(ids).logits``); check the
    export's KV cache on the first window."""
    count = ids[:, 1:].numel()
    with torch.no_grad():
        e_nll, e_top, e_first = window_scores(run, ids, progress, "parity: exported model")
        q_nll, q_top, q_first = window_scores(lambda w: quantized(w).logits, ids, progress, "parity: quantized PyTorch model")
        f_ppl = math.exp(window_scores(lambda w: float_model(w).logits, ids, progress, "parity: float model")[0] / count) if float_model is not None else None
        cache = _cache_check(run, quantized, ids[0])
    return LMParity(
        windows=len(ids), context=ids.shape[1], tokens=count,
        perplexity_export=math.exp(e_nll / count), perplexity_quantized=math.exp(q_nll / count), perplexity_float=f_ppl,
        logits_cosine=float(F.cosine_similarity(e_first, q_first, dim=-1).mean()), logits_max_abs=float((e_first - q_first).abs().max()),
        top1_agreement=float((e_top == q_top).float().mean()), **cache,
    )


def export_language_model(artifact: str | Path, target: str, out: str | Path | None = None, overwrite: bool = False,
                          windows: int = 8, context: int = 512, text: str | None = None, threads: int | None = None,
                          compare_float: bool = True, progress: ProgressFn = no_progress) -> Any:
    """Export a language-model artifact to ONNX, check perplexity parity, record it in the manifest."""
    import importlib.util

    from quantwise.export import onnx_llm
    from quantwise.export.onnx_lm_runtime import OnnxLM
    from quantwise.export.result import ExportResult, output_path
    from quantwise.files import staged_file
    from quantwise.llm import artifact as lm_artifact
    from quantwise.llm.model import load_language_model
    from quantwise.llm.runtime import materialize
    from quantwise.llm.perplexity import text_windows
    from quantwise.llm.text import text_split

    check_target(target)
    if target == "gguf":
        from quantwise.export.gguf_export import export_gguf

        return export_gguf(artifact, out, overwrite, windows=windows, context=context, text=text, threads=threads, progress=progress)
    if importlib.util.find_spec("onnxruntime") is None:
        raise QuantwiseError("the onnx export needs onnxruntime, which is not installed", "install it: pip install onnxruntime")
    artifact = Path(artifact)
    stored = lm_artifact.read(artifact)
    onnx_llm.check(stored.recipe)
    onnx_llm.check_architecture(stored.model.config)
    path = output_path(artifact, out, "onnx", ".onnx", overwrite)
    if windows < 1:
        raise QuantwiseError(f"--samples {windows}: the parity check needs at least one window", "e.g. --samples 8")
    split = text_split(text)
    ids = text_windows(stored.tokenizer, split.evaluation, context, windows * context)
    with staged_file(path) as tmp:
        start = time.perf_counter()
        try:
            quantized = materialize(copy.deepcopy(stored.model), stored.layers, stored.recipe)  # write() converts stored.model in place
            notes = onnx_llm.write(stored.model, stored.layers, tmp)
            run = OnnxLM(tmp, threads or torch.get_num_threads())
        except QuantwiseError:
            raise
        except Exception as err:
            raise QuantwiseError(f"onnx export of this language model failed ({type(err).__name__}: {first_line(err, 160)})", "report it with the artifact's recipe") from err
        seconds = time.perf_counter() - start
        float_model = load_language_model(stored.spec, text).model if compare_float else None
        result = parity(run, quantized, float_model, ids, progress)
        if not result.passed:
            raise QuantwiseError(f"the onnx export does not match the quantized model (perplexity {result.perplexity_export:.3f} vs "
                                 f"{result.perplexity_quantized:.3f}, {result.delta_pct:+.2f}%; KV cache cosine {result.cache_cosine_min:.5f}; "
                                 f"needs {result.tolerance}); nothing was written",
                                 "report this model and recipe")
    export = ExportResult(artifact, target, path, path.stat().st_size / 1e6, seconds, result, notes + [f"evaluation text: {split.description}"])
    store.record_export(artifact, target, export.to_dict())
    return export
