"""Quantize a causal language model layer by layer.

Calibrated algorithms (GPTQ, AWQ, SmoothQuant) never hold more than one decoder block's
activations: the calibration windows run through the embedding once, then each block in
turn (1) runs on the current hidden states with hooks that collect what its Linear layers
see, (2) is quantized (its float weights replaced by their dequantized values), and (3)
runs again to produce the next block's input, so later blocks calibrate on what the
quantized earlier blocks actually produce (as GPTQ does). The model is quantized in place and
each quantized float weight is released once its block is done. Loaded with
``defer_blocks=True``, a block's float weights are read from the file only when its turn comes:
peak memory is then the embeddings plus the codes plus one block's weights and working set.

The result holds, for every quantized Linear, a :class:`GroupQuant` (codes, scales, zeros)
and the float tensors that changed (norm weights that absorbed AWQ/SmoothQuant scales);
:mod:`quantwise.llm.runtime` turns that into torchao tensors.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from quantwise.config import SIGNROUND_BATCH, SIGNROUND_CHECK_WINDOWS, DynamicActivation, GGUFWeights, WeightOnly
from quantwise.errors import QuantwiseError
from quantwise.algorithms import (
    GroupGrid,
    GroupQuant,
    HessianAccumulator,
    awq_clip_search,
    awq_search,
    gptq,
    hqq,
    rtn,
    smooth_scales,
    smoothed_output_mse,
)
from quantwise.llm.block_rounding import BlockRounding, round_block
from quantwise.llm.memory import large_frees_to_os, older_objects_frozen, release_free_memory
from quantwise.llm.model import LanguageModel
from quantwise.llm.weights import DeferredBlocks
from quantwise.llm.blocks import block_linears, calibration_batches, decoder_layers
from quantwise.progress import ProgressFn, no_progress

log = logging.getLogger(__name__)

LLMRecipe = WeightOnly | DynamicActivation | GGUFWeights
CALIBRATION_BATCH = 2  # windows per forward: bounds the block's activation temporaries
MAX_SAMPLE_TOKENS = 4096  # activations kept per Linear input for AWQ / SmoothQuant searches


@dataclass
class QuantizedLM:
    """Codes for every quantized Linear plus the model they came from (those weights released)."""

    model: nn.Module
    recipe: LLMRecipe
    layers: dict[str, Any]  # GroupQuant, or GGUFQuant for a GGUF recipe (the token table included)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def weight_grid(recipe: LLMRecipe) -> GroupGrid:
    if isinstance(recipe, GGUFWeights):  # AWQ's scale search on a grid like the file type's (blocks of 32)
        from quantwise.gguf.formats import FORMATS
        from quantwise.gguf.types import BASE_TYPE

        return GroupGrid(FORMATS[BASE_TYPE[recipe.file_type]].bits, 32)
    if isinstance(recipe, WeightOnly):
        return GroupGrid(recipe.bits, recipe.group_size, symmetric=recipe.bits == 8)
    return GroupGrid(recipe.weight_bits, recipe.group_size, symmetric=recipe.weight_bits == 8)


LM_HEAD_GRID = GroupGrid(8, None, symmetric=True)


def check_recipe_fits(model: nn.Module, recipe: LLMRecipe) -> None:
    """Refuse, before any work, a group size that does not divide a layer's inputs."""
    if isinstance(recipe, GGUFWeights):
        from quantwise.llm.gguf_types import gguf_types

        gguf_types(model, recipe)
        return
    grid = weight_grid(recipe)
    for name, module in block_linears(model).items():
        try:
            grid.groups(module.in_features)
        except ValueError as err:
            raise QuantwiseError(f"layer {name}: {err}".split("; ")[0], str(err).split("; ")[1] if "; " in str(err) else "choose another group size") from None


def quantize_lm(lm: LanguageModel, recipe: LLMRecipe, progress: ProgressFn = no_progress) -> QuantizedLM:
    """Quantize ``lm.model`` in place: the quantized Linear layers' float weights are released
    (keeping peak memory near the float model's size); pass the result to
    ``runtime.materialize`` to run it, or to ``artifact.save``."""
    with older_objects_frozen():  # the per-block collections look at this work's objects only
        return _quantize_lm(lm, recipe, progress)


def _quantize_lm(lm: LanguageModel, recipe: LLMRecipe, progress: ProgressFn) -> QuantizedLM:
    from quantwise.llm.runtime import for_this_machine

    start = time.perf_counter()
    model = lm.model.eval()
    check_recipe_fits(model, recipe)
    grid = weight_grid(recipe)
    recipe, machine_note = for_this_machine(recipe)
    notes: list[str] = [machine_note] if machine_note else []
    types = {}
    if isinstance(recipe, GGUFWeights):
        from quantwise.llm.gguf_types import auto_types, gguf_types

        if recipe.type == "AUTO":  # the Fisher pass needs the whole model
            if lm.deferred is not None:
                lm.deferred.load_all()
                lm.deferred = None
            types = auto_types(lm, recipe, progress, notes)
        else:
            types = gguf_types(model, recipe)
    load_block = lm.deferred.load if lm.deferred is not None else (lambda index: None)
    # the token table is not read again until the blocks are done: out of memory meanwhile (read back by load_all)
    set_aside_tokens = (lambda: _set_aside(lm.deferred, model.get_input_embeddings())) if lm.deferred is not None else (lambda: None)
    if recipe.needs_calibration:
        batches = calibration_batches(lm, recipe.calibration_samples, recipe.calibration_context)
        _check_memory(model, batches.shape[0], batches.shape[1])
        notes.append(f"calibrated on {batches.shape[0]} windows x {batches.shape[1]} tokens of calibration text (disjoint from evaluation)")
        with large_frees_to_os():
            layers = _quantize_calibrated(model, recipe, grid, batches, progress, notes, load_block, set_aside_tokens, types)
    else:
        layers = {}
        linears = block_linears(model)
        block = None
        for name, module in progress("quantizing layers", linears.items(), len(linears)):
            if name.split(".")[2] != block:  # model.layers.<i>.…: trim once per decoder block
                block = name.split(".")[2]
                release_free_memory()
                load_block(int(block))
            layers[name] = _quantize_plain(module.weight.data, recipe, grid, types.get(name))
            _release(module)
        release_free_memory()
    if lm.deferred is not None:  # every block was read above; a block without Linears is read here
        lm.deferred.load_all()
        lm.deferred = None
    if isinstance(recipe, GGUFWeights):
        _gguf_tables(model, recipe, types, layers, notes)
    if isinstance(recipe, WeightOnly) and recipe.lm_head_bits:
        head = model.get_output_embeddings()
        layers["lm_head"] = _rtn_in_row_chunks(head.weight.data, LM_HEAD_GRID)
        tied = bool(getattr(model.config, "tie_word_embeddings", False))
        notes.append("output layer and token table: int8 per row, stored once (tied: the lookup reads the output layer's codes)" if tied
                     else "output layer: int8 per row")
    return QuantizedLM(model, recipe, layers, time.perf_counter() - start, notes)


def _check_memory(model: nn.Module, samples: int, context: int) -> None:
    """Refuse up front, with the knobs that shrink it, a calibration that cannot fit in memory."""
    from quantwise.llm.memory import available_bytes, calibration_working_set

    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    hidden = model.get_input_embeddings().weight.shape[1]
    need = calibration_working_set(samples, context, hidden, max(m.in_features for m in linears))
    free = available_bytes()
    if free is not None and need > free:
        raise QuantwiseError(
            f"calibrating on {samples} windows x {context} tokens needs about {need / 2**30:.1f} GiB more memory, and {free / 2**30:.1f} GiB is available",
            "lower calibration_samples or calibration_context in the recipe (e.g. weight-only:algorithm=gptq,calibration_samples=32), or use rtn/hqq, which need no calibration",
        )


def _set_aside(deferred: DeferredBlocks, table: nn.Module) -> None:
    released = deferred.set_aside(table)
    if released:
        log.info("token table set aside during the block loop (%.0f MB; read back from the file after the last block)", released / 1e6)


def _rtn_in_row_chunks(w: torch.Tensor, grid: GroupGrid, rows: int = 4096) -> GroupQuant:
    """RTN of a large matrix (the output layer) a slice of rows at a time, bounding temporaries."""
    parts = [rtn(w[i : i + rows], grid) for i in range(0, w.shape[0], rows)]
    return GroupQuant(torch.cat([p.qdata for p in parts]), torch.cat([p.scale for p in parts]), torch.cat([p.zero for p in parts]), grid)


def _release(module: nn.Linear) -> None:
    """Drop a quantized Linear's float weight (``runtime.materialize`` installs the codes)."""
    module.weight = nn.Parameter(torch.empty(0, dtype=module.weight.dtype), requires_grad=False)


def _gguf_layer(w: torch.Tensor, recipe: GGUFWeights, chosen: Any, hessian: torch.Tensor | None) -> Any:
    from quantwise.gguf.formats import FORMATS
    from quantwise.gguf.quant import quantize_weight

    quant = quantize_weight(w, FORMATS[chosen.chosen], recipe.algorithm, hessian, damp=recipe.damp, act_order=recipe.act_order)
    quant.reason = chosen.reason
    return quant


def _gguf_tables(model: nn.Module, recipe: GGUFWeights, types: dict[str, Any], layers: dict[str, Any], notes: list[str]) -> None:
    """The token table (and an untied output layer) in their llama.cpp types: llama.cpp's reference
    rule for ``algorithm=reference`` (the whole file is then llama-quantize's, byte for byte), else
    the weighted scale search without data (a table is read row by row; tied, it is also the
    output layer). A tied table is stored once and stays tied."""
    from quantwise.gguf.formats import FORMATS
    from quantwise.gguf.quant import quantize_weight

    for name in ("model.embed_tokens", "lm_head"):
        if name not in types:
            continue
        module = model.get_input_embeddings() if name == "model.embed_tokens" else model.get_output_embeddings()
        rule = "reference" if recipe.algorithm == "reference" else "searched"
        quant = quantize_weight(module.weight.data, FORMATS[types[name].chosen], rule)
        quant.reason = types[name].reason
        layers[name] = quant
        module.weight.data = quant.dequantize()  # in place: a tied output layer shares it
    counts: dict[str, int] = {}
    for t in types.values():
        counts[t.chosen] = counts.get(t.chosen, 0) + 1
    notes.append("GGUF block types: " + ", ".join(f"{k} x{v}" for k, v in sorted(counts.items())))
    fell = [t for t in types.values() if t.fell_back]
    if fell:
        notes.append(f"{len(fell)} tensors fall back to another type because their rows do not fit the K-quants' 256-weight blocks "
                     f"(e.g. {fell[0].name}: {fell[0].wanted} -> {fell[0].chosen}); the manifest lists each")


def _quantize_plain(w: torch.Tensor, recipe: LLMRecipe, grid: GroupGrid, chosen: Any = None) -> Any:
    if isinstance(recipe, GGUFWeights):
        return _gguf_layer(w, recipe, chosen, None)
    if isinstance(recipe, WeightOnly) and recipe.algorithm == "hqq":
        return hqq(w, grid)
    return rtn(w, grid)


class _Stop(Exception):
    pass


@torch.no_grad()
def _first_layer_inputs(model: nn.Module, batches: torch.Tensor) -> list[tuple[torch.Tensor, dict[str, Any]]]:
    """(hidden states, keyword arguments) that the first decoder layer receives, per batch."""
    captured: list[tuple[torch.Tensor, dict[str, Any]]] = []

    def hook(module, args, kwargs):
        hidden = args[0] if args else kwargs.pop("hidden_states")
        kept = {k: v for k, v in kwargs.items() if k != "hidden_states"}
        if captured:  # every window has the same positions: keep one copy of equal tensors (rotary cos/sin)
            first = captured[0][1]
            kept = {k: first[k] if _same(v, first.get(k)) else v for k, v in kept.items()}
        captured.append((hidden, kept))
        raise _Stop

    handle = decoder_layers(model)[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for i in range(0, len(batches), CALIBRATION_BATCH):
            try:
                model(batches[i : i + CALIBRATION_BATCH], use_cache=False)
            except _Stop:
                pass
    finally:
        handle.remove()
    return captured


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return False


class _InputStats:
    """What one Linear's input looked like over the calibration set."""

    def __init__(self, in_features: int, hessian: bool, samples: bool) -> None:
        self.hessian = HessianAccumulator(in_features) if hessian else None
        self.absmax = torch.zeros(in_features)
        self.keep = samples
        self.samples: list[torch.Tensor] = []
        self.kept = 0

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).float()
        self.absmax = torch.maximum(self.absmax, x.abs().amax(0))
        if self.hessian is not None:
            self.hessian.add(x)
        if self.keep and self.kept < MAX_SAMPLE_TOKENS:
            step = max(1, x.shape[0] // 256)  # 256 tokens spread over each batch's windows; the first batches fill the sample
            part = x[::step][: MAX_SAMPLE_TOKENS - self.kept]
            self.samples.append(part.clone())
            self.kept += part.shape[0]

    def x(self) -> torch.Tensor:
        return torch.cat(self.samples)


@torch.no_grad()
def _quantize_calibrated(model: nn.Module, recipe: LLMRecipe, grid: GroupGrid, batches: torch.Tensor, progress: ProgressFn,
                         notes: list[str], load_block: Callable[[int], None], set_aside_tokens: Callable[[], None],
                         types: dict[str, Any]) -> dict[str, Any]:
    layers_out: dict[str, GroupQuant] = {}
    load_block(0)  # its pre-hooks run before the capture's: it must be readable
    state = _first_layer_inputs(model, batches)
    set_aside_tokens()
    blocks = decoder_layers(model)
    gguf = isinstance(recipe, GGUFWeights)
    uses_gptq = gguf or (isinstance(recipe, WeightOnly) and recipe.algorithm in ("gptq", "awq-gptq"))
    uses_awq = isinstance(recipe, (WeightOnly, GGUFWeights)) and recipe.algorithm in ("awq", "awq-gptq", "awq-signround")
    uses_signround = isinstance(recipe, WeightOnly) and recipe.algorithm in ("signround", "awq-signround")
    smoothing = isinstance(recipe, DynamicActivation) and bool(recipe.smoothquant)
    hidden = _Hidden()  # SignRound's inputs and targets, each held once
    chosen_alphas: list[float] = []
    rounded: list[BlockRounding] = []
    for index, block in enumerate(progress("quantizing blocks", blocks, len(blocks))):
        load_block(index)  # deferred loading: only this block's float weights are resident
        linears = {n: m for n, m in block.named_modules() if isinstance(m, nn.Linear)}
        if uses_signround:
            if uses_awq:  # scales first (function-preserving in float); SignRound then learns the rounding and the clipping
                stats = _collect_stats(block, linears, state, hessian=False, samples=True, until_sampled=True)
                _awq_block(block, stats, grid, clip=False)
                del stats
            rounded.append(_signround_block(block, linears, state, hidden, grid, recipe, index))
            for name, module in linears.items():
                quant = rounded[-1].layers[name]
                layers_out[f"model.layers.{index}.{name}"] = quant
                module.weight.data = quant.dequantize()
            _next_state(block, state, linears)
            continue
        stats = _collect_stats(block, linears, state, hessian=uses_gptq, samples=uses_awq or not uses_gptq,
                               until_sampled=uses_awq and not uses_gptq)  # AWQ alone reads only the samples
        if uses_awq:
            _awq_block(block, stats, grid, clip=not uses_gptq)
        elif smoothing:
            chosen_alphas += _smooth_block(block, stats, recipe)
        for st in stats.values():
            st.samples.clear()  # only the scale searches above read them; GPTQ needs the Hessians
        for name, module in linears.items():
            w = module.weight.data
            if gguf:
                quant = _gguf_layer(w, recipe, types[f"model.layers.{index}.{name}"], stats[name].hessian.hessian())
            elif uses_gptq:
                init = hqq(w, grid) if recipe.gptq_grid == "hqq" else None
                quant = gptq(w, stats[name].hessian.hessian(), grid, damp=recipe.damp, act_order=recipe.act_order,
                             qparams=None if init is None else (init.scale, init.zero))
            else:
                quant = rtn(w, grid)
            layers_out[f"model.layers.{index}.{name}"] = quant
            module.weight.data = quant.dequantize()
        del stats
        _next_state(block, state, linears)
    if rounded:
        notes.append(_signround_note(rounded, recipe))
        if uses_awq:
            notes.append("AWQ scales folded into the RMSNorm weights (q/k/v, gate/up) and the up projection (down) before SignRound")
    if chosen_alphas:
        counts = {a: chosen_alphas.count(a) for a in sorted(set(chosen_alphas))}
        notes.append("SmoothQuant alpha chosen per layer group: " + ", ".join(f"{a:g} x{c}" for a, c in counts.items()))
    if gguf:
        notes.append({"searched": "scales searched under the importance (mean squared input) of each column",
                      "gptq": "scales searched under each column's importance, then GPTQ codes on exactly those grids",
                      "awq-gptq": "AWQ scales folded into the RMSNorm weights and up projections, then searched scales and GPTQ codes"}[recipe.algorithm])
    elif uses_awq and uses_gptq:
        notes.append("AWQ scales folded into the RMSNorm weights (q/k/v, gate/up) and the up projection (down), then GPTQ on the scaled weights (no clipping search)")
    elif uses_awq:
        notes.append("AWQ scales folded into the RMSNorm weights (q/k/v, gate/up) and the up projection (down), then per-group clipping searched (not for q/k); o_proj keeps RTN scaling when v_proj's outputs do not match its inputs (grouped-query attention)")
    return layers_out


@torch.no_grad()
def _next_state(block: nn.Module, state: list, linears: dict[str, nn.Linear]) -> None:
    """Run the (now quantized) block to give the next block its input, then drop its float weights.
    Each window's output overwrites its input (a block's output has its input's shape), so the
    hidden states are held once, however they are stored (SignRound keeps them in one tensor)."""
    for hidden, kwargs in state:
        out = block(hidden, **kwargs)
        hidden.copy_(out[0] if isinstance(out, tuple) else out)
        del out
    for module in linears.values():
        _release(module)  # the codes are kept; the dequantized copy was only needed for the pass above
    release_free_memory()  # hand the block's temporaries back, or the heap keeps growing block after block


@dataclass
class _Hidden:
    """SignRound's calibration hidden states, each held once for all blocks and updated in place:
    ``inputs``, what the quantized earlier blocks produce (``state`` holds views of it), and
    ``targets``, the float model's own. Two copies in all: a fresh pair per block would hold
    four at its peak (SmolLM2, 128 x 512 tokens: 151 MB each)."""

    inputs: torch.Tensor | None = None
    targets: torch.Tensor | None = None


@torch.no_grad()
def _signround_block(block: nn.Module, linears: dict[str, nn.Linear], state: list, hidden: _Hidden,
                     grid: GroupGrid, recipe: WeightOnly, index: int) -> BlockRounding:
    """SignRound for one block: inputs are what the quantized earlier blocks produce (``state``),
    targets the float model's hidden states after this block, which advance in place."""
    kwargs = state[0][1]
    lengths = [len(h) for h, _ in state]
    if hidden.inputs is None:  # the first block: join the windows once (views of one tensor from here on)
        hidden.inputs = torch.cat([h for h, _ in state])
        state[:] = [(view, kw) for view, (_, kw) in zip(hidden.inputs.split(lengths), state)]
        hidden.targets = hidden.inputs.clone()  # the float model's input to the first block is the same
    for window in hidden.targets.split(lengths):  # the block is still float here
        out = block(window, **kwargs)
        window.copy_(out[0] if isinstance(out, tuple) else out)
        del out
    result = round_block(block, linears, kwargs, hidden.inputs, hidden.targets, grid, iterations=recipe.iterations, seed=recipe.seed + index,
                        bf16=recipe.activations == "bfloat16")  # the recipe (resolved for the machine, and stored) decides, not the CPU
    if result.fallback:
        log.warning("block %d keeps round-to-nearest: %s", index, result.fallback)
    return result


def _signround_note(rounded: list[BlockRounding], recipe: WeightOnly) -> str:
    ratios = sorted(r.ratio for r in rounded if r.fallback is None)
    note = (f"SignRound: rounding and clipping learned per decoder block ({recipe.iterations} steps of {SIGNROUND_BATCH} windows"
            f"{', bfloat16 autocast, as the model runs' if recipe.activations == 'bfloat16' else ', float32, as the model runs'}) "
            f"on the quantized earlier blocks' outputs, to match the float model's")
    if ratios:
        note += f"; block output error vs nearest rounding on {SIGNROUND_CHECK_WINDOWS} calibration windows: median x{ratios[len(ratios) // 2]:.2f} (x{ratios[0]:.2f}-x{ratios[-1]:.2f})"
    fell = [i for i, r in enumerate(rounded) if r.fallback]
    if fell:
        note += f"; blocks {', '.join(map(str, fell))} keep nearest rounding ({rounded[fell[0]].fallback})"
    return note


@torch.no_grad()
def _collect_stats(block: nn.Module, linears: dict[str, nn.Linear], state: list, hessian: bool, samples: bool,
                   until_sampled: bool = False) -> dict[str, _InputStats]:
    """Run the block over every calibration batch, collecting what each Linear reads. Linears fed
    the very same tensor (q/k/v, gate/up) share one :class:`_InputStats`: one Hessian, one sample.
    ``until_sampled``: the caller reads only the kept samples (AWQ's searches), so stop once every
    sample is full (the same tokens as a full pass keeps: the first batches'); the Hessians and
    maxima then cover those batches only."""
    seen: dict[str, torch.Tensor] = {}  # held, so that no two live inputs can share an id()

    def record(mod, args, name):
        seen[name] = args[0]

    _run_hooked(block, state[:1], {m: lambda mod, args, n=n: record(mod, args, n) for n, m in linears.items()})
    stats: dict[str, _InputStats] = {}
    owner: dict[int, str] = {}
    for name, module in linears.items():
        first = owner.setdefault(id(seen[name]) if name in seen else id(module), name)
        stats[name] = stats[first] if first != name else _InputStats(module.in_features, hessian=hessian, samples=samples)
    owners = set(owner.values())
    seen.clear()
    full = (lambda: all(stats[n].kept >= MAX_SAMPLE_TOKENS for n in owners)) if until_sampled else None
    _run_hooked(block, state, {m: lambda mod, args, s=stats[n]: s.add(args[0]) for n, m in linears.items() if n in owners}, full)
    return stats


def _run_hooked(block: nn.Module, state: list, hooks: dict[nn.Module, Any], done: Callable[[], bool] | None = None) -> None:
    """Run ``block`` over the (hidden, kwargs) pairs of ``state`` with forward pre-hooks on the
    given modules, stopping early once ``done()`` is true."""
    handles = [module.register_forward_pre_hook(hook) for module, hook in hooks.items()]
    try:
        for hidden, kwargs in state:
            if done is not None and done():
                break
            block(hidden, **kwargs)
    finally:
        for h in handles:
            h.remove()


def _smoothing_groups(block: nn.Module) -> list[tuple[nn.Module, list[str], str]]:
    """(module whose output rows / norm weight absorb 1/s, Linear names that take x/s, name)."""
    try:
        attn, mlp = block.self_attn, block.mlp
        groups = [
            (block.input_layernorm, ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"], "qkv"),
            (block.post_attention_layernorm, ["mlp.gate_proj", "mlp.up_proj"], "gate/up"),
            (mlp.up_proj, ["mlp.down_proj"], "down"),
        ]
        if attn.v_proj.out_features == attn.o_proj.in_features:
            groups.append((attn.v_proj, ["self_attn.o_proj"], "o"))
    except AttributeError as err:
        raise QuantwiseError(f"AWQ/SmoothQuant need Llama-style blocks (input_layernorm, self_attn.q/k/v/o_proj, mlp.gate/up/down_proj): {err}", "use algorithm=rtn, hqq or gptq") from None
    return groups


def _fold(previous: nn.Module, linears: list[nn.Linear], s: torch.Tensor) -> None:
    """x -> x / s in ``previous`` (norm weight or Linear output rows), W -> W * s in the consumers."""
    previous.weight.data = previous.weight.data / s.reshape(-1, *([1] * (previous.weight.dim() - 1)))
    if getattr(previous, "bias", None) is not None:
        previous.bias.data = previous.bias.data / s
    for lin in linears:
        lin.weight.data = lin.weight.data * s


def _awq_block(block: nn.Module, stats: dict[str, _InputStats], grid: GroupGrid, clip: bool = True) -> None:
    """AWQ scales (and, with ``clip``, clipping) for every smoothing group of ``block``. The
    Hessians collected for GPTQ are moved to the scaled inputs ``x / s``: ``H / (s s^T)``."""
    for previous, names, _ in _smoothing_groups(block):
        linears = [block.get_submodule(n) for n in names]
        x = stats[names[0]].x()
        result = awq_search(x, [m.weight.data for m in linears], grid)
        _fold(previous, linears, result.scales)
        for st in {id(stats[n]): stats[n] for n in names}.values():  # q/k/v (gate/up) share one
            if st.hessian is not None:
                st.hessian.rescale(1.0 / result.scales)
        if not clip:
            continue
        # AWQ's clipping search; like the reference, not for q/k (errors there are amplified by softmax)
        for name, m in zip(names, linears, strict=True):
            if not name.endswith(("q_proj", "k_proj")):
                m.weight.data = awq_clip_search(x / result.scales, m.weight.data, grid)


def _smooth_block(block: nn.Module, stats: dict[str, _InputStats], recipe: DynamicActivation) -> list[float]:
    chosen = []
    for previous, names, _ in _smoothing_groups(block):
        linears = [block.get_submodule(n) for n in names]
        weights = [m.weight.data for m in linears]
        absmax = stats[names[0]].absmax
        alphas = recipe.alpha_grid if recipe.alpha == "search" else (float(recipe.alpha),)
        if len(alphas) == 1:
            best = alphas[0]
        else:
            errors = smoothed_output_mse(stats[names[0]].x(), weights, absmax, alphas)
            best = alphas[min(range(len(alphas)), key=errors.__getitem__)]
        _fold(previous, linears, smooth_scales(absmax, weights, best))
        chosen.append(best)
    return chosen
