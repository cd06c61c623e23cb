"""What runs outside Triton: `trocr-serve`, which starts tritonserver, watches its stub processes and
restarts it."""
