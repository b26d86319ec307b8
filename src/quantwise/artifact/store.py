"""Write and read an artifact directory: ``model.safetensors`` + ``manifest.json``.

Writing goes to a temporary sibling directory that is renamed into place only when
complete, so a failure never leaves a half-written artifact. Reading trusts
nothing: the manifest is parsed as JSON and checked, tensors come from safetensors.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from quantwise.errors import QuantwiseError, first_line
from quantwise.files import atomic_write_text, staged_dir
from quantwise.versions import check_restorable

FORMAT = "quantwise-artifact"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
WEIGHTS = "model.safetensors"
TOKENIZER_DIR = "tokenizer"
ARTIFACT_FOLDERS = (TOKENIZER_DIR,)  # folders an artifact may carry (Artifact.files)
EXPORT_SUFFIXES = (".onnx", ".pt2", ".ptl", ".pte", ".gguf")  # model.<suffix>: what exports write into an artifact by default


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
    architecture: dict[str, Any] = field(default_factory=dict)  # fingerprint() of the float model
    built: dict[str, Any] = field(default_factory=dict)  # built.Built.to_dict(): what the method made

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
            "architecture": self.architecture,
            "built": self.built,
        }


def check_replaceable(path: Path, overwrite: bool) -> None:
    """Refuse, before any work, an output that exists unless ``overwrite`` is set and it is itself a
    quantwise artifact: ``--force`` never replaces a folder or file the user keeps anything else in."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if not overwrite:
        raise QuantwiseError(f"output {path} already exists", "choose another path or pass --force to replace it")
    if path.is_symlink() or not path.is_dir() or not _is_artifact(path):
        raise QuantwiseError(f"output {path} exists and is not a quantwise artifact, so --force will not replace it",
                             "choose a new path, or an existing artifact directory to replace")


def _is_artifact(path: Path) -> bool:
    """A directory quantwise wrote: a valid manifest and weights, and beside them nothing but the
    folders an artifact is written with (a tokenizer) and files its exports wrote (``model.<suffix>``)."""
    try:
        read_manifest(path)
    except QuantwiseError:
        return False
    return all(p.name in (MANIFEST, WEIGHTS) or (p.is_file() and p.stem == "model" and p.suffix in EXPORT_SUFFIXES)
               or (p.is_dir() and p.name in ARTIFACT_FOLDERS) for p in path.iterdir())


def write(artifact: Artifact, path: Path, overwrite: bool = False, verify: Callable[[Path], None] | None = None) -> Path:
    """Write ``artifact`` to the directory ``path``: everything goes to a temporary sibling, which
    ``verify`` (if given) checks before it is moved into place; an artifact being replaced is removed
    only after that. A failure at any step leaves ``path`` as it was."""
    from safetensors.torch import save_file

    path = Path(path)
    check_replaceable(path, overwrite)
    with staged_dir(path, replace=overwrite) as tmp:
        tensors = {k: v.detach().contiguous() for k, v in artifact.tensors.items()}
        save_file(tensors, str(tmp / WEIGHTS), metadata={"format": FORMAT})
        (tmp / MANIFEST).write_text(json.dumps(artifact.manifest(), indent=2, sort_keys=True))
        for name, data in artifact.files.items():
            target = (tmp / name).resolve()
            if tmp.resolve() not in target.parents or name in (MANIFEST, WEIGHTS):
                raise ValueError(f"artifact file name {name!r} escapes the artifact or clobbers it")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        if verify is not None:
            verify(tmp)
    return path


def read(path: Path) -> Artifact:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    manifest = read_manifest(path)
    recorded = manifest.get("versions")
    check_restorable(recorded if isinstance(recorded, dict) else {}, f"artifact {path}")
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
        architecture=manifest.get("architecture") or {},
        built=manifest.get("built") or {},
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
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise QuantwiseError(f"{path / MANIFEST} is corrupt ({err})", "re-create the artifact with 'quantwise quantize'") from None
    _check_manifest(manifest, path)
    return manifest


def fingerprint(module: torch.nn.Module) -> dict[str, Any]:
    """Names and shapes of a float model's tensors, hashed: what an artifact records of the
    architecture it was quantized from, to compare with the one it is loaded into."""
    items = sorted((k, list(v.shape)) for k, v in module.state_dict().items())
    return {"tensors": len(items), "digest": hashlib.sha256(json.dumps(items).encode()).hexdigest()[:16]}


def check_architecture(artifact: Artifact, module: torch.nn.Module, path: Path) -> None:
    """Refuse an architecture other than the one recorded (artifacts written before the record pass)."""
    recorded = artifact.architecture
    if not recorded:
        return
    given = fingerprint(module)
    if given != recorded:
        raise QuantwiseError(
            f"the model given does not match the one artifact {path} was quantized from "
            f"({given['tensors']} tensors, digest {given['digest']}; recorded {recorded.get('tensors')}, {recorded.get('digest')})",
            f"give the architecture of {artifact.model!r} (--model)",
        )


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
    for key, kind in (("model", str), ("recipe", dict), ("inputs", list), ("meta", dict), ("metrics", dict), ("versions", dict),
                      ("notes", list), ("architecture", dict), ("built", dict)):
        if key not in ("model", "recipe", "inputs") and manifest.get(key) is None:
            continue  # optional: absent in older artifacts
        if not isinstance(manifest.get(key), kind):
            raise QuantwiseError(f"{path / MANIFEST} lacks a valid '{key}' entry", "re-create the artifact with 'quantwise quantize'")
