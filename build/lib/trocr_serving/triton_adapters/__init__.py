"""What only runs inside Triton's Python backend: the models (`models/`, copied into a repository as
model.py), BLS calls between them, and their metrics."""
