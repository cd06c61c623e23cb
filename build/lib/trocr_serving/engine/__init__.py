"""The engine: continuous batching of encoder and decoder work on one device. Pure Python and ONNX Runtime,
importable and testable without Triton (the `scheduler` model adapts Triton to it)."""
