"""``quantwise export``: one library call, then the report layer prints the parity check."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from rich.console import Console


def export(artifact: Path, to: str, output: Optional[Path], data: Optional[str], force: bool, samples: int, out: Console) -> None:
    from quantwise import api
    from quantwise.artifact.store import read_manifest
    from quantwise.export import export_artifact, target_for
    from quantwise.report.export_table import print_export

    target_for(to)  # an unknown target fails before anything loads
    manifest = read_manifest(artifact)
    bundle = api.load_model(manifest["model"], data) if data else None
    result = export_artifact(artifact, to, bundle=bundle, out=output, overwrite=force, samples=samples)
    print_export(result, out)
