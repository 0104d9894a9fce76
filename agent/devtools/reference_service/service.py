"""The reference meals-and-deliveries service: a real HTTP server on loopback with its own SQLite store.

It implements docs/openapi.yaml and shows an integrator what a backend must do for the car: honour
`Idempotency-Key` (a replayed key returns the first result and never creates a second order), refuse requests
past their `Not-After` deadline, and answer 4xx with a short readable reason. For tests and the demo it can be
stopped, slowed, or made to fail on command, in process (`service.fail_next(...)`) or over HTTP (`/admin/...`,
only when started with `admin=True`, and with the API key when one is set).

Plain `http.server` in a thread: no extra dependency, and the car's side (httpx) is exercised for real.
Because tests and the demo trust it, it must not be the weak link: request bodies are validated with pydantic
(400/422 with a reason, never a dropped connection), bodies are capped (413), each connection has a deadline
for its whole request, and the number of handler threads is bounded.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agent.core.logging import get_logger
from agent.devtools.reference_service.faults import FaultInjector, Faults
from agent.devtools.reference_service.requests import (
    MAX_BODY_BYTES,
    DownRequest,
    FaultsRequest,
    HttpError,
    OpenRequest,
    OrdersQuery,
    PriceRequest,
    RestaurantsQuery,
    allowed_methods,
    body_model,
    fingerprint,
    idempotency_key,
    json_body,
    not_after,
    parsed,
    parsed_query,
    query_fields,
    validated,
)
from agent.devtools.reference_service.server import ServiceHandler, ServiceServer
from agent.devtools.reference_service.store import ServiceStore

log = get_logger("devservice")


class ReferenceService:
    """Start with `ReferenceService(db_path).start()`; `url` is where it listens (loopback only)."""

    def __init__(
        self,
        db_path: Path | str = ":memory:",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        admin: bool = False,
        request_deadline_seconds: float = 10.0,
        max_connections: int = 32,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        """`admin`: serve /admin/* (faults, prices, down), for tests and the demo; off, they answer 403.
        `request_deadline_seconds`: the time a connection has to send its whole request (a stalled or
        byte-a-second upload is cut off then). `max_connections`: handler threads at once; more get 503."""
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError("the reference service listens on loopback only")
        self.host, self.port = host, port
        self.api_key = api_key
        self.admin = admin
        self.request_deadline_seconds = request_deadline_seconds
        self.max_connections = max(1, max_connections)
        self.max_body_bytes = max_body_bytes
        self.store = ServiceStore(db_path)
        self._faults = FaultInjector()
        # Idempotency keys whose request is being processed right now (key -> that request's claim).
        self._keys_in_use: dict[str, object] = {}
        self._keys_lock = threading.Lock()
        self._server: ServiceServer | None = None
        self._thread: threading.Thread | None = None
        self._up_timer: threading.Timer | None = None

    # ------------------------------------------------------------ lifecycle and control

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def is_up(self) -> bool:
        return self._server is not None

    def start(self) -> ReferenceService:
        self._server = ServiceServer((self.host, self.port), ServiceHandler, self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            name=f"devservice:{self.port}",
            kwargs={"poll_interval": 0.05},
            daemon=True,
        )
        self._thread.start()
        log.info("devservice-up", url=self.url)
        return self

    def go_down(self, seconds: float | None = None) -> None:
        """Stop listening: clients get connection refused, like a dead link. Back after `seconds` if given."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            log.info("devservice-down", url=self.url)
        if seconds:
            self._up_timer = threading.Timer(seconds, self.come_up)
            self._up_timer.daemon = True
            self._up_timer.start()

    def come_up(self) -> None:
        if self._server is None:
            self.start()

    def stop(self) -> None:
        if self._up_timer:
            self._up_timer.cancel()
        self.go_down()

    def close(self) -> None:
        self.stop()
        self.store.close()

    def __enter__(self) -> ReferenceService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def faults(self) -> Faults:
        return self._faults.faults

    def fail_next(
        self, count: int, status: int = 503, message: str | None = None, include_health: bool = False
    ) -> None:
        self._faults.fail_next(count, status, message, include_health)

    def slow(self, delay_ms: int, after_commit_ms: int = 0) -> None:
        self._faults.slow(delay_ms, after_commit_ms)

    def reset_faults(self) -> None:
        self._faults.reset()

    def set_restaurant_open(self, restaurant_id: str, is_open: bool) -> None:
        self.store.set_restaurant_open(restaurant_id, is_open)

    def set_price(self, restaurant_id: str, item: str, size: str, price: float) -> None:
        self.store.set_price(restaurant_id, item, size, price)

    # ------------------------------------------------------------ observability (tests, the demo)

    def key_counts(self) -> dict[str, dict[str, int]]:
        """Per idempotency key: requests seen, replays answered, side effects created (must be <= 1)."""
        return self.store.key_counts()

    def effects(self, kind: str | None = None) -> list[dict[str, Any]]:
        return self.store.effects(kind)

    def orders(self) -> list[dict[str, Any]]:
        return self.store.orders()

    # ------------------------------------------------------------ request handling

    def handle(
        self, method: str, raw_path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict, dict[str, str]]:
        """One request in, (status, JSON body, extra headers) out. Runs on the server's handler thread.

        Whatever comes in, an answer goes out: a malformed request is a 400/422 with a reason, and a bug here
        a 500 (before any commit: nothing happened), never a dropped connection.
        """
        split = urlsplit(raw_path)
        path = split.path.rstrip("/") or "/"
        try:
            if path == "/admin" or path.startswith("/admin/"):
                self._authorize(headers)
                status, payload = self._admin(method, path, body)
                return status, payload, {}
            if path != "/health":
                self._authorize(headers)
            allowed = allowed_methods(path.strip("/").split("/"))
            if allowed is None:
                self._faults.inject(path)  # a service in trouble is in trouble on every path
                raise HttpError(404, "not-found", f"no such endpoint: {method} {path}"[:200])
            if method not in allowed:
                raise HttpError(
                    405, "method-not-allowed", f"{path} answers {', '.join(allowed)}"[:200],
                    {"Allow": ", ".join(allowed)},
                )  # fmt: skip
            if method != "POST":
                self._faults.inject(path)
                status, payload = self._route(method, path, query_fields(split.query), {})
                return status, payload, {}
            key = idempotency_key(headers)
            deadline = not_after(headers)
            with self._key_in_use(key) as release:
                self._faults.inject(path)
                status, payload = self._idempotent(method, path, key, deadline, body, release)
            return status, payload, {}
        except HttpError as err:
            return err.status, {"error": {"code": err.code, "message": err.message}}, err.headers
        except Exception as err:  # a bug of this service: the transaction was rolled back
            log.exception("devservice-error", method=method, path=path, error=type(err).__name__)
            return 500, {"error": {"code": "internal-error", "message": "the service failed"}}, {}

    def _authorize(self, headers: dict[str, str]) -> None:
        if self.api_key and headers.get("authorization") != f"Bearer {self.api_key}":
            raise HttpError(401, "unauthorized", "the API key is missing or wrong")

    @contextlib.contextmanager
    def _key_in_use(self, key: str) -> Iterator[Callable[[], None]]:
        """Claim `key` for this request while it is processed, up to its commit.

        A second request with the key meanwhile gets 409 `idempotency-key-in-use` (retry shortly) instead of
        waiting or running twice. After the commit the stored answer exists, and a replay gets that (also in
        the delay_after_commit window: that is the lost-answer case the car's retry must survive).
        """
        claim = object()
        with self._keys_lock:
            busy = key in self._keys_in_use
            if not busy:
                self._keys_in_use[key] = claim
        if busy:
            with self.store.lock:
                self.store.log_key(key, 409, replayed=False)
            raise HttpError(
                409,
                "idempotency-key-in-use",
                "a request with this Idempotency-Key is still being processed; retry shortly",
                {"Retry-After": "1"},
            )

        def release() -> None:
            with self._keys_lock:
                if self._keys_in_use.get(key) is claim:  # never another request's claim
                    del self._keys_in_use[key]

        try:
            yield release
        finally:
            release()

    def _idempotent(
        self,
        method: str,
        path: str,
        key: str,
        deadline: float | None,
        body: bytes,
        release: Callable[[], None],
    ) -> tuple[int, dict]:
        request = fingerprint(method, path, body)
        with self.store.lock:
            row = self.store.stored_answer(key)
            if row is not None:
                if row["fingerprint"] != request:
                    self.store.log_key(key, 422, replayed=False)
                    raise HttpError(
                        422, "idempotency-key-reused", "this Idempotency-Key was used for a different request"
                    )
                self.store.log_key(key, row["status"], replayed=True)
                response = json.loads(row["response"])
                return row["status"], response | {"replayed": True}
            payload = json_body(body)
            model = body_model(method, path.strip("/").split("/"))
            if model is not None:
                payload = validated(model, payload)
            if deadline is not None and time.time() > deadline:
                self.store.log_key(key, 410, replayed=False)
                raise HttpError(410, "request-expired", "the request arrived after its deadline")
            # The side effect, the key's stored answer and the request log commit together: a crash of the
            # service can never leave an order without its key (or a key without its order).
            self.store.db.execute("BEGIN IMMEDIATE")
            try:
                status, response = self._route(method, path, {}, payload, key=key)
                if 200 <= status < 300:
                    self.store.remember_answer(key, method, path, request, status, response)
                self.store.log_key(key, status, replayed=False)
                self.store.db.execute("COMMIT")
            except HttpError as err:
                self.store.db.execute("ROLLBACK")
                self.store.log_key(key, err.status, replayed=False)
                raise
            except BaseException:
                self.store.db.execute("ROLLBACK")
                raise
        after = self._faults.delay_after_commit_ms()
        if after:
            # Committed: the stored answer now speaks for the key, so a retry meanwhile gets it (a replay),
            # not 409. This is the lost-answer window the car's retry must survive.
            release()
            time.sleep(after / 1000)
        return status, response

    def _route(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        payload: dict[str, Any],
        key: str | None = None,
    ) -> tuple[int, dict]:
        parts = path.strip("/").split("/")
        q = query
        match method, parts:
            case "GET", ["health"]:
                return 200, {"status": "ok", "service": "cabin-reference", "time": time.time()}
            case "GET", ["catalogue"]:
                return 200, self.store.catalogue()
            case "GET", ["restaurants"]:
                return 200, self.store.search(parsed_query(RestaurantsQuery, q).query)
            case "GET", ["restaurants", rid, "menu"]:
                return 200, self.store.menu(rid)
            case "POST", ["orders"]:
                return 201, self.store.create_order(payload, key)
            case "GET", ["orders"]:
                return 200, self.store.list_orders(parsed_query(OrdersQuery, q).limit)
            case "GET", ["orders", order_id]:
                return 200, {"order": self.store.get_order(order_id)}
            case "POST", ["orders", order_id, "cancel"]:
                return 200, {"order": self.store.cancel_order(order_id, key)}
            case "GET", ["deliveries"]:
                return 200, {"packages": self.store.packages()}
            case "GET", ["deliveries", pid]:
                return 200, {"package": self.store.package(pid)}
            case "POST", ["deliveries", pid, ("reschedule" | "redirect" | "locker") as action]:
                return 200, {"package": self.store.change_package(pid, action, payload, key)}
        raise HttpError(404, "not-found", f"no such endpoint: {method} {path}")

    # ------------------------------------------------------------ admin (loopback dev service only)

    def _admin(self, method: str, path: str, body: bytes) -> tuple[int, dict]:
        if not self.admin:
            raise HttpError(
                403, "admin-disabled", "admin endpoints are off (start the service with admin on)"
            )
        p = json_body(body) if method == "POST" else {}
        parts = path.strip("/").split("/")
        match method, parts:
            case "GET", ["admin", "keys"]:
                return 200, {"keys": self.key_counts()}
            case "GET", ["admin", "effects"]:
                return 200, {"effects": self.effects()}
            case "POST", ["admin", "faults"]:
                f = parsed(FaultsRequest, p)
                self.fail_next(f.fail_next, f.status, f.message, f.include_health)
                self.slow(f.delay_ms, f.delay_after_commit_ms)
                return 200, {"faults": self.faults.__dict__}
            case "POST", ["admin", "down"]:
                seconds = parsed(DownRequest, p).seconds
                # Answer first, then drop the listener: a thread so this handler can finish.
                threading.Timer(0.05, self.go_down, kwargs={"seconds": seconds}).start()
                return 200, {"down_for_seconds": seconds}
            case "POST", ["admin", "restaurants", rid]:
                self.store.restaurant(rid)
                self.set_restaurant_open(rid, parsed(OpenRequest, p).open)
                return 200, {"restaurant": self.store.restaurant_view(self.store.restaurant(rid))}
            case "POST", ["admin", "prices"]:
                price = parsed(PriceRequest, p)
                self.set_price(price.restaurant_id, price.item, price.size, price.price)
                return 200, {"ok": True}
        raise HttpError(404, "not-found", f"no such admin endpoint: {method} {path}"[:200])
