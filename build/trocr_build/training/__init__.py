"""Training the offline models (`trocr-train`, the `train` extra): synthetic handwriting-font lines, the shipped
`synthetic:small` weights (`models/`), the held-out sets they are measured on (`heldout_synthetic/`: handwriting
fonts no training line uses; `heldout_digits/`: real MNIST digits no training line uses), real digits
(`digits.py`), a pretrained encoder start (`pretrained.py`) and the sample images' maker (`samples.py`).

Importing this package needs nothing beyond the build extra: the training's own dependencies (Faker, fontTools)
are imported by the modules that use them.
"""

from pathlib import Path

TRAINING_DIR = Path(__file__).resolve().parent
SHIPPED_MODELS_DIR = TRAINING_DIR / "models"
HELDOUT_SET_DIR = TRAINING_DIR / "heldout_synthetic"  # lines in handwriting fonts no training line uses
HELDOUT_DIGITS_DIR = TRAINING_DIR / "heldout_digits"  # lines of real MNIST digits no training line uses
