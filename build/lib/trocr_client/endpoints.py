"""Several servers behind one client: which one gets the next request, and which ones are out for a while.

Round robin or least outstanding requests over the endpoints in service; an endpoint whose request failed
with a retryable error (unreachable, overloaded, restarting) is ejected for `eject_for_s`, doubled for each
failure in a row up to 8x (like Envoy's outlier detection: an endpoint that stays down is tried less and less
often), and comes back after it, or at once when every endpoint is out (a request then still has somewhere
to go); a success resets its count. Pure: the clock is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

BALANCING = ("round_robin", "least_outstanding")
MAX_EJECTION_FACTOR = 8


@dataclass
class Endpoint:
    url: str
    outstanding: int = 0  # requests sent and not yet answered
    ejected_until: float = 0.0  # monotonic seconds
    failures: int = 0


class EndpointPool:
    def __init__(self, urls: list[str], balancing: str = "round_robin", eject_for_s: float = 5.0):
        if not urls:
            raise ValueError("give at least one server address")
        if balancing not in BALANCING:
            raise ValueError(f"balancing {balancing!r} is not one of {', '.join(BALANCING)}")
        self.endpoints = [Endpoint(url) for url in urls]
        self.balancing = balancing
        self.eject_for_s = eject_for_s
        self._next = 0

    def in_service(self, now: float) -> list[Endpoint]:
        return [endpoint for endpoint in self.endpoints if endpoint.ejected_until <= now] or self.endpoints

    def pick(self, now: float) -> Endpoint:
        """The endpoint for the next request; counts it as outstanding until `done`."""
        candidates = self.in_service(now)
        if self.balancing == "least_outstanding":
            chosen = min(candidates, key=lambda endpoint: endpoint.outstanding)
        else:
            chosen = candidates[self._next % len(candidates)]
            self._next += 1
        chosen.outstanding += 1
        return chosen

    def done(self, endpoint: Endpoint, now: float, failed_retryable: bool = False) -> None:
        endpoint.outstanding -= 1
        if failed_retryable:
            endpoint.failures += 1
            endpoint.ejected_until = now + self.eject_for_s * min(2 ** (endpoint.failures - 1), MAX_EJECTION_FACTOR)
        else:
            endpoint.failures = 0
