"""When to try a request again: exponential backoff with full jitter, only for retryable errors, only within
the caller's deadline (pure: the clock and the randomness are passed in)."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4  # tries of one request, the first included (1: no retries)
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    multiplier: float = 2.0

    def __post_init__(self):
        if self.max_attempts < 1 or self.initial_backoff_s < 0 or self.max_backoff_s < self.initial_backoff_s:
            raise ValueError(f"invalid retry policy {self}")

    def backoff_s(self, attempt: int, rng: random.Random) -> float:
        """The wait before try `attempt + 1` (attempt 1 failed first): uniform in [0, cap] ("full jitter"), so
        that clients refused together do not come back together."""
        cap = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** (attempt - 1))
        return rng.uniform(0.0, cap)

    def next_wait_s(self, attempt: int, retryable: bool, remaining_s: float | None, rng: random.Random):
        """The wait before trying again after failed try `attempt`, or None: give up (not retryable, no tries
        left, or the wait would use up the deadline)."""
        if not retryable or attempt >= self.max_attempts:
            return None
        wait_s = self.backoff_s(attempt, rng)
        if remaining_s is not None and wait_s >= remaining_s:
            return None
        return wait_s


NO_RETRIES = RetryPolicy(max_attempts=1)
