"""Data sets: zoo data sources and user data."""
