"""Write and read an artifact directory: ``model.safetensors`` + ``manifest.json``.

Writing goes to a temporary sibling directory that is renamed into place only when
complete, so a failure never leaves a half-written artifact. Reading trusts
nothing: the manifest is parsed as JSON and checked, tensors come from safetensors.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from quantwise.files import atomic_write_text
from quantwise.errors import QuantwiseError, first_line

FORMAT = "quantwise-artifact"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
WEIGHTS = "model.safetensors"


@dataclass
class Artifact:
    """What an artifact holds. ``model`` is the spec that rebuilds the architecture,
    ``inputs`` the shapes and dtypes of one example batch, ``meta`` the method's own data."""

    model: str
    recipe: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]
    inputs: list[dict[str, Any]]
    metrics: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)  # extra files (e.g. a tokenizer), relative paths

    def manifest(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model": self.model,
            "recipe": self.recipe,
            "inputs": self.inputs,
            "meta": self.meta,
            "metrics": self.metrics,
            "versions": self.versions,
            "notes": self.notes,
        }


def write(artifact: Artifact, path: Path, overwrite: bool = False) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    if path.exists() and not overwrite:
        raise QuantwiseError(f"output {path} already exists", "choose another path or pass --force to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        tensors = {k: v.detach().contiguous() for k, v in artifact.tensors.items()}
        save_file(tensors, str(tmp / WEIGHTS), metadata={"format": FORMAT})
        (tmp / MANIFEST).write_text(json.dumps(artifact.manifest(), indent=2, sort_keys=True))
        for name, data in artifact.files.items():
            target = (tmp / name).resolve()
            if tmp.resolve() not in target.parents or name in (MANIFEST, WEIGHTS):
                raise ValueError(f"artifact file name {name!r} escapes the artifact or clobbers it")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read(path: Path) -> Artifact:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    manifest = read_manifest(path)
    try:
        tensors = load_file(str(path / WEIGHTS))
    except (SafetensorError, OSError, ValueError) as err:
        raise QuantwiseError(f"{path / WEIGHTS} is corrupt ({first_line(err, 120)})", "re-create the artifact with 'quantwise quantize'") from None
    return Artifact(
        model=manifest["model"],
        recipe=manifest["recipe"],
        tensors=tensors,
        meta=manifest.get("meta", {}),
        inputs=manifest["inputs"],
        metrics=manifest.get("metrics", {}),
        versions=manifest.get("versions", {}),
        notes=manifest.get("notes", []),
    )


def read_manifest(path: Path) -> dict[str, Any]:
    """The artifact's manifest, parsed and checked (its tensors are not read)."""
    path = Path(path)
    if not path.exists():
        raise QuantwiseError(f"artifact {path} does not exist", "give the directory written by 'quantwise quantize'")
    if not path.is_dir() or not (path / MANIFEST).is_file() or not (path / WEIGHTS).is_file():
        raise QuantwiseError(f"{path} is not a quantwise artifact (expected a directory with {MANIFEST} and {WEIGHTS})", "give the directory written by 'quantwise quantize'")
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise QuantwiseError(f"{path / MANIFEST} is corrupt ({err})", "re-create the artifact with 'quantwise quantize'") from None
    _check_manifest(manifest, path)
    return manifest


def record_export(path: Path, target: str, record: dict[str, Any]) -> None:
    """Add one export's record (file, parity, versions) to the manifest, atomically."""
    manifest = read_manifest(path)
    manifest.setdefault("exports", {})[target] = record
    atomic_write_text(path / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True))


def _check_manifest(manifest: Any, path: Path) -> None:
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise QuantwiseError(f"{path / MANIFEST} is not a quantwise manifest", "re-create the artifact with 'quantwise quantize'")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise QuantwiseError(
            f"artifact format version {version} is newer than this quantwise reads ({FORMAT_VERSION})",
            "upgrade quantwise, or re-create the artifact with this version",
        )
    for key, kind in (("model", str), ("recipe", dict), ("inputs", list)):
        if not isinstance(manifest.get(key), kind):
            raise QuantwiseError(f"{path / MANIFEST} lacks a valid '{key}' entry", "re-create the artifact with 'quantwise quantize'")
