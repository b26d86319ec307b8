"""Learned rounding onto a fixed integer grid: AdaRound and SignRound.

Pure numeric primitives: the caller chooses the grid (``scale``, ``zero``, ``qmin``,
``qmax``) and a forward function over the weights; these return integer codes on that
grid (SignRound's opt-in learned clipping returns a new grid too). See :mod:`.spec` for
the grid convention, :mod:`.objective` for the reconstruction loss.
"""
from .adaround import adaround
from .objective import Forward, Reconstruction, float_targets, module_forward, reconstruction_mse
from .result import Progress, RoundingResult
from .signround import signround
from .spec import RoundedWeight, dequantize, rtn_codes

__all__ = [
    "RoundedWeight",
    "rtn_codes",
    "dequantize",
    "Forward",
    "Reconstruction",
    "module_forward",
    "float_targets",
    "reconstruction_mse",
    "RoundingResult",
    "Progress",
    "adaround",
    "signround",
]
