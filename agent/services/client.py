"""HTTP clients for the meals and deliveries services (httpx), with errors sorted into retryable and permanent.

Base URL, timeout and API key come from `config.services.<name>`; the key comes from the environment or systemd
credentials (see agent/config.py) and only ever travels in the Authorization header: it is never logged.
"""

from __future__ import annotations

from typing import Any

import httpx

from agent.config import ServiceEndpoint
from agent.errors import ServiceError
from agent.logging import get_logger

log = get_logger("services")

# Statuses that mean "try again later": the request did not take effect, or may not have.
RETRYABLE_STATUSES = frozenset({408, 425, 429})


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
    ) -> None:
        self.name = name
        self.endpoint = endpoint
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
        retryable = status >= 500 or status in RETRYABLE_STATUSES
        log.info("service-error", service=self.name, method=method, path=path, status=status, error_code=code)
        raise ServiceError(message, code=code, retryable=retryable, status=status, service=self.name)

    async def healthy(self, timeout_seconds: float) -> bool:
        """One health probe with a short timeout: True only for a 2xx."""
        try:
            response = await self._client.get(self.endpoint.health_path, timeout=timeout_seconds)
        except httpx.HTTPError:
            return False
        return 200 <= response.status_code < 300


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
