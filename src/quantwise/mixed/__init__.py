"""Mixed precision: per-layer sensitivity and the automatic recipe search built on it."""
