"""An offline OCR peer that reads the same labelled lines in-process, so that `trocr-eval --peer` shows where the
served model stands: RapidOCR (`rapidocr` 3.10.0 on PyPI, Apache-2.0; its PP-OCRv6 small recognizer ships as an
ONNX file inside the wheel and runs on ONNX Runtime). The lines are single text lines, so only its recognizer
runs (no detection, no orientation classifier). Install it with the `peer` extra.
"""

from __future__ import annotations

import importlib.metadata
import time
from collections.abc import Sequence
from pathlib import Path

PEERS = ("rapidocr",)


class PeerUnavailableError(RuntimeError):
    """The peer's package is not installed."""


class RapidOcrPeer:
    def __init__(self):
        try:
            from rapidocr import RapidOCR
        except ImportError:
            raise PeerUnavailableError("the rapidocr peer needs its package: pip install -e '.[peer]'") from None
        self.label = f"rapidocr {importlib.metadata.version('rapidocr')} (PP-OCRv6 small recognizer, in-process)"
        self._engine = RapidOCR()

    def read(self, paths: Sequence[Path]) -> tuple[list[str], list[str], float]:
        """(texts, errors, seconds): each line's text, or its error (the text then empty)."""
        texts, errors = [], []
        started = time.perf_counter()
        for path in paths:
            try:
                result = self._engine(str(path), use_det=False, use_cls=False, use_rec=True)
                texts.append(" ".join(result.txts or ()))
                errors.append("")
            except Exception as exc:  # one unreadable image is that line's error, not the run's
                texts.append("")
                errors.append(f"{type(exc).__name__}: {exc}")
        return texts, errors, time.perf_counter() - started


def peer(name: str) -> RapidOcrPeer:
    if name != "rapidocr":
        raise ValueError(f"unknown peer {name!r}: one of {', '.join(PEERS)}")
    return RapidOcrPeer()
