"""Other tools' quantizers, run on the same model and data as peer rows in ``compare``."""
