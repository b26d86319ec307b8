"""Export a quantized artifact to a deployment runtime and prove it with a parity check."""
from quantwise.export.base import TARGETS, ExportTarget, target_for
from quantwise.export.exporter import ExportResult, export_artifact
from quantwise.export.parity import Parity

__all__ = ["TARGETS", "ExportTarget", "target_for", "ExportResult", "export_artifact", "Parity"]
