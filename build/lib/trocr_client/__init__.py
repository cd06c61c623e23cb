"""Client library for the trocr-triton server: `transcribe(images) -> list[Result(text, score)]`."""

from trocr_client.aio import AsyncTrOCRClient, Tls
from trocr_client.client import DEFAULT_URL, Result, TrOCRClient, transcribe
from trocr_client.errors import (
    ContractError,
    DeadlineExceededError,
    InvalidInputError,
    RequestCancelledError,
    ServerError,
    ServerUnavailableError,
    TrOCRError,
)
from trocr_client.retry import RetryPolicy

__all__ = [
    "DEFAULT_URL",
    "AsyncTrOCRClient",
    "ContractError",
    "RetryPolicy",
    "Tls",
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
