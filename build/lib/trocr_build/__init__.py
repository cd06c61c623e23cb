"""Build-time code of trocr-triton: model -> ONNX graphs -> Triton model repository. Needs the `build` extra."""
