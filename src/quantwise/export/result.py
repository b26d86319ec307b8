"""What an export produced, and where its file goes."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from quantwise.errors import QuantwiseError
from quantwise.versions import versions


@dataclass
class ExportResult:
    artifact: Path
    target: str
    path: Path
    size_mb: float
    seconds: float
    parity: Any  # parity.Parity, or lm_export.LMParity for a language model
    notes: list[str] = field(default_factory=list)
    portable: bool = True  # computes the same on every CPU (False: --vnni-only)

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "file": str(self.path), "size_mb": self.size_mb, "seconds": self.seconds, "portable": self.portable,
                "parity": self.parity.to_dict(), "notes": self.notes, "versions": versions()}


class DerivedParity:
    """A language-model parity record (a dataclass): ``to_dict`` adds its derived ``delta_pct``,
    ``passed`` and ``tolerance`` to its fields."""

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "delta_pct": self.delta_pct, "passed": self.passed, "tolerance": self.tolerance}  # type: ignore[call-overload, attr-defined]


def output_path(artifact: Path, out: str | Path | None, name: str, suffix: str, overwrite: bool) -> Path:
    """Where the export goes (default: ``model<suffix>`` in the artifact), checked before any work."""
    path = Path(out) if out is not None else Path(artifact) / f"model{suffix}"
    if path.suffix != suffix:
        raise QuantwiseError(f"output {path} does not end in {suffix}", f"name the {name} file *{suffix}")
    if path.exists() and not overwrite:
        raise QuantwiseError(f"output {path} already exists", "choose another path or pass --force to replace it")
    return path
