"""Quantization methods, one file each, registered by recipe type (see base.METHODS)."""
from quantwise.methods import bf16, dynamic, language, qat, static_fx  # noqa: F401  (registration)
from quantwise.methods.base import METHODS, QuantData, Quantized, method_for

__all__ = ["METHODS", "QuantData", "Quantized", "method_for"]
