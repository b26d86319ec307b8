"""Quantization methods, one file each, registered by recipe type (see base.register): a recipe's
dataclass names its method's file, imported when a recipe of that type is first used."""
from quantwise.methods.base import METHODS, QuantData, Quantized, method_for

__all__ = ["METHODS", "QuantData", "Quantized", "method_for"]
