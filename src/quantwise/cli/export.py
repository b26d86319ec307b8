"""``quantwise export``: one library call, then the report layer prints the parity check."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from quantwise.cli.common import out, progress
from quantwise.errors import QuantwiseError


def export(artifact: Path, *, to: str, output: Optional[Path], model: Optional[str], data: Optional[str], force: bool, samples: Optional[int],
           vnni_only: bool) -> None:
    from quantwise import api
    from quantwise.artifact.store import read_manifest
    from quantwise.export import export_artifact, target_for
    from quantwise.llm.artifact import is_language_model_artifact
    from quantwise.report.export_table import print_export

    if to != "gguf":  # gguf: language models only, checked by export_artifact
        target_for(to)  # an unknown target fails before anything loads
    manifest = read_manifest(artifact)
    for flag, value in (("--data", data), ("--model", model)):
        if value and is_language_model_artifact(artifact):
            raise QuantwiseError(f"{flag} does not apply to a language-model export", f"drop {flag}: the model is rebuilt from the artifact and parity is scored on the evaluation articles")
    bundle = None if is_language_model_artifact(artifact) else api.bundle_for_artifact(manifest, model, data)
    result = export_artifact(artifact, to, bundle=bundle, out=output, overwrite=force, samples=samples, progress=progress, vnni_only=vnni_only)
    print_export(result, out)
