"""llama.cpp's block formats: parameters, codes, their exact weights and their bytes.

A weight ``[rows, cols]`` (``nn.Linear`` layout) is cut along each row into blocks; every
format stores, per block, fp16 scales (and mins) and integer codes. The weights a file holds
are, exactly as ``gguf.quants.dequantize`` (llama.cpp's reference dequantizers, in float32)
computes them:

========  =====  ======================================================================
format    block  weight of code ``q`` (float32 arithmetic, in this order)
========  =====  ======================================================================
Q8_0        32   ``d * q``,  ``q`` in -128..127
Q4_0        32   ``d * (q - 8)``,  ``q`` in 0..15
Q5_0        32   ``d * (q - 16)``,  ``q`` in 0..31
Q4_1        32   ``d * q + m``,  ``q`` in 0..15
Q5_1        32   ``d * q + m``,  ``q`` in 0..31
Q4_K       256   ``(d * sc_j) * q - (dmin * m_j)``: 8 sub-blocks of 32, 6-bit ``sc_j``, ``m_j``
Q5_K       256   as Q4_K, ``q`` in 0..31
Q6_K       256   ``(d * sc_j) * (q - 32)``: 16 sub-blocks of 16, int8 ``sc_j``, ``q`` in 0..63
========  =====  ======================================================================

:class:`BlockParams` holds a tensor's parameters, :func:`weights` computes the weights of codes
under them (bit for bit what the file dequantizes to), :func:`scale_zero` gives the same grid
as one float ``(scale, zero)`` per sub-block (``w ~ (q - zero) * scale``) for algorithms that
pick codes (GPTQ), and :func:`pack` / :func:`unpack` turn codes and parameters into the
format's bytes, one row of blocks per weight row (``[rows, row_bytes]`` uint8).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["BlockFormat", "BlockParams", "FORMATS", "format_named", "weights", "scale_zero", "pack", "unpack"]


@dataclass(frozen=True)
class BlockFormat:
    """One llama.cpp block type: ``block`` weights per block, one scale per ``sub`` weights."""

    name: str
    block: int
    sub: int
    bits: int
    affine: bool  # a min (Q4_1, Q5_1, K-quants) rather than a fixed code offset
    offset: int  # the code of 0.0 in the symmetric formats
    bytes_per_block: int

    @property
    def super_block(self) -> bool:
        """True for the K-quants (sub-block scales quantized against fp16 super-block scales)."""
        return self.block == 256

    @property
    def qmin(self) -> int:
        return -128 if self.name == "Q8_0" else 0

    @property
    def qmax(self) -> int:
        return 127 if self.name == "Q8_0" else 2**self.bits - 1

    @property
    def code_dtype(self) -> torch.dtype:
        return torch.int8 if self.name == "Q8_0" else torch.uint8

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.bytes_per_block / self.block

    def fits(self, cols: int) -> bool:
        return cols > 0 and cols % self.block == 0

    def row_bytes(self, cols: int) -> int:
        return cols // self.block * self.bytes_per_block

    @property
    def qtype(self):
        from gguf import GGMLQuantizationType

        return GGMLQuantizationType[self.name]


FORMATS: dict[str, BlockFormat] = {f.name: f for f in (
    BlockFormat("Q8_0", 32, 32, 8, False, 0, 34),
    BlockFormat("Q4_0", 32, 32, 4, False, 8, 18),
    BlockFormat("Q5_0", 32, 32, 5, False, 16, 22),
    BlockFormat("Q4_1", 32, 32, 4, True, 0, 20),
    BlockFormat("Q5_1", 32, 32, 5, True, 0, 24),
    BlockFormat("Q4_K", 256, 32, 4, True, 0, 144),
    BlockFormat("Q5_K", 256, 32, 5, True, 0, 176),
    BlockFormat("Q6_K", 256, 16, 6, False, 32, 210),
)}


def format_named(name: str) -> BlockFormat:
    try:
        return FORMATS[name.upper()]
    except KeyError:
        raise ValueError(f"unknown GGUF block type {name!r}; use one of {', '.join(FORMATS)}") from None


@dataclass
class BlockParams:
    """A tensor's block parameters (``[rows, n_blocks]`` unless noted).

    ``d``: fp16 block (super-block) scale. ``m``: fp16 min of Q4_1 / Q5_1, or ``dmin`` of
    Q4_K / Q5_K. ``sc``: the K-quants' sub-block scales ``[rows, n_blocks, n_sub]`` (uint8
    0..63, int8 for Q6_K). ``mn``: Q4_K / Q5_K sub-block mins ``[rows, n_blocks, 8]`` uint8.
    """

    fmt: BlockFormat
    d: torch.Tensor
    m: torch.Tensor | None = None
    sc: torch.Tensor | None = None
    mn: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.d.dtype != torch.float16 or self.d.dim() != 2:
            raise ValueError(f"d must be float16 [rows, n_blocks], got {self.d.dtype} {tuple(self.d.shape)}")
        if self.fmt.affine != (self.m is not None):
            raise ValueError(f"{self.fmt.name}: m must be {'given' if self.fmt.affine else 'None'}")
        if self.fmt.super_block != (self.sc is not None):
            raise ValueError(f"{self.fmt.name}: sc must be {'given' if self.fmt.super_block else 'None'}")

    @property
    def rows(self) -> int:
        return self.d.shape[0]

    @property
    def cols(self) -> int:
        return self.d.shape[1] * self.fmt.block


def _sub_scale_min(p: BlockParams) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-sub-block float32 scale and (subtracted) min, ``[rows, n_sub_total]``, as the dequantizer forms them."""
    d = p.d.to(torch.float32)
    if not p.fmt.super_block:
        return d, (p.m.to(torch.float32) if p.m is not None else None)
    scale = (d.unsqueeze(-1) * p.sc.to(torch.float32)).reshape(p.rows, -1)
    if p.mn is None:
        return scale, None
    return scale, (p.m.to(torch.float32).unsqueeze(-1) * p.mn.to(torch.float32)).reshape(p.rows, -1)


def weights(codes: torch.Tensor, p: BlockParams) -> torch.Tensor:
    """The float32 weights ``[rows, cols]`` that ``codes`` under ``p`` stand for, bit for bit as
    llama.cpp's reference dequantizer (``gguf.quants.dequantize``) computes them."""
    fmt = p.fmt
    if tuple(codes.shape) != (p.rows, p.cols):
        raise ValueError(f"codes {tuple(codes.shape)} do not match the parameters' [{p.rows}, {p.cols}]")
    scale, low = _sub_scale_min(p)
    q = codes.to(torch.float32).reshape(p.rows, scale.shape[1], fmt.sub)
    s = scale.unsqueeze(-1)
    if not fmt.affine:
        return (s * (q - fmt.offset)).reshape(p.rows, p.cols)
    if fmt.super_block:  # (d * sc) * q - (dmin * m)
        return (s * q - low.unsqueeze(-1)).reshape(p.rows, p.cols)
    return (s * q + low.unsqueeze(-1)).reshape(p.rows, p.cols)  # d * q + m


def scale_zero(p: BlockParams) -> tuple[torch.Tensor, torch.Tensor]:
    """The grid as one float32 ``(scale, zero)`` per sub-block (``[rows, cols / sub]``), with
    ``w ~ (q - zero) * scale``: exact for the symmetric formats, to float32 rounding for the
    affine ones. A zero scale (an all-zero block) becomes the smallest normal float, so that
    rounding ``w / scale + zero`` stays finite."""
    scale, low = _sub_scale_min(p)
    safe = torch.where(scale == 0, torch.full_like(scale, torch.finfo(torch.float32).tiny), scale)
    if not p.fmt.affine:
        return safe, torch.full_like(scale, float(p.fmt.offset))
    zero = (low if p.fmt.super_block else -low) / safe
    return safe, zero


def codes_for(w: torch.Tensor, p: BlockParams) -> torch.Tensor:
    """Nearest codes of ``w`` ``[rows, cols]`` on the grid ``p`` (ties away from the float rounding
    of ``w / scale + zero``; clamped to the format's code range)."""
    scale, zero = scale_zero(p)
    sub = p.fmt.sub
    wg = w.detach().to(torch.float32).reshape(p.rows, -1, sub)
    q = torch.round(wg / scale.unsqueeze(-1) + zero.unsqueeze(-1)).clamp_(p.fmt.qmin, p.fmt.qmax)
    return q.reshape(p.rows, p.cols).to(p.fmt.code_dtype)


# ---- bytes -------------------------------------------------------------------------------

def _f16_bytes(t: torch.Tensor) -> np.ndarray:
    """fp16 ``[rows, n]`` -> uint8 ``[rows, n, 2]`` (little-endian, as GGUF stores it)."""
    return t.contiguous().numpy().astype("<f2").view(np.uint8).reshape(*t.shape, 2)


def _nibbles(q: np.ndarray) -> np.ndarray:
    """``[..., 2k]`` codes -> ``[..., k]`` bytes: element i in the low nibble, i + k in the high one."""
    k = q.shape[-1] // 2
    return (q[..., :k] & 0x0F) | ((q[..., k:] & 0x0F) << 4)


def _from_nibbles(b: np.ndarray) -> np.ndarray:
    return np.concatenate([b & 0x0F, b >> 4], axis=-1)


def _pack_k_scales(sc: np.ndarray, mn: np.ndarray) -> np.ndarray:
    """Q4_K / Q5_K: 8 six-bit scales and 8 six-bit mins -> 12 bytes (llama.cpp's layout)."""
    out = np.empty((*sc.shape[:-1], 12), dtype=np.uint8)
    out[..., 0:4] = sc[..., :4] | ((sc[..., 4:] >> 4) << 6)
    out[..., 4:8] = mn[..., :4] | ((mn[..., 4:] >> 4) << 6)
    out[..., 8:12] = (sc[..., 4:] & 0x0F) | ((mn[..., 4:] & 0x0F) << 4)
    return out


def _unpack_k_scales(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d, m, md = b[..., 0:4], b[..., 4:8], b[..., 8:12]
    sc = np.concatenate([d & 0x3F, (md & 0x0F) | ((d >> 2) & 0x30)], axis=-1)
    mn = np.concatenate([m & 0x3F, (md >> 4) | ((m >> 2) & 0x30)], axis=-1)
    return sc, mn


def pack(codes: torch.Tensor, p: BlockParams) -> torch.Tensor:
    """Codes and parameters -> the format's bytes, ``[rows, row_bytes]`` uint8."""
    fmt = p.fmt
    if tuple(codes.shape) != (p.rows, p.cols):
        raise ValueError(f"codes {tuple(codes.shape)} do not match the parameters' [{p.rows}, {p.cols}]")
    if int(codes.min()) < fmt.qmin or int(codes.max()) > fmt.qmax:
        raise ValueError(f"{fmt.name} codes must lie in {fmt.qmin}..{fmt.qmax}")
    rows, nb = p.d.shape
    q = codes.contiguous().numpy().view(np.uint8).reshape(rows, nb, fmt.block)
    parts: list[np.ndarray]
    if fmt.name == "Q8_0":
        parts = [_f16_bytes(p.d), q]
    elif fmt.name in ("Q4_0", "Q4_1"):
        parts = [_f16_bytes(p.d)] + ([_f16_bytes(p.m)] if fmt.affine else []) + [_nibbles(q)]
    elif fmt.name in ("Q5_0", "Q5_1"):
        qh = np.packbits((q >> 4) & 1, axis=-1, bitorder="little")  # bit i of the little-endian uint32 = element i
        parts = [_f16_bytes(p.d)] + ([_f16_bytes(p.m)] if fmt.affine else []) + [qh, _nibbles(q)]
    elif fmt.name in ("Q4_K", "Q5_K"):
        chunks = q.reshape(rows, nb, 4, 64)  # qs[32c + l] holds elements 64c + l (low) and 64c + 32 + l (high)
        qs = _nibbles(chunks).reshape(rows, nb, 128)
        scales = _pack_k_scales(p.sc.numpy(), p.mn.numpy())
        parts = [_f16_bytes(p.d), _f16_bytes(p.m), scales]
        if fmt.name == "Q5_K":  # qh[l] bit j = high bit of element 32j + l
            high = ((q.reshape(rows, nb, 8, 32) >> 4) & 1).astype(np.uint8)
            parts.append((high << np.arange(8, dtype=np.uint8).reshape(1, 1, 8, 1)).sum(axis=2, dtype=np.uint8))
        parts.append(qs)
    elif fmt.name == "Q6_K":
        halves = q.reshape(rows, nb, 2, 4, 32)  # per half of 128: four runs of 32
        ql = np.concatenate([(halves[..., 0, :] & 0x0F) | ((halves[..., 2, :] & 0x0F) << 4),
                             (halves[..., 1, :] & 0x0F) | ((halves[..., 3, :] & 0x0F) << 4)], axis=-1).reshape(rows, nb, 128)
        hi = (halves >> 4) & 0x03
        qh = (hi[..., 0, :] | (hi[..., 1, :] << 2) | (hi[..., 2, :] << 4) | (hi[..., 3, :] << 6)).reshape(rows, nb, 64)
        parts = [ql, qh, p.sc.numpy().view(np.uint8), _f16_bytes(p.d)]
    else:  # pragma: no cover - FORMATS lists only the above
        raise ValueError(fmt.name)
    blocks = np.concatenate([x.reshape(rows, nb, -1) for x in parts], axis=-1)
    if blocks.shape[-1] != fmt.bytes_per_block:  # pragma: no cover - a layout bug
        raise AssertionError(f"{fmt.name}: {blocks.shape[-1]} bytes per block, expected {fmt.bytes_per_block}")
    return torch.from_numpy(np.ascontiguousarray(blocks.reshape(rows, nb * fmt.bytes_per_block)))


def unpack(data: torch.Tensor, fmt: BlockFormat, cols: int) -> tuple[torch.Tensor, BlockParams]:
    """The inverse of :func:`pack`: ``[rows, row_bytes]`` uint8 -> (codes, parameters)."""
    if data.dtype != torch.uint8 or data.dim() != 2 or data.shape[1] != fmt.row_bytes(cols) or not fmt.fits(cols):
        raise ValueError(f"{fmt.name}: expected uint8 [rows, {fmt.row_bytes(cols) if fmt.fits(cols) else '?'}] for {cols} columns, "
                         f"got {data.dtype} {tuple(data.shape)}")
    rows, nb = data.shape[0], cols // fmt.block
    b = data.contiguous().numpy().reshape(rows, nb, fmt.bytes_per_block)

    def f16(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x).view("<f2").astype(np.float16).reshape(rows, nb))

    m = sc = mn = None
    if fmt.name == "Q8_0":
        d, q = f16(b[..., :2]), b[..., 2:].view(np.int8)
    elif fmt.name in ("Q4_0", "Q4_1", "Q5_0", "Q5_1"):
        d, at = f16(b[..., :2]), 2
        if fmt.affine:
            m, at = f16(b[..., 2:4]), 4
        high = None
        if fmt.bits == 5:
            high = np.unpackbits(b[..., at:at + 4], axis=-1, bitorder="little")
            at += 4
        q = _from_nibbles(b[..., at:])
        if high is not None:
            q = q | (high << 4)
    elif fmt.name in ("Q4_K", "Q5_K"):
        d, m = f16(b[..., 0:2]), f16(b[..., 2:4])
        sc_np, mn_np = _unpack_k_scales(b[..., 4:16])
        sc, mn = torch.from_numpy(np.ascontiguousarray(sc_np)), torch.from_numpy(np.ascontiguousarray(mn_np))
        at = 16
        high = None
        if fmt.name == "Q5_K":
            high = (b[..., at:at + 32].reshape(rows, nb, 1, 32) >> np.arange(8, dtype=np.uint8).reshape(1, 1, 8, 1)) & 1
            at += 32
        q = _from_nibbles(b[..., at:].reshape(rows, nb, 4, 32)).reshape(rows, nb, 8, 32)
        if high is not None:
            q = q | (high << 4)
    elif fmt.name == "Q6_K":
        ql, qh = b[..., :128].reshape(rows, nb, 2, 64), b[..., 128:192].reshape(rows, nb, 2, 32)
        sc = torch.from_numpy(np.ascontiguousarray(b[..., 192:208]).view(np.int8).copy())
        d = f16(b[..., 208:210])
        lo = np.stack([ql[..., :32] & 0x0F, ql[..., 32:] & 0x0F, ql[..., :32] >> 4, ql[..., 32:] >> 4], axis=-2)
        hi = np.stack([(qh >> s) & 0x03 for s in (0, 2, 4, 6)], axis=-2)
        q = lo | (hi << 4)
    else:  # pragma: no cover
        raise ValueError(fmt.name)
    codes = torch.from_numpy(np.ascontiguousarray(q).reshape(rows, cols).copy())
    if fmt.name == "Q8_0":
        codes = codes.view(torch.int8) if codes.dtype == torch.uint8 else codes
    return codes.to(fmt.code_dtype), BlockParams(fmt, d, m, sc, mn)
