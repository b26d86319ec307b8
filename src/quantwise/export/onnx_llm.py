"""ONNX for language-model artifacts: weight-only Linear layers as ONNX Runtime's MatMulNBits.

Each quantized Linear keeps its own codes, scales and zero-points (GPTQ / AWQ / HQQ grids
included; fractional zero-points as integer ones plus a correction) in ``com.microsoft::MatMulNBits``, which computes
``A @ ((code - zero) * scale)^T`` block-wise, the dequantization the PyTorch model uses:

- int4 groups of 32/64/128: the artifact's packed codes are already MatMulNBits' layout
  (two codes a byte, low nibble first along K), reshaped to [N, K / block, block / 2];
  integer zero-points (RTN, GPTQ, AWQ) packed alike; the fractional ones z of the HQQ grid
  (int4-hqq, int4-awq-gptq) are split into the nearest integer zi, packed alike, and the rest:
  ``(q - z) s = (q - zi) s - (z - zi) s``, the last term added as one small float MatMul of the
  block sums of the input (ONNX Runtime 1.32 runs MatMulNBits with float zero-points on a slow
  kernel at batch 1, about 0.45 ms per 576x576 layer: int4-hqq decoded at 9.4 tokens/s, now 39.0);
- int8 (per row, the output layer of the int4 recipes and the int8 weight-only recipe):
  symmetric codes shifted by 128 into uint8 with zero-point 128, and the row's scale repeated
  over blocks of a power-of-two size (MatMulNBits needs one), which changes no value.

The token table stays in bfloat16 as the artifact stores it (rows cast to float32 on lookup);
everything else (norms, rotary attention) is exported in float32, computing what the PyTorch
model computes in bfloat16 a little more exactly. The graph carries the KV cache as inputs and
outputs (``onnx_lm_runtime``): token ids [batch, sequence] and the cache so far (possibly empty)
-> logits and the extended cache, so one file scores text (empty cache) and generates (one
token per call). Recipes that quantize activations (w8a8, smoothquant, w4a8) are refused with
the reason.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from quantwise.config import WeightOnly
from quantwise.errors import QuantwiseError
from quantwise.export.onnx_lm_runtime import PAST, PRESENT
from quantwise.llm.decode import cache_kwarg
from quantwise.algorithms import GroupQuant

NOTE = ("torch.export-based ONNX exporter; weight-only Linear layers as ONNX Runtime's MatMulNBits (com.microsoft: needs ONNX Runtime) "
        "with the artifact's own codes and scales, the rest in float32; input_ids + past_key/value_{layer} -> logits + present_key/value_{layer} "
        "(KV cache as inputs and outputs, empty to score text)")
BLOCKS = (128, 64, 32, 16)  # block sizes MatMulNBits takes (powers of two >= 16)
# MatMulNBits' accuracy_level. 0: float arithmetic on the dequantized weights (every layer but the output
# layer); 4: the activations quantized to int8 per block, integer dot products. ONNX Runtime 1.32's 8-bit
# kernel at level 0 is very slow at batch 1 (SmolLM2's int8 output layer: 74 ms of a 170 ms decode
# step); the output layer at level 4 took int4-rtn decoding from 12 to 72 tokens/s with perplexity
# within 0.3 % of the PyTorch model's (measured). Every layer at level 4 moved perplexity +0.7 % (int4)
# and broke the KV cache check for int8-weight-only (cosine 0.994: the int8 activation blocks of one
# token differ from those of a whole window), so the other layers stay at level 0.
ACCURACY_LEVEL, OUTPUT_ACCURACY_LEVEL = 0, 4


@torch.library.custom_op("quantwise::matmul_nbits", mutates_args=())
def matmul_nbits(x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, k: int, n: int, bits: int, block: int, level: int) -> torch.Tensor:
    """``x @ W^T`` with ``W[n, k]`` dequantized from MatMulNBits' layout: ``packed`` [n, k_blocks,
    block * bits / 8] uint8, ``scales`` [n, k_blocks] float32, ``zeros`` as ``unpack`` takes them;
    ``level`` is MatMulNBits' accuracy_level in the ONNX graph (this reference computes in float)."""
    return x @ unpack(packed, scales, zeros, k, bits, block).t()


@matmul_nbits.register_fake
def _(x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, k: int, n: int, bits: int, block: int, level: int) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], n))


def _onnx_matmul_nbits(x, packed, scales, zeros, k: int, n: int, bits: int, block: int, level: int):  # noqa: ANN001, ANN202 (onnxscript values)
    from quantwise.export.ort_ops import contrib_op

    return contrib_op("MatMulNBits")(x, packed, scales, zeros, K=k, N=n, bits=bits, block_size=block, accuracy_level=level)


def _nibbles(packed: torch.Tensor) -> torch.Tensor:
    """uint8 [..., m] -> [..., 2m] 4-bit values, low nibble first."""
    return torch.stack((packed & 0x0F, packed >> 4), dim=-1).flatten(-2)


def unpack(packed: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, k: int, bits: int, block: int) -> torch.Tensor:
    """The float32 weight [n, k] a MatMulNBits layout holds (``zeros``: uint8 packed like the
    codes, [n, ceil(k_blocks * bits / 8)])."""
    n, k_blocks, _ = packed.shape
    codes = _nibbles(packed) if bits == 4 else packed
    zeros = (_nibbles(zeros) if bits == 4 else zeros)[:, :k_blocks]
    w = (codes.float() - zeros.float().unsqueeze(-1)) * scales.unsqueeze(-1)
    return w.reshape(n, k_blocks * block)[:, :k]


def layout(quant: GroupQuant) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, torch.Tensor | None]:
    """(packed codes, scales, zeros, block size, offset) of ``quant`` in MatMulNBits' layout. ``offset``
    is None, or for 4-bit fractional zero-points [k_blocks, n]: what the integer zero-points in
    ``zeros`` leave out, ``W = unpack(...) - offset^T`` repeated over each block."""
    grid = quant.grid
    if grid.bits not in (4, 8):
        raise QuantwiseError(f"{grid.bits}-bit weights have no MatMulNBits layout", "quantize with 4- or 8-bit weights to export to ONNX")
    n, k = quant.shape
    codes, zeros = quant.qdata, quant.zero
    if grid.symmetric:  # signed codes -> unsigned, zero-point shifted alike: (q + o) - (z + o) = q - z
        shift = 2 ** (grid.bits - 1)
        codes, zeros = (codes.to(torch.int16) + shift).to(torch.uint8), zeros + shift
    group = grid.group_len(k)
    if group in BLOCKS:
        block, scales = group, quant.scale
    else:  # one scale per row (or a group MatMulNBits cannot take): repeat it over power-of-two blocks
        if group % 16:
            raise QuantwiseError(f"groups of {group} inputs have no MatMulNBits block size", "quantize with group size 32, 64 or 128")
        block = next(b for b in BLOCKS if group % b == 0)
        scales, zeros = (t.repeat_interleave(group // block, dim=1) for t in (quant.scale, zeros))
    codes = codes.reshape(n, k // block, block)
    packed = _pack4(codes) if grid.bits == 4 else codes
    zeros, offset = zeros.float(), None
    if grid.bits == 4 and not _are_codes(zeros, grid.bits):
        whole = zeros.round().clamp(0, 2**grid.bits - 1)
        offset, zeros = ((zeros - whole) * scales.float()).t().contiguous(), whole
    if _are_codes(zeros, grid.bits):
        zeros = zeros.to(torch.uint8)  # integer zero-points: packed like the codes (ORT's 8-bit CPU kernel takes no other)
        zeros = _pack4(torch.nn.functional.pad(zeros, (0, zeros.shape[1] % 2))) if grid.bits == 4 else zeros
    elif grid.bits == 8:
        raise QuantwiseError("8-bit weights with fractional zero-points have no ONNX Runtime kernel (MatMulNBits)", "quantize the 8-bit layers symmetric or min/max (int8-weight-only)")
    return packed.contiguous(), scales.float().contiguous(), zeros.contiguous(), block, offset


def _are_codes(zeros: torch.Tensor, bits: int) -> bool:
    """Whether ``zeros`` are whole numbers in the range of ``bits``-bit unsigned codes."""
    return torch.equal(zeros, zeros.round()) and 0 <= float(zeros.min()) and float(zeros.max()) <= 2**bits - 1


def _pack4(values: torch.Tensor) -> torch.Tensor:
    """[..., 2m] values 0..15 -> [..., m] bytes, low nibble first."""
    return values[..., 0::2] | (values[..., 1::2] << 4)


class NBitsLinear(nn.Module):
    """A quantized Linear as MatMulNBits' tensors and one custom op (its bias, if any, added after;
    for fractional zero-points, the block sums of the input times ``offset`` subtracted)."""

    def __init__(self, quant: GroupQuant, bias: torch.Tensor | None = None, level: int = ACCURACY_LEVEL) -> None:
        super().__init__()
        self.level = level
        packed, scales, zeros, self.block, offset = layout(quant)
        self.n, self.k = quant.shape
        self.bits = quant.grid.bits
        self.register_buffer("packed", packed)
        self.register_buffer("scales", scales)
        self.register_buffer("zeros", zeros)
        self.register_buffer("offset", offset)
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.ops.quantwise.matmul_nbits(x, self.packed, self.scales, self.zeros, self.k, self.n, self.bits, self.block, self.level)
        if self.offset is not None:
            y = y - x.unflatten(-1, (self.k // self.block, self.block)).sum(-1) @ self.offset
        return y if self.bias is None else y + self.bias


class WithCache(nn.Module):
    """Token ids and the KV cache as flat tensors -> logits and the extended cache: the graph ONNX receives.

    ``past`` holds, per layer, keys then values [batch, kv_heads, past, head_dim]; they seed a
    transformers ``DynamicCache`` inside the trace, so the model's own attention extends it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.layers = int(model.config.num_hidden_layers)

    def forward(self, input_ids: torch.Tensor, *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        for i in range(self.layers):
            cache.update(past[2 * i], past[2 * i + 1], i)
        position = torch.arange(input_ids.shape[1], device=input_ids.device) + past[0].shape[2]
        out = self.model(input_ids=input_ids, position_ids=position.unsqueeze(0), cache_position=position, use_cache=True, **{cache_kwarg(self.model): cache})
        return (out.logits, *[t for layer in cache.layers for t in (layer.keys, layer.values)])


def cache_shape(config: object) -> tuple[int, int]:
    """(kv heads, head dim) of a Hugging Face decoder config."""
    heads = int(getattr(config, "num_key_value_heads", None) or config.num_attention_heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)
    return heads, head_dim


def check(recipe: object) -> None:
    if not isinstance(recipe, WeightOnly):
        raise QuantwiseError(f"cannot export a {getattr(recipe, 'kind', recipe)} language model to onnx: its activations are quantized, "
                             "and the ONNX export of language models translates weight-only layers (MatMulNBits)",
                             "quantize with int8-weight-only or an int4 recipe (int4-rtn, int4-hqq, int4-gptq, int4-awq, int4-awq-gptq, int4-signround, int4-awq-signround) to export")


def check_architecture(config: object) -> None:
    """The exported graph keeps one growing KV cache per layer and one causal mask: a model whose
    layers mix sliding-window and full attention (Gemma 2/3 style hybrid caches) needs a mask per
    kind of layer, which this export does not build."""
    kinds = set(getattr(config, "layer_types", None) or ())
    if len(kinds) > 1:
        raise QuantwiseError(f"cannot export {getattr(config, 'model_type', 'this model')} to onnx: its layers mix {' and '.join(sorted(kinds))} "
                             "(a hybrid cache), which the ONNX export of language models does not handle",
                             "run it in PyTorch (quantwise eval / generate / compare), or export a model with one kind of attention")


class Bf16Embedding(nn.Module):
    """The token table kept in bfloat16 (as the artifact stores it), rows cast to float32 on lookup:
    half the bytes of a float32 table, the same values."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("table", table.detach().to(torch.bfloat16).contiguous())

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return nn.functional.embedding(ids, self.table).float()


def prepare(model: nn.Module, layers: dict[str, GroupQuant]) -> nn.Module:
    """The float32 model with each quantized Linear swapped for its MatMulNBits twin (and a
    bfloat16 token table where the artifact holds one)."""
    from quantwise.llm.embedding import QuantizedEmbedding

    table = model.get_input_embeddings().weight
    tied = getattr(model.config, "tie_word_embeddings", False)
    if tied and "lm_head" in layers:  # the table is the output layer's int8 codes (Gather + scale in the graph)
        head = layers["lm_head"]
        embedding = QuantizedEmbedding(head.qdata.to(torch.int8), head.scale.reshape(-1), torch.float32)
    else:
        embedding = Bf16Embedding(table) if table.dtype == torch.bfloat16 and not tied else None  # before .float() converts it in place
    model = model.float().eval()
    if embedding is not None:
        model.set_input_embeddings(embedding)
    head = model.get_output_embeddings()
    output = next((n for n, m in model.named_modules() if head is not None and m is head), None)
    for name, quant in layers.items():
        parent, _, attr = name.rpartition(".")
        level = OUTPUT_ACCURACY_LEVEL if name == output else ACCURACY_LEVEL
        setattr(model.get_submodule(parent) if parent else model, attr, NBitsLinear(quant, model.get_submodule(name).bias, level))
    return WithCache(model)


def write(model: nn.Module, layers: dict[str, GroupQuant], path: Path) -> list[str]:
    """Export ``model`` (an artifact's architecture with its float tensors) and ``layers`` to ``path``,
    with the KV cache as inputs and outputs."""
    wrapped = prepare(model, layers)
    heads, head_dim = cache_shape(model.config)
    kv = [f"{kind}_{i}" for i in range(wrapped.layers) for kind in ("key", "value")]
    example = (torch.arange(1, 5).view(1, -1), *(torch.zeros(1, heads, 6, head_dim) for _ in kv))  # sizes 0 and 1 would be specialized
    longest = int(getattr(model.config, "max_position_embeddings", 2048))
    batch = torch.export.Dim("batch", min=1, max=64)
    seq, past = torch.export.Dim("sequence", min=1, max=longest), torch.export.Dim("past", min=0, max=longest)
    logging.getLogger("onnxscript").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            wrapped, example, dynamo=True, input_names=["input_ids", *(PAST + n for n in kv)],
            output_names=["logits", *(PRESENT + n for n in kv)], verbose=False,
            dynamic_shapes=({0: batch, 1: seq}, tuple({0: batch, 2: past} for _ in kv)),
            custom_translation_table={torch.ops.quantwise.matmul_nbits.default: _onnx_matmul_nbits},
        )
    program.save(str(path), external_data=False)
    return [NOTE]
