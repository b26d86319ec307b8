"""Results -> terminal tables and JSON. No computation happens here."""
