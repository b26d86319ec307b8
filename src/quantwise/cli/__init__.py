"""The ``quantwise`` command: thin wrappers over quantwise.api."""
