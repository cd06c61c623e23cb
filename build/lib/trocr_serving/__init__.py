"""Server-side code of trocr-triton: what the Triton Python-backend models run, and the server launcher."""
