"""What a method built, recorded once by that method and stored in the artifact's manifest.
Export, compare and auto read these fields; notes are for people and no code parses them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from quantwise.errors import QuantwiseError

# how a quantized classic model runs and exports: legacy FX modules, PT2E (x86 quantizer),
# PT2E with XNNPACK's quantizer (static or dynamic activations), torchao dynamic int8, bf16 autocast
FAMILIES = ("fx", "pt2e", "pt2e-xnnpack", "pt2e-xnnpack-dynamic", "dynamic", "bf16")


@dataclass(frozen=True)
class Built:
    family: str  # one of FAMILIES (a language model's: its recipe kind)
    compiled: bool = False  # runs fast only under torch.compile (torchao kernels, PT2E x86)
    kept_float: tuple[str, ...] = ()  # layers the recipe's keep_float left in float

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "compiled": self.compiled, "kept_float": list(self.kept_float)}

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> Built | None:
        """The record in ``manifest`` (checked: a manifest is untrusted data), or None for an
        artifact written before it was kept."""
        data = manifest.get("built")
        if not data:  # absent, or a language model's artifact (its kind is in its recipe)
            return None
        kept = data.get("kept_float") if isinstance(data, dict) else None
        if (not isinstance(data, dict) or data.get("family") not in FAMILIES or not isinstance(data.get("compiled"), bool)
                or not isinstance(kept, list) or not all(isinstance(k, str) for k in kept)):
            raise QuantwiseError("the artifact's record of what was built is invalid", "re-create the artifact with 'quantwise quantize'")
        return cls(data["family"], data["compiled"], tuple(kept))
