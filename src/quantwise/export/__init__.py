"""Export a quantized artifact to a deployment runtime and prove it with a parity check."""
from quantwise.export.base import TARGETS, ExportTarget
from quantwise.export.exporter import export_artifact
from quantwise.export.formats import target_for
from quantwise.export.result import ExportResult
from quantwise.export.parity import Parity

__all__ = ["TARGETS", "ExportTarget", "target_for", "ExportResult", "export_artifact", "Parity"]
