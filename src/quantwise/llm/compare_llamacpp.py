"""``compare`` rows that run in llama.cpp: the float model written as an F32 GGUF, and each ``gguf``
recipe's file, all measured by llama.cpp itself (through llama-cpp-python, in a child process).

Perplexity is scored on the very windows the PyTorch rows use, token ids fed directly (so the
tokenizer plays no part) and scored the same way; a GGUF row's Δ is against llama.cpp's own F32
perplexity, so that runtime differences cancel. Speed: one forward over the prefill window and
greedy decode after the prompt, logits for the last position only (as a user runs llama.cpp),
medians over the repeats.
"""
from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from quantwise.config import GGUF_PRESETS, GGUFWeights, recipe_name
from quantwise.errors import QuantwiseError

RUNTIME = "llama.cpp"


def check_available(spec: str) -> tuple[Path, str]:
    """(source GGUF, architecture), or one line saying why llama.cpp rows cannot be measured."""
    from quantwise.gguf import llamacpp
    from quantwise.llm.model import source_gguf
    from quantwise.gguf.writer import source_architecture

    if not llamacpp.available():
        raise QuantwiseError("llama.cpp rows need llama-cpp-python, which is not installed",
                             "install the extra: pip install 'quantwise[llamacpp]' (scripts/setup.sh builds it for this CPU)")
    source = source_gguf(spec)
    return source, source_architecture(source)


@contextmanager
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="quantwise-llamacpp-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def measure(path: Path, windows: torch.Tensor, prompt: torch.Tensor, prefill: torch.Tensor, decode_tokens: int, repeats: int, work: Path) -> dict:
    """llama.cpp's perplexity on ``windows`` and its prefill / decode tokens per second."""
    from quantwise.gguf.llamacpp import run_isolated

    return run_isolated(path, windows, prompt.tolist(), decode_tokens, torch.get_num_threads(), work, speed=(prefill.tolist(), repeats))


def write_float(model: torch.nn.Module, source: Path, arch: str, out: Path) -> None:
    """The float model as an all-F32 GGUF with the source file's metadata and tokenizer."""
    from quantwise.gguf.tensors import model_tensors
    from quantwise.gguf.writer import write

    write(out, source, model_tensors(model, {}, arch), 0)


def write_quantized(model: torch.nn.Module, layers: dict, recipe: GGUFWeights, source: Path, arch: str, out: Path) -> None:
    """A GGUF recipe's file, read back and checked bit for bit against quantwise's weights."""
    from quantwise.gguf.tensors import model_tensors
    from quantwise.gguf.types import LLAMA_FILE_TYPE
    from quantwise.gguf.writer import verify, write

    tensors = model_tensors(model, layers, arch)
    write(out, source, tensors, LLAMA_FILE_TYPE[recipe.file_type])
    check = verify(out, tensors)
    if not (check.bytes_equal and check.weights_equal):
        raise RuntimeError(f"the written GGUF does not hold quantwise's weights ({check.first_mismatch})")


def label(name: str, recipe: GGUFWeights) -> str:
    return name if name in GGUF_PRESETS else recipe_name(recipe)
