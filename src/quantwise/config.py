"""Recipes: one small frozen dataclass per workflow, versioned to and from plain dicts.

A recipe is what ``quantwise quantize --recipe`` reads and what an artifact's
manifest stores, so every field is a plain value and every value is checked
when the recipe is built (a typo fails here, not deep inside torch).
"""
from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from quantwise.errors import QuantwiseError, choice_error

RECIPE_VERSION = 1

OBSERVERS = ("minmax", "moving-average", "histogram", "percentile", "mse")
GRANULARITIES = ("per-channel", "per-tensor")
BACKENDS = ("x86", "qnnpack", "xnnpack")  # xnnpack: pt2e only, for ExecuTorch
DYNAMIC_BACKENDS = ("torchao", "xnnpack")
STATIC_PATHS = ("fx", "pt2e")
ROUNDINGS = ("nearest", "adaround")


def _check_choice(what: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise choice_error(what, value, valid)


@dataclass(frozen=True)
class DynamicInt8:
    """Post-training dynamic quantization: int8 weights, activations quantized per batch.

    ``backend="torchao"``: Linear layers go through torchao; LSTM/GRU through the legacy
    kernels (the only ones that cover them); Embedding tables become int8 weight-only.
    ``backend="xnnpack"`` (preset ``dynamic-xnnpack``, for ExecuTorch): torch.export and
    ExecuTorch's XNNPACK quantizer with dynamic activations; linear layers get per-channel
    int8 weights, everything else (convolutions, LSTM, embeddings) stays float.
    """

    kind: ClassVar[str] = "dynamic"
    method: ClassVar[str] = "dynamic"  # the file in quantwise/methods/ that quantizes it
    linear: bool = True
    recurrent: bool = True
    embedding: bool = True
    keep_float: tuple[str, ...] = ()
    backend: str = "torchao"

    def __post_init__(self) -> None:
        _check_patterns(self, "keep_float")
        _check_choice("dynamic backend", self.backend, DYNAMIC_BACKENDS)
        if not (self.linear or self.recurrent or self.embedding):
            raise QuantwiseError("dynamic recipe quantizes nothing", "enable at least one of linear, recurrent, embedding")


@dataclass(frozen=True)
class StaticInt8:
    """Post-training static quantization: int8 weights and activations, calibrated.

    ``path="fx"`` gives the eager-module model (legacy kernels, fast in eager mode on
    most CNNs); ``path="pt2e"`` goes through torch.export and torchao's PT2E
    quantizer (fast only under torch.compile).

    ``weight_bits=4``: codes in [-8, 7] on a per-channel grid, stored and run as int8 values
    (fx: the legacy kernels; pt2e, backend x86: the same int8 kernels and exports).

    ``rounding="adaround"`` (pt2e path): on the same per-channel grid, each conv/linear
    weight's rounding is learned (AdaRound, ``rounding_iterations`` steps per layer, seeded by
    ``rounding_seed``) to reproduce the layer's float output on calibration data, layer by
    layer; see :mod:`quantwise.methods.static_adaround`.

    ``smoothquant=alpha`` (pt2e path): before calibration, each Linear's input is divided per
    channel by ``s = max|x|^alpha / max|W|^(1 - alpha)`` and its weight multiplied by it (exact in
    float), so that outlier channels fit the input's one static range (SmoothQuant); layers in
    ``keep_float`` are left alone. See :mod:`quantwise.methods.smoothing`.
    """

    kind: ClassVar[str] = "static"
    method: ClassVar[str] = "static_fx"  # the file in quantwise/methods/ that quantizes it
    observer: str = "histogram"
    granularity: str = "per-channel"
    backend: str = "x86"
    path: str = "fx"
    weight_bits: int = 8
    percentile: float = 99.99
    calibration_batches: int | None = None
    keep_float: tuple[str, ...] = ()
    keep_int8: tuple[str, ...] = ()
    rounding: str = "nearest"
    rounding_iterations: int = 200
    rounding_seed: int = 0
    smoothquant: float | None = None

    def __post_init__(self) -> None:
        _check_patterns(self, "keep_float")
        _check_patterns(self, "keep_int8")
        if self.smoothquant is not None:
            if isinstance(self.smoothquant, bool) or not isinstance(self.smoothquant, (int, float)) or not 0.0 <= self.smoothquant <= 1.0:
                raise QuantwiseError(f"smoothquant={self.smoothquant!r} is not an alpha in [0, 1]", "use e.g. smoothquant=0.5, or omit it")
            if self.path != "pt2e":
                raise QuantwiseError("smoothquant is implemented on the pt2e path only", "use static:path=pt2e,smoothquant=0.5")
        _check_choice("observer", self.observer, OBSERVERS)
        _check_choice("rounding", self.rounding, ROUNDINGS)
        if self.keep_int8 and (self.weight_bits != 4 or self.path != "pt2e"):
            raise QuantwiseError("keep_int8 names layers that keep 8-bit weights in a 4-bit pt2e recipe",
                                 "use static:path=pt2e,weight_bits=4,keep_int8=..., or drop keep_int8")
        if self.rounding_iterations < 1:
            raise QuantwiseError(f"rounding_iterations={self.rounding_iterations} is not a number of steps", "use 1 or more, e.g. rounding_iterations=200")
        if self.rounding == "adaround" and self.path != "pt2e":
            raise QuantwiseError("rounding=adaround is implemented on the pt2e path only", "use static:path=pt2e,rounding=adaround")
        _check_choice("granularity", self.granularity, GRANULARITIES)
        _check_choice("backend", self.backend, BACKENDS)
        _check_choice("static path", self.path, STATIC_PATHS)
        _check_weight_bits(self.weight_bits, self.path, self.backend)
        if self.calibration_batches is not None and self.calibration_batches < 1:
            raise QuantwiseError(f"calibration_batches={self.calibration_batches} is not a number of batches", "use 1 or more, or omit it for all of the calibration split")
        if not 50.0 < self.percentile <= 100.0:
            raise QuantwiseError(f"percentile {self.percentile} is out of range", "use a value in (50, 100], e.g. 99.99")
        if self.path == "pt2e" and self.backend == "qnnpack":
            raise QuantwiseError(
                "the pt2e path has no qnnpack quantizer in this torchao build",
                "use path=fx for backend qnnpack, backend=xnnpack with pt2e for ARM/mobile (ExecuTorch), or backend=x86",
            )
        if self.path == "fx" and self.backend == "xnnpack":
            raise QuantwiseError("backend xnnpack quantizes through torch.export only", "use static:path=pt2e,backend=xnnpack (needs executorch), or backend=qnnpack with path=fx")


@dataclass(frozen=True)
class QAT:
    """Quantization-aware training: fake-quantize, fine-tune with straight-through
    gradients, then convert to the same int8 model as static quantization.

    Trains on labelled data with cross-entropy when the model has labels, else
    distils the float model's outputs (mean squared error).
    """

    kind: ClassVar[str] = "qat"
    method: ClassVar[str] = "qat"  # the file in quantwise/methods/ that quantizes it
    weight_bits: int = 8
    granularity: str = "per-channel"
    backend: str = "x86"
    steps: int = 300
    batch_size: int = 64
    lr: float = 1e-4
    freeze_observers_after: float = 0.5
    keep_float: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_patterns(self, "keep_float")
        _check_choice("granularity", self.granularity, GRANULARITIES)
        _check_choice("backend", self.backend, BACKENDS)
        _check_weight_bits(self.weight_bits, "fx")
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0:
            raise QuantwiseError("qat needs steps >= 1, batch_size >= 1 and lr > 0", "e.g. steps=300 batch_size=64 lr=1e-4")
        if not 0.0 <= self.freeze_observers_after <= 1.0:
            raise QuantwiseError("freeze_observers_after is a fraction of the steps", "use a value in [0, 1]")


# separates keep_float patterns in the inline form; Python attribute names cannot contain it
KEEP_FLOAT_SEPARATOR = "|"


# recipe fields holding layer-name patterns: a list in files, ``|``-separated inline
LAYER_PATTERN_FIELDS = ("keep_float", "keep_int8")


def _check_patterns(recipe: Any, field: str) -> None:
    """Accept a list (recipe files), a tuple or one string; store a tuple of non-empty patterns."""
    value = getattr(recipe, field)
    if isinstance(value, str):
        value = value.split(KEEP_FLOAT_SEPARATOR)
    if not isinstance(value, (list, tuple)) or not all(isinstance(p, str) for p in value):
        raise QuantwiseError(f"{field} must be a list of layer-name patterns (got {value!r})", f'e.g. {field}: ["features.0.*", "classifier"]')
    patterns = tuple(p.strip() for p in value)
    if any(not p for p in patterns):
        raise QuantwiseError(f"{field} holds an empty pattern", f"write module names or fnmatch patterns separated by '{KEEP_FLOAT_SEPARATOR}'")
    object.__setattr__(recipe, field, patterns)


def _check_weight_bits(bits: int, path: str, backend: str = "x86") -> None:
    if bits not in (4, 8):
        raise QuantwiseError(f"weight_bits={bits} is not supported", "use 8, or 4 (stored as int8 values in [-8, 7])")
    if bits == 4 and path == "pt2e" and backend != "x86":
        raise QuantwiseError(f"4-bit weights on the pt2e path are implemented for backend x86, not {backend}",
                             "use static:path=pt2e,weight_bits=4 (backend x86), or weight_bits=8 for ExecuTorch's XNNPACK")


@dataclass(frozen=True)
class BF16:
    """bf16 autocast: float32 weights, convolutions and matmuls run in bfloat16.

    Not quantization, but on CPUs with AMX a strong alternative that ``auto`` weighs
    against int8. The artifact stores the float32 weights (no size saving).
    """

    kind: ClassVar[str] = "bf16"
    method: ClassVar[str] = "bf16"  # the file in quantwise/methods/ that quantizes it


SIGNROUND_BATCH = 4  # windows per SignRound step (4 x 512 tokens: ~0.25 s forward and backward through a SmolLM2 block on 2 threads)
# windows (spread evenly) on which a block's learned codes are checked against nearest rounding: the check's pass
# over all 128 windows cost 3.5 s of a SmolLM2 block's ~60 s on 2 threads; the steps still read every window
SIGNROUND_CHECK_WINDOWS = 32
SIGNROUND_MIN_WINDOWS = 2 * SIGNROUND_BATCH  # fewer, and each step sees half of all data: the offsets fit the text, not the model
# Measured on SmolLM2: with 2048 calibration tokens (8 x 256) a block's held-out output error still falls to 0.3-0.6x
# nearest rounding's; with 512 (8 x 64) the offsets fit the calibration text and the model ended worse than RTN (ppl 37.9 vs 29.6).
SIGNROUND_MIN_TOKENS = 2048
LLM_ALGORITHMS = ("rtn", "hqq", "gptq", "awq", "awq-gptq", "signround", "awq-signround")
GPTQ_GRIDS = ("minmax", "hqq")  # where GPTQ's group scales and zero-points come from
WEIGHT_ONLY_ACTIVATIONS = ("auto", "bfloat16", "float32")
INT4_KERNEL_GROUPS = (32, 64, 128)


def _check_group(bits: int, group_size: int | None) -> None:
    if group_size is not None and (group_size < 8 or group_size & (group_size - 1)):
        raise QuantwiseError(f"group_size={group_size} is not supported", "use 32, 64 or 128 (a power of two >= 8), or omit it for one group per output row")
    if bits == 4 and group_size not in INT4_KERNEL_GROUPS:
        raise QuantwiseError(f"int4 weights need a group size of 32, 64 or 128 (got {group_size})", "set group_size=64 (the honest setting for SmolLM2) or 32/128")


@dataclass(frozen=True)
class WeightOnly:
    """Weight-only quantization of a language model's Linear layers (activations stay float).

    8-bit: symmetric, one scale per output row (``group_size=None``). 4-bit: asymmetric,
    one scale and zero per ``group_size`` inputs, chosen by ``algorithm``: ``rtn`` (round
    to nearest), ``hqq`` (optimised zero-points, no data), ``gptq`` (Hessian error
    compensation, calibrated; ``act_order`` quantizes columns by decreasing Hessian
    diagonal; ``gptq_grid=hqq`` takes HQQ's optimised group parameters instead of min/max),
    ``awq`` (activation-aware scaling and clipping, calibrated), ``awq-gptq`` (AWQ's
    scales folded in, then GPTQ instead of RTN; preset ``int4-awq-gptq`` with the HQQ grid:
    SmolLM2 g64 perplexity +11.2 % against RTN's +27.5 %) or ``signround`` (preset
    ``int4-signround``: per decoder block, the rounding of every weight and two clipping
    factors per group learned together by signed gradient steps so that the block, fed what
    the quantized earlier blocks produce, reproduces the float model's hidden states;
    ``iterations`` steps of 4 windows per block, in the ``activations`` dtype (bfloat16
    autocast or float32: the recipe decides, not the CPU), ``seed``; see ``llm/block_rounding.py``;
    needs at least 8 calibration windows), or ``awq-signround`` (AWQ's scales folded in first,
    then SignRound on the scaled block; SignRound learns the clipping). GPTQ over-fits a small
    calibration set (measured on SmolLM2: with 8 windows of 512 tokens its held-out layer
    error was no better than RTN's; with 128 it was 2-4x lower), hence 128 windows. int4
    Activations (``activations``): ``auto`` (default) picks, on the machine that quantizes,
    bfloat16 where the CPU runs it natively (AVX-512 BF16 or AMX: the int4 kernel and the
    compiled int8 x bf16 kernel are fastest there, SmolLM2 int8 decode 52 tokens/s against 31
    for bf16, ~15 in float32) and float32 where bf16 would be emulated (AVX2-only x86: a
    576x1536 linear took 7x longer in bf16 than in float32); the artifact records the choice.
    float32 is also slightly more accurate (+0.31 % against +0.43 % perplexity for int8).
    The output layer (``lm_head``) gets ``lm_head_bits`` per-row weights, or stays float
    and tied to the embedding when ``lm_head_bits`` is None.
    """

    kind: ClassVar[str] = "weight-only"
    method: ClassVar[str] = "language"  # the file in quantwise/methods/ that quantizes it
    bits: int = 4
    group_size: int | None = 64
    algorithm: str = "rtn"
    lm_head_bits: int | None = 8
    calibration_samples: int = 128
    calibration_context: int = 512
    damp: float = 0.01
    act_order: bool = True
    gptq_grid: str = "minmax"
    activations: str = "auto"
    iterations: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        _check_choice("gptq_grid", self.gptq_grid, GPTQ_GRIDS)
        _check_choice("activations", self.activations, WEIGHT_ONLY_ACTIVATIONS)
        if self.bits not in (4, 8):
            raise QuantwiseError(f"bits={self.bits} is not supported for weight-only", "use bits=8 or bits=4")
        _check_choice("algorithm", self.algorithm, LLM_ALGORITHMS)
        _check_group(self.bits, self.group_size)
        if self.bits == 8 and self.group_size is not None:
            raise QuantwiseError("int8 weight-only uses one scale per output row", "omit group_size for bits=8")
        if self.bits == 8 and self.algorithm != "rtn":
            raise QuantwiseError(f"algorithm={self.algorithm} is implemented for int4 here", "use algorithm=rtn with bits=8 (per-row int8 is already near-lossless)")
        if self.lm_head_bits not in (None, 8):
            raise QuantwiseError(f"lm_head_bits={self.lm_head_bits} is not supported", "use 8, or none to keep the output layer float")
        _check_calibration(self.calibration_samples, self.calibration_context)
        if not 0 < self.damp < 1:
            raise QuantwiseError(f"damp={self.damp} is out of range", "use a fraction of the mean Hessian diagonal, e.g. 0.01")
        if self.iterations < 1:
            raise QuantwiseError(f"iterations={self.iterations} is not a number of SignRound steps", "use 1 or more (default 200)")
        tokens = self.calibration_samples * self.calibration_context
        if self.algorithm in ("signround", "awq-signround") and (self.calibration_samples < SIGNROUND_MIN_WINDOWS or tokens < SIGNROUND_MIN_TOKENS):
            raise QuantwiseError(
                f"signround learns one rounding offset per weight, and {self.calibration_samples} calibration windows x "
                f"{self.calibration_context} tokens are too few",
                f"use calibration_samples >= {SIGNROUND_MIN_WINDOWS} and samples x context >= {SIGNROUND_MIN_TOKENS} tokens (default 128 x 512)",
            )

    @property
    def needs_calibration(self) -> bool:
        return self.algorithm in ("gptq", "awq", "awq-gptq", "signround", "awq-signround")


@dataclass(frozen=True)
class DynamicActivation:
    """Language model Linear layers with int8 activations quantized per token at run time.

    ``weight_bits=8``: int8 per-row weights (torchao int8 x int8 kernels). ``weight_bits=4``:
    int4 group weights with int8 activations, the scheme mobile runtimes use (reference
    speed here). ``smoothquant`` migrates activation outliers into the weights (Xiao et
    al. 2022) with migration strength ``alpha``; ``alpha="search"`` picks, per layer group,
    the alpha of ``alpha_grid`` that minimises the output error on calibration text.
    """

    kind: ClassVar[str] = "dynamic-activation"
    method: ClassVar[str] = "language"  # the file in quantwise/methods/ that quantizes it
    weight_bits: int = 8
    group_size: int | None = None
    smoothquant: bool = False
    alpha: float | str = 0.5
    alpha_grid: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
    calibration_samples: int = 16
    calibration_context: int = 512

    def __post_init__(self) -> None:
        if self.weight_bits not in (4, 8):
            raise QuantwiseError(f"weight_bits={self.weight_bits} is not supported", "use 8 or 4")
        if self.weight_bits == 4 and self.group_size is None:
            raise QuantwiseError("int4 weights with int8 activations need a group size", "set group_size=32, 64 or 128")
        if self.weight_bits == 8 and self.group_size is not None:
            raise QuantwiseError("int8 weights with int8 activations use one scale per output row", "omit group_size for weight_bits=8")
        if self.group_size is not None:
            _check_group(self.weight_bits, self.group_size)
        if isinstance(self.alpha, str):
            if self.alpha != "search":
                raise QuantwiseError(f"alpha={self.alpha!r} is not a number", "use a value in [0, 1] or alpha=search")
        elif not 0.0 <= self.alpha <= 1.0:
            raise QuantwiseError(f"alpha={self.alpha} is out of range", "use a value in [0, 1] (0.5 is the paper's default) or alpha=search")
        object.__setattr__(self, "alpha_grid", tuple(float(a) for a in self.alpha_grid))
        if not self.alpha_grid or any(not 0.0 <= a <= 1.0 for a in self.alpha_grid):
            raise QuantwiseError("alpha_grid must be values in [0, 1]", "e.g. alpha_grid=[0.3, 0.5, 0.7]")
        _check_calibration(self.calibration_samples, self.calibration_context)

    @property
    def needs_calibration(self) -> bool:
        return self.smoothquant


GGUF_FILE_TYPES = ("Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K_M", "Q5_K_M", "Q6_K", "Q4_K", "Q5_K")
GGUF_BLOCK_TYPES = ("Q4_0", "Q4_K", "Q4_1", "Q5_0", "Q5_K", "Q5_1", "Q6_K", "Q8_0")
GGUF_ALGORITHMS = ("reference", "searched", "gptq", "awq-gptq")


@dataclass(frozen=True)
class GGUFWeights:
    """Language model weights on llama.cpp's block grids, for ``quantwise export --to gguf``.

    ``type`` is a llama.cpp file type: one block type everywhere (``Q8_0``, ``Q4_0``, ``Q4_1``,
    ``Q5_0``, ``Q5_1``, ``Q6_K``) or llama.cpp's mixture (``Q4_K_M`` / ``Q5_K_M``, also spelled
    ``Q4_K`` / ``Q5_K``: some tensors one type up, by llama.cpp's own rule; a calibrated algorithm
    counts as llama.cpp's "with an importance matrix" case). A tensor whose rows
    do not fit a K-quant's 256-weight super-blocks gets the type llama.cpp falls back to
    (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0), reported per tensor. ``pure`` uses the base type
    everywhere (llama-quantize's ``--pure``). The token table (tied to the output layer) is
    quantized too, with the type llama.cpp gives the output layer.

    ``type=auto`` chooses each tensor's block type from measured sensitivity instead (the Fisher
    information of the loss on calibration text, :mod:`quantwise.gguf.allocate`): the least
    estimated loss whose file is no larger than llama.cpp's file of type ``budget`` for the same
    model (or than ``bpw`` bits per quantized weight, when given), among the block types ``types``
    (all that quantwise writes when empty; e.g. ``types=Q4_K|Q5_0|Q6_K|Q8_0``, the types of
    llama.cpp's own Q4_K_M files).

    ``algorithm`` chooses the codes on those grids: ``reference`` (llama.cpp's quantizer without
    an importance matrix, no data), ``searched`` (scales searched under importance weights from
    calibration text, as llama.cpp's imatrix does), ``gptq`` (the searched grid, then GPTQ's
    error-compensating codes) or ``awq-gptq`` (AWQ scales folded in first).
    """

    kind: ClassVar[str] = "gguf"
    method: ClassVar[str] = "language"  # the file in quantwise/methods/ that quantizes it
    type: str = "Q4_K_M"
    algorithm: str = "gptq"
    pure: bool = False
    calibration_samples: int = 128
    calibration_context: int = 512
    damp: float = 0.01
    act_order: bool = True
    budget: str = "Q4_K_M"
    bpw: float = 0.0
    types: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "type", str(self.type).upper())
        object.__setattr__(self, "budget", str(self.budget).upper())
        _check_choice("GGUF file type", self.type, GGUF_FILE_TYPES + ("AUTO",))
        _check_choice("GGUF budget file type", self.budget, GGUF_FILE_TYPES)
        if not (self.bpw == 0 or 4.5 <= self.bpw <= 8.5):
            raise QuantwiseError(f"bpw={self.bpw} is outside what the GGUF block types give", "use bits per weight from 4.5 (Q4_0 everywhere) to 8.5 (Q8_0), or 0 to use budget=")
        names = self.types.split(KEEP_FLOAT_SEPARATOR) if isinstance(self.types, str) else list(self.types)
        object.__setattr__(self, "types", tuple(str(t).strip().upper() for t in names if str(t).strip()))
        for t in self.types:
            _check_choice("GGUF block type", t, GGUF_BLOCK_TYPES)
        if self.type != "AUTO" and (self.types or self.bpw):
            raise QuantwiseError("types= and bpw= apply only to type=auto", f"write gguf:type=auto,budget={self.type} or drop them")
        _check_choice("algorithm", self.algorithm, GGUF_ALGORITHMS)
        _check_calibration(self.calibration_samples, self.calibration_context)
        if not 0 < self.damp < 1:
            raise QuantwiseError(f"damp={self.damp} is out of range", "use a fraction of the mean Hessian diagonal, e.g. 0.01")

    @property
    def needs_calibration(self) -> bool:
        return self.algorithm != "reference"

    @property
    def file_type(self) -> str:
        """The llama.cpp file type the file is labelled with (an auto file's: its budget)."""
        return self.budget if self.type == "AUTO" else self.type


def _check_calibration(samples: int, context: int) -> None:
    if samples < 1 or context < 16:
        raise QuantwiseError(f"calibration needs samples >= 1 and context >= 16 (got {samples}, {context})", "e.g. calibration_samples=32 calibration_context=512")


Recipe = DynamicInt8 | StaticInt8 | QAT | BF16 | WeightOnly | DynamicActivation | GGUFWeights  # for annotations only

@dataclass(frozen=True)
class Preset:
    """A recipe a user picks by name, and where it belongs: the one table that parsing,
    ``quantwise recipes``, the commands' defaults and every refusal's list of valid recipes read."""

    recipe: Recipe
    about: str  # one line for ``quantwise recipes``
    models: str  # "classic" (CNNs, encoders, LSTMs), "language" (causal LMs, PyTorch runtime) or "gguf" (causal LMs, llama.cpp)
    compare: bool = False  # in ``compare``'s default set for its kind of model
    auto: bool = False  # a starting point of ``auto`` by default


MODEL_KINDS = ("classic", "language", "gguf")

PRESET_TABLE: dict[str, Preset] = {
    "bf16": Preset(BF16(), "not quantization: bf16 autocast, the baseline auto weighs int8 against", "classic", auto=True),
    "dynamic": Preset(DynamicInt8(), "int8 weights, activations quantized on the fly (Linear, LSTM/GRU, Embedding)", "classic", compare=True, auto=True),
    "dynamic-xnnpack": Preset(DynamicInt8(backend="xnnpack"), "dynamic int8 for ExecuTorch's XNNPACK (the mobile recipe for transformers)", "classic"),
    "static-fx": Preset(StaticInt8(path="fx"), "static int8, calibrated, FX graph mode (x86 kernels)", "classic", compare=True, auto=True),
    "static-pt2e": Preset(StaticInt8(path="pt2e"), "static int8, calibrated, torch.export graph with quantize/dequantize nodes (exports to ONNX)", "classic", compare=True, auto=True),
    "static-xnnpack": Preset(StaticInt8(path="pt2e", backend="xnnpack"), "static int8 for ExecuTorch's XNNPACK", "classic"),
    "static-adaround": Preset(StaticInt8(path="pt2e", rounding="adaround"), "static-pt2e with learned rounding (AdaRound; slower to quantize)", "classic"),
    "static-qnnpack": Preset(StaticInt8(path="fx", backend="qnnpack", granularity="per-tensor"), "static int8 for ARM (QNNPACK, per-tensor)", "classic"),
    "qat": Preset(QAT(), "quantization-aware training from the float weights", "classic", compare=True),
    "static-w4": Preset(StaticInt8(path="fx", weight_bits=4, observer="minmax"), "4-bit weights, int8 activations (simulated)", "classic"),
    "static-w4-adaround": Preset(StaticInt8(path="pt2e", weight_bits=4, rounding="adaround"), "4-bit weights (int8 storage) with learned rounding, int8 activations, pt2e (exports to ONNX)", "classic"),
    "qat-w4": Preset(QAT(weight_bits=4), "quantization-aware training with 4-bit weights", "classic"),
    "int8-weight-only": Preset(WeightOnly(bits=8, group_size=None), "int8 per-row weights, float activations", "language", compare=True, auto=True),
    "int4-rtn": Preset(WeightOnly(algorithm="rtn"), "int4 group 64, round to nearest", "language", compare=True),
    "int4-hqq": Preset(WeightOnly(algorithm="hqq"), "int4 group 64, HQQ (no data)", "language", compare=True, auto=True),
    "int4-gptq": Preset(WeightOnly(algorithm="gptq"), "int4 group 64, GPTQ (calibrated)", "language", compare=True),
    "int4-awq": Preset(WeightOnly(algorithm="awq"), "int4 group 64, AWQ scales and clipping (calibrated)", "language", compare=True),
    "int4-awq-gptq": Preset(WeightOnly(algorithm="awq-gptq", gptq_grid="hqq"), "int4 group 64, AWQ scales then GPTQ on HQQ's grid", "language", compare=True, auto=True),
    "int4-signround": Preset(WeightOnly(algorithm="signround"), "int4 group 64, SignRound: rounding and clipping learned per decoder block (SmolLM2-135M on 2 threads: about 18 min with native bf16, 45 without; name it to compare it)", "language"),
    "int4-awq-signround": Preset(WeightOnly(algorithm="awq-signround"), "int4 group 64, AWQ scales folded in, then SignRound on the scaled blocks (as slow as int4-signround; name it to compare it)", "language"),
    "w8a8": Preset(DynamicActivation(), "int8 weights and dynamic int8 activations", "language", compare=True, auto=True),
    "w8a8-smoothquant": Preset(DynamicActivation(smoothquant=True, alpha="search"), "w8a8 after SmoothQuant (alpha searched)", "language", compare=True, auto=True),
    "w4a8": Preset(DynamicActivation(weight_bits=4, group_size=64), "int4 group 64 weights, dynamic int8 activations", "language", compare=True),
    "gguf-q8_0": Preset(GGUFWeights(type="Q8_0"), "llama.cpp Q8_0 (export --to gguf)", "gguf", compare=True),
    "gguf-q4_0": Preset(GGUFWeights(type="Q4_0"), "llama.cpp Q4_0", "gguf", compare=True),
    "gguf-q4_k_m": Preset(GGUFWeights(type="Q4_K_M"), "llama.cpp Q4_K_M (k-quants, mixed per tensor as llama.cpp does)", "gguf", compare=True),
}
PRESETS: dict[str, Recipe] = {name: p.recipe for name, p in PRESET_TABLE.items()}
# Every recipe type has a preset, so the table also lists the types: a new recipe type is its
# dataclass (naming its method's file) and its rows above, plus that file in quantwise/methods/.
RECIPE_TYPES: dict[str, type] = {type(p.recipe).kind: type(p.recipe) for p in PRESET_TABLE.values()}
LLM_RECIPE_KINDS = tuple(dict.fromkeys(type(p.recipe).kind for p in PRESET_TABLE.values() if p.models != "classic"))


def preset_names(models: str, *, compare: bool | None = None, auto: bool | None = None) -> tuple[str, ...]:
    """The presets for a kind of model (see ``Preset.models``), optionally only compare's or auto's defaults."""
    if models not in MODEL_KINDS:
        raise ValueError(f"models must be one of {MODEL_KINDS}, got {models!r}")
    return tuple(name for name, p in PRESET_TABLE.items() if p.models == models
                 and (compare is None or p.compare == compare) and (auto is None or p.auto == auto))


LLM_PRESETS = preset_names("language")
LLM_COMPARE_DEFAULTS = preset_names("language", compare=True)  # every LLM preset but the slow int4-signround
GGUF_PRESETS = preset_names("gguf")


def check_language_recipe(recipe: Recipe, name: str) -> None:
    """Refuse a recipe that is not for language models, listing the ones that are."""
    if recipe.kind not in LLM_RECIPE_KINDS:
        raise QuantwiseError(f"recipe {name} is not for language models",
                             f"use one of: {', '.join(LLM_PRESETS + GGUF_PRESETS)}, or {' / '.join(k + ':...' for k in LLM_RECIPE_KINDS)}")


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    data = dataclasses.asdict(recipe)
    for field in LAYER_PATTERN_FIELDS:
        if field in data:
            data[field] = list(data[field])  # a list in JSON/YAML; recipe_from_dict takes it back
    return {"version": RECIPE_VERSION, "kind": recipe.kind, **data}


def recipe_from_dict(data: dict[str, Any]) -> Recipe:
    data = dict(data)
    version = data.pop("version", RECIPE_VERSION)
    if version != RECIPE_VERSION:
        raise QuantwiseError(f"recipe version {version} is not supported by this quantwise", f"use version {RECIPE_VERSION}")
    kind = data.pop("kind", None)
    if not isinstance(kind, str) or kind not in RECIPE_TYPES:
        raise choice_error("recipe kind", kind, tuple(RECIPE_TYPES))
    cls = RECIPE_TYPES[kind]
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise QuantwiseError(f"unknown key(s) {', '.join(unknown)} for a {kind} recipe", f"valid keys: {', '.join(sorted(names))}")
    _check_types(cls, kind, data)
    try:
        return cls(**data)
    except TypeError as err:
        raise QuantwiseError(f"bad {kind} recipe: {err}", "check the value types") from None


def _check_types(cls: type, kind: str, data: dict[str, Any]) -> None:
    """Each value must have its field's type: a bool is true/false (not 'yes' or 1), a count a whole
    number, a number finite; what the field's annotation allows, named in the message otherwise."""
    hints = typing.get_type_hints(cls)
    defaults = cls()  # type: ignore[call-arg]  (every recipe type has all-default fields)
    for name, value in data.items():
        allowed = typing.get_args(hints[name]) if typing.get_origin(hints[name]) in (typing.Union, types.UnionType) else (hints[name],)
        if not any(_fits(value, t) for t in allowed):
            wanted = " or ".join(_type_word(t) for t in allowed)
            raise QuantwiseError(f"{kind} recipe field {name}={value!r} is not {wanted}", f"e.g. {name}={_inline(getattr(defaults, name))}")


MAX_WHOLE = 2**53  # larger whole numbers are no count or setting a recipe can use


def _fits(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool) and abs(value) < MAX_WHOLE
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) < MAX_WHOLE and math.isfinite(value)
    if annotation is str:
        return isinstance(value, str)
    if origin is tuple:  # tuple[X, ...]: a list or tuple of X (keep_float also takes one string)
        item = typing.get_args(annotation)[0]
        return (isinstance(value, str) and item is str) or (isinstance(value, (list, tuple)) and all(_fits(v, item) for v in value))
    return True


def _type_word(annotation: Any) -> str:
    if typing.get_origin(annotation) is tuple:
        return f"a list of {_type_word(typing.get_args(annotation)[0])}s"
    return {bool: "true/false", int: "a whole number below 2^53", float: "a finite number", str: "a string", type(None): "none"}.get(annotation, str(annotation))


def parse_recipe(spec: str) -> Recipe:
    """A preset name, a JSON/YAML file, or ``kind:key=value,...`` (e.g. ``static:observer=mse,path=pt2e``).

    ``keep_float`` (and ``keep_int8``) take layer-name patterns separated by ``|``: ``static:keep_float=_fc|_blocks.0.*``.
    """
    if spec in PRESETS:
        return PRESETS[spec]
    path = Path(spec)
    if path.suffix in (".json", ".yaml", ".yml"):
        if not path.is_file():
            raise QuantwiseError(f"recipe file {spec} does not exist", "give a path to a JSON or YAML recipe, or a preset name")
        return recipe_from_dict(_read_mapping(path))
    kind, _, rest = spec.partition(":")
    if kind not in RECIPE_TYPES:
        raise QuantwiseError(
            f"unknown recipe {spec!r}",
            f"use a preset ({', '.join(PRESETS)}), a .json/.yaml file, or kind:key=value with kind one of {', '.join(RECIPE_TYPES)}",
        )
    data: dict[str, Any] = {"kind": kind}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise QuantwiseError(f"recipe option {item!r} has no value", "write key=value, e.g. observer=mse")
        key = key.strip().replace("-", "_")
        data[key] = value.strip() if key in LAYER_PATTERN_FIELDS else _coerce(value.strip())
    return recipe_from_dict(data)


def recipe_name(recipe: Recipe) -> str:
    for name, preset in PRESETS.items():
        if preset == recipe:
            return name
    defaults = RECIPE_TYPES[recipe.kind]()  # type: ignore[call-arg]
    changed = [f"{k}={_inline(v)}" for k, v in dataclasses.asdict(recipe).items() if getattr(defaults, k) != v]
    return f"{recipe.kind}:{','.join(changed)}" if changed else recipe.kind


def _inline(value: Any) -> str:
    return KEEP_FLOAT_SEPARATOR.join(value) if isinstance(value, tuple) else str(value)


def _coerce(value: str) -> Any:
    if value.lower() in ("none", "null"):
        return None
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def write_recipe(recipe: Recipe, path: str | Path) -> Path:
    """Write ``recipe`` as JSON, or YAML for a .yaml/.yml path (atomically); ``parse_recipe`` reads it back."""
    from quantwise.files import atomic_write_text

    path = Path(path)
    data = recipe_to_dict(recipe)
    if path.suffix in (".yaml", ".yml"):
        import yaml

        text = yaml.safe_dump(data, sort_keys=False)
    elif path.suffix == ".json":
        text = json.dumps(data, indent=2) + "\n"
    else:
        raise QuantwiseError(f"recipe file {path} must end in .json, .yaml or .yml", "e.g. --recipe-out best.json")
    return atomic_write_text(path, text)


def _read_mapping(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as err:  # parse errors of either format
        raise QuantwiseError(f"cannot parse recipe file {path}: {err}".splitlines()[0], "fix the file's syntax") from None
    if not isinstance(data, dict):
        raise QuantwiseError(f"recipe file {path} does not hold a mapping", "write key: value pairs with a 'kind' key")
    return data
