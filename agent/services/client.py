"""HTTP clients for the meals and deliveries services (httpx), with errors sorted into retryable and permanent.

Base URL, timeout and API key come from `config.services.<name>`; the key comes from the environment or systemd
credentials (see agent/core/config.py) and only ever travels in the Authorization header: it is never logged.
A 4xx is the request's problem (the service answered), never the link's: only transport errors, timeouts and
5xx count against the link (`counts_against_link`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from agent.core.config import ServiceEndpoint
from agent.core.errors import ServiceError
from agent.core.logging import get_logger

log = get_logger("services")

# Statuses that mean "try again later": the request did not take effect, or may not have.
RETRYABLE_STATUSES = frozenset({408, 425, 429})
# 409 with these codes: the service is still working on the same Idempotency-Key (a retry overtook the first
# attempt). Not the order's failure: ask again later with the same key and get the first attempt's answer.
RETRYABLE_CONFLICT_CODES = frozenset({"idempotency-key-in-use"})

# What each service's clock said (from the Date header of its last answer) and our monotonic clock at that
# moment: the Not-After deadline must be on the service's clock, and our wall clock may have stepped since (or
# just before). Shared by every client of the same base URL: the connectivity probes keep it fresh.
_SERVER_CLOCK: dict[str, tuple[float, float]] = {}
# A Date header has one-second resolution: within this of our wall clock, the clocks agree and ours is used.
SKEW_TOLERANCE_SECONDS = 2.0


def is_retryable(status: int, code: str) -> bool:
    if status == 409:
        return code in RETRYABLE_CONFLICT_CODES
    return status >= 500 or status in RETRYABLE_STATUSES


def counts_against_link(err: ServiceError) -> bool:
    """Whether a failed request says the link (or the service as a whole) is down: no answer, or a 5xx."""
    return err.status is None or err.status >= 500 or err.status == 408


def _readable(response: httpx.Response) -> tuple[str, str]:
    """(code, message) from the service's error body, falling back to the HTTP reason."""
    try:
        error = response.json().get("error") or {}
        return str(error.get("code") or "http-error"), str(error.get("message") or response.reason_phrase)
    except (ValueError, AttributeError):
        return "http-error", response.reason_phrase or f"HTTP {response.status_code}"


class ServiceClient:
    """One service endpoint. `request` returns the decoded JSON of a 2xx or raises ServiceError."""

    def __init__(
        self,
        name: str,
        endpoint: ServiceEndpoint,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout_seconds: float | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.endpoint = endpoint
        self._wall = wall_clock
        headers = {"User-Agent": "cabin-agent/0.1", "Accept": "application/json"}
        if endpoint.api_key is not None:
            headers["Authorization"] = f"Bearer {endpoint.api_key.get_secret_value()}"
        self._client = httpx.AsyncClient(
            base_url=endpoint.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout_seconds or endpoint.timeout_seconds),
            transport=transport,
            # A proxy from the environment would route loopback traffic and tunnel-time errors elsewhere.
            trust_env=False,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    def server_time(self) -> float:
        """Our best idea of the service's wall clock now: its last Date plus the monotonic time since, so a
        step of our own wall clock does not move it (ours when we know no better, or when they agree)."""
        wall = self._wall()
        seen = _SERVER_CLOCK.get(self.endpoint.base_url)
        if seen is None:
            return wall
        theirs = seen[0] + (time.monotonic() - seen[1])
        return wall if abs(theirs - wall) < SKEW_TOLERANCE_SECONDS else theirs

    def _learn_clock(self, response: httpx.Response) -> None:
        date = response.headers.get("date")
        if not date:
            return
        try:
            theirs = parsedate_to_datetime(date).timestamp() + 0.5  # the header truncates to the second
        except (TypeError, ValueError, IndexError, OverflowError):
            return
        if abs(theirs - self._wall()) >= SKEW_TOLERANCE_SECONDS:
            log.debug("service-clock-differs", service=self.name, skew_seconds=round(theirs - self._wall(), 1))
        _SERVER_CLOCK[self.endpoint.base_url] = (theirs, time.monotonic())

    async def __aenter__(self) -> ServiceClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        not_after: float | None = None,
        timeout_seconds: float | None = None,
    ) -> dict[str, Any]:
        headers: dict[str, str] = {}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        if not_after is not None:
            # The service refuses a *new* request past this moment; a replay of an accepted key still answers.
            headers["Not-After"] = f"{not_after:.3f}"
        kwargs: dict[str, Any] = {}
        if timeout_seconds is not None:
            kwargs["timeout"] = timeout_seconds
        try:
            response = await self._client.request(
                method, path, json=json, params=params, headers=headers, **kwargs
            )
        except httpx.TimeoutException as err:
            raise ServiceError(
                f"{self.name} did not answer in time",
                code="service-timeout",
                retryable=True,
                service=self.name,
            ) from err
        except httpx.TransportError as err:
            # Connection refused, reset, DNS: the link or the service is down. Whether a reset request took
            # effect is unknown, which is exactly why every side effect carries an idempotency key.
            raise ServiceError(
                f"{self.name} is unreachable",
                code="service-unreachable",
                retryable=True,
                service=self.name,
                reason=type(err).__name__,
            ) from err
        self._learn_clock(response)
        status = response.status_code
        if 200 <= status < 300:
            try:
                return response.json()
            except ValueError as err:
                raise ServiceError(
                    f"{self.name} sent an unreadable answer",
                    code="service-bad-response",
                    retryable=True,
                    status=status,
                    service=self.name,
                ) from err
        code, message = _readable(response)
        retryable = is_retryable(status, code)
        log.info("service-error", service=self.name, method=method, path=path, status=status, error_code=code)
        raise ServiceError(message, code=code, retryable=retryable, status=status, service=self.name)

    async def healthy(self, timeout_seconds: float) -> bool:
        """One health probe with a short timeout: is the service there to answer?

        A 2xx, and also a 4xx (a missing health path, a key the health check wants): the service answered, so
        orders go out and a refusal comes back as the order's own error the driver hears, instead of the car
        queueing "offline" for ever. No answer or a 5xx: not there."""
        try:
            response = await self._client.get(self.endpoint.health_path, timeout=timeout_seconds)
        except httpx.HTTPError:
            return False
        self._learn_clock(response)
        status = response.status_code
        return 200 <= status < 300 or (400 <= status < 500 and status != 408)


class MealsClient(ServiceClient):
    """Read-only calls of the meals API; orders and cancels go through the outbox (see OutboxRequest)."""

    async def catalogue(self) -> dict[str, Any]:
        """Every restaurant, its menu and today's prices (kept on the car for ordering in a tunnel)."""
        return await self.request("GET", "/catalogue")

    async def search(self, query: str) -> list[dict[str, Any]]:
        return (await self.request("GET", "/restaurants", params={"query": query}))["restaurants"]

    async def menu(self, restaurant_id: str) -> dict[str, Any]:
        return await self.request("GET", f"/restaurants/{restaurant_id}/menu")

    async def order(self, order_id: str) -> dict[str, Any]:
        return (await self.request("GET", f"/orders/{order_id}"))["order"]

    async def recent_orders(self, limit: int = 5) -> list[dict[str, Any]]:
        return (await self.request("GET", "/orders", params={"limit": limit}))["orders"]


class DeliveriesClient(ServiceClient):
    async def packages(self) -> list[dict[str, Any]]:
        return (await self.request("GET", "/deliveries"))["packages"]

    async def package(self, package_id: str) -> dict[str, Any]:
        return (await self.request("GET", f"/deliveries/{package_id}"))["package"]


def client_for(name: str, config: Any, **kwargs: Any) -> ServiceClient:
    """The client of a named service from config.services (meals, deliveries)."""
    endpoint = getattr(config.services, name)
    cls = {"meals": MealsClient, "deliveries": DeliveriesClient}.get(name, ServiceClient)
    return cls(name, endpoint, **kwargs)
