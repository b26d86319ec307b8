"""Pure numeric primitives for quantizing the weights of language-model Linear layers.

Weights are ``[out_features, in_features]`` (``nn.Linear`` layout); groups run along the
input dimension. :mod:`.grid` defines the grid and round-to-nearest; :mod:`.hqq`,
:mod:`.gptq`, :mod:`.awq` and :mod:`.smoothquant` implement the algorithms of those names.
"""
from .awq import AwqResult, apply_awq_scales, awq_clip_search, awq_search
from .gptq import HessianAccumulator, gptq
from .grid import GroupGrid, GroupQuant, fake_quantize, qparams_minmax, quantize_with, rtn
from .hqq import hqq
from .smoothquant import per_channel_int8_fake, per_token_absmax_int8_fake, smooth_scales, smoothed_output_mse

__all__ = [
    "GroupGrid",
    "GroupQuant",
    "qparams_minmax",
    "quantize_with",
    "rtn",
    "fake_quantize",
    "hqq",
    "HessianAccumulator",
    "gptq",
    "AwqResult",
    "awq_search",
    "apply_awq_scales",
    "awq_clip_search",
    "smooth_scales",
    "per_token_absmax_int8_fake",
    "per_channel_int8_fake",
    "smoothed_output_mse",
]
