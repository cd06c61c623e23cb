"""Errors the client raises: one hierarchy, so callers can tell bad input from a retryable failure."""

from __future__ import annotations

from trocr_client import protocol


class TrOCRError(Exception):
    """Any failure of a transcription request. `status` is the gRPC status name when the server answered."""

    retryable = False

    def __init__(self, message: str, status: str | None = None):
        super().__init__(message)
        self.status = status


class InvalidInputError(TrOCRError):
    """The request was refused as sent (bad image, bad parameter): do not retry it unchanged."""


class ServerUnavailableError(TrOCRError):
    """The server is down, starting, or overloaded: retry later, or elsewhere."""

    retryable = True


class DeadlineExceededError(TrOCRError):
    """The request did not finish within its deadline: the caller's gRPC deadline, or the deadline the server
    enforced (its work was dropped there)."""

    retryable = True


class RequestCancelledError(TrOCRError):
    """The request was cancelled before it finished (by its caller)."""


class ContractError(TrOCRError):
    """The server serves a model that is not the one this client speaks to (other tensors, or none)."""


class ServerError(TrOCRError):
    """The server failed while serving a valid request."""


_BY_STATUS = {
    "INVALID_ARGUMENT": InvalidInputError,
    "OUT_OF_RANGE": InvalidInputError,
    "NOT_FOUND": InvalidInputError,
    "UNAVAILABLE": ServerUnavailableError,
    "RESOURCE_EXHAUSTED": ServerUnavailableError,
    "DEADLINE_EXCEEDED": DeadlineExceededError,
    "CANCELLED": RequestCancelledError,
}


# Triton's own answers while a model is not there to serve, worth a retry (elsewhere): NOT_FOUND for a model
# that exists but is not loaded at the moment (the server shuts down, or the launcher's watchdog reloads a
# model whose process died), and INTERNAL for a request sent to a model instance whose process died.
MODEL_NOT_LOADED = ("NOT_FOUND", "has no available versions")
STUB_DEAD = ("INTERNAL", "is not healthy")
# A proxy in front of the server (nginx: client_max_body_size) refused the request as too large: HTTP 413, which
# gRPC reports as UNKNOWN. The request is over the server's limits too: not worth a retry.
PROXY_TOO_LARGE = ("UNKNOWN", "status: 413")


def from_triton(exc: Exception) -> TrOCRError:
    """Map tritonclient's InferenceServerException (status like 'StatusCode.INVALID_ARGUMENT') to our errors."""
    raw = exc.status() if hasattr(exc, "status") and callable(exc.status) else None
    status = str(raw).removeprefix("StatusCode.") if raw else None
    message = exc.message() if hasattr(exc, "message") and callable(exc.message) else str(exc)
    if any(status == code and text in message for code, text in (MODEL_NOT_LOADED, STUB_DEAD)):
        return ServerUnavailableError(message, status)
    if status == PROXY_TOO_LARGE[0] and PROXY_TOO_LARGE[1] in message:
        return InvalidInputError(f"the request is too large for the proxy in front of the server: {message}", status)
    if status == "UNAVAILABLE" and any(text in message for text in protocol.DEADLINE_MESSAGES):
        return DeadlineExceededError(message, status)
    return _BY_STATUS.get(status or "", ServerError)(message, status)
