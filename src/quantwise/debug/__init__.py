"""Layer-by-layer debugging of quantized models: ``debug_recipe(bundle, recipe)`` or ``debug(bundle, quantized)``."""
from quantwise.debug.debugger import DebugOptions, debug, debug_recipe
from quantwise.debug.results import DebugReport, Diagnosis, HistogramData, LayerDebug

__all__ = ["DebugOptions", "debug", "debug_recipe", "DebugReport", "Diagnosis", "HistogramData", "LayerDebug"]
