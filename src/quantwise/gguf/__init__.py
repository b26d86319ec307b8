"""llama.cpp's GGUF files: block formats, codes chosen by quantwise's algorithms on exactly
those formats' grids, per-tensor types, and the writer that llama.cpp loads."""
