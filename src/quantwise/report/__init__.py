"""Results -> terminal tables, JSON and HTML reports with figures. No computation happens here."""
