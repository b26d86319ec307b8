"""Saved quantized models: safetensors + a JSON manifest, no pickle anywhere."""
from quantwise.artifact.store import MANIFEST, WEIGHTS, FORMAT_VERSION, Artifact, read, write

__all__ = ["MANIFEST", "WEIGHTS", "FORMAT_VERSION", "Artifact", "read", "write"]
