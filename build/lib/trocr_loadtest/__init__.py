"""Load tests and benchmarks for trocr-triton: what operators run to measure and size a deployment."""
