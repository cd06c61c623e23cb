"""Every way the server refuses or ends a request, with the status a caller sees: one home for status codes.

`status` is a Triton error code name (`pb_utils.TritonError.<status>`; gRPC shows INVALID_ARG as
INVALID_ARGUMENT); `reason` labels `trocr_requests_rejected_total`. The README's status table lists them.
"""

from __future__ import annotations

# A caller's value quoted in an error message is cut to this many characters: a gRPC client refuses a status
# message over its limit (16 KiB by default), and the caller would see RESOURCE_EXHAUSTED instead of the problem.
SHOWN_CHARACTERS = 100


def shown(value) -> str:
    """A caller's value as an error message quotes it: its repr, cut to SHOWN_CHARACTERS (saying so)."""
    text = repr(value)
    if len(text) <= SHOWN_CHARACTERS:
        return text
    return f"{text[:SHOWN_CHARACTERS]}... (cut: {len(text)} characters)"


class Refusal(Exception):
    """A request the server will not (or can no longer) serve; the message names the problem."""

    status = "INTERNAL"
    reason = "internal"

    def __init__(self, message: str, status: str | None = None):
        super().__init__(message)
        if status is not None:
            self.status = status


class InvalidRequestError(Refusal, ValueError):
    """The request cannot be served as sent (bad image, bad parameter, over a limit): do not retry it unchanged."""

    status = "INVALID_ARG"
    reason = "invalid"


class QueueFullError(Refusal):
    """More work waits than the configured bound: retry later or elsewhere."""

    status = "UNAVAILABLE"
    reason = "queue_full"


class DeadlineExceededError(Refusal):
    """The request's deadline passed before it finished; its work was dropped."""

    status = "UNAVAILABLE"
    reason = "deadline"


class RequestCancelledError(Refusal):
    status = "CANCELLED"
    reason = "cancelled"


class ModelUnavailableError(Refusal):
    """An internal model could not serve (its process died, or it is being reloaded): retry."""

    status = "UNAVAILABLE"
    reason = "unavailable"


KINDS = (
    InvalidRequestError,
    QueueFullError,
    DeadlineExceededError,
    RequestCancelledError,
    ModelUnavailableError,
    Refusal,
)
REASONS = tuple(kind.reason for kind in KINDS)


def refusal(reason: str, message: str, status: str) -> Refusal:
    """A refusal passed on from another model: the same kind, so that it is counted under its own reason."""
    kind = next((kind for kind in KINDS if kind.reason == reason), Refusal)
    return kind(message, status)
