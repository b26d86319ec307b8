"""Accuracy and fidelity, latency and size: each returns result dataclasses, prints nothing."""
