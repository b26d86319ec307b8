"""Importing this registers every export target."""
from quantwise.export import executorch_target, onnx_target, pt2_target, torchscript_target  # noqa: F401
