"""Every export target, registered by importing its module; ``target_for`` looks one up by name."""
from quantwise.errors import choice_error
from quantwise.export import executorch_target, onnx_target, pt2_target, torchscript_target  # noqa: F401  (registers the targets)
from quantwise.export.base import TARGETS, ExportTarget


def target_for(name: str) -> ExportTarget:
    if name not in TARGETS:
        raise choice_error("export target", name, tuple(TARGETS) + ("gguf",))
    return TARGETS[name]
