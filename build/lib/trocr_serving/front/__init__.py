"""What the `trocr` front instances run before the engine: request parsing and limits, image decoding and
resizing, and turning token ids back into text. No Triton here either."""
