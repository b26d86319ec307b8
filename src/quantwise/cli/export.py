"""``quantwise export``: one library call, then the report layer prints the parity check."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from quantwise.cli.common import out, progress


def export(artifact: Path, *, to: str, output: Optional[Path], model: Optional[str], data: Optional[str], force: bool, samples: Optional[int],
           vnni_only: bool) -> None:
    from quantwise import api
    from quantwise.artifact.store import read_manifest
    from quantwise.export import export_artifact, target_for
    from quantwise.report.export_table import print_export

    if to != "gguf":  # gguf: language models only, checked by export_artifact
        target_for(to)  # an unknown target fails before anything loads
    bundle = api.bundle_for_artifact(read_manifest(artifact), model, data)  # None for a language model (it refuses --model / --data)
    result = export_artifact(artifact, to, bundle=bundle, out=output, overwrite=force, samples=samples, progress=progress, vnni_only=vnni_only)
    print_export(result, out)
