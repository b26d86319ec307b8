"""Quantization of language models: numeric primitives and (elsewhere) model plumbing."""
