"""Client library for the trocr-triton server: `transcribe(images) -> list[Result(text, score)]`."""

from trocr_client.client import DEFAULT_URL, Result, TrOCRClient, transcribe
from trocr_client.errors import (
    DeadlineExceededError,
    InvalidInputError,
    RequestCancelledError,
    ServerError,
    ServerUnavailableError,
    TrOCRError,
)

__all__ = [
    "DEFAULT_URL",
    "DeadlineExceededError",
    "InvalidInputError",
    "RequestCancelledError",
    "Result",
    "ServerError",
    "ServerUnavailableError",
    "TrOCRClient",
    "TrOCRError",
    "transcribe",
]
