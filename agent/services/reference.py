"""The reference meals-and-deliveries service: a real HTTP server on loopback with its own SQLite store.

It implements docs/openapi.yaml and shows an integrator what a backend must do for the car: honour
`Idempotency-Key` (a replayed key returns the first result and never creates a second order), refuse requests
past their `Not-After` deadline, and answer 4xx with a short readable reason. For tests and the demo it can be
stopped, slowed, or made to fail on command, in process (`service.fail_next(...)`) or over HTTP (`/admin/...`).

Plain `http.server` in a thread: no extra dependency, and the car's side (httpx) is exercised for real.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from agent.logging import get_logger

# The service's own seed data: restaurants, menus, prices and packages. The car ships none of it: it asks for
# the catalogue (GET /catalogue) and keeps the answer, with its age, for use in a tunnel.
CATALOGUE_FILE = Path(__file__).with_name("data") / "catalogue.json"


def load_catalogue(path: Path = CATALOGUE_FILE) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


_SEED = load_catalogue()
RESTAURANTS: list[dict[str, Any]] = _SEED["restaurants"]
SEED_PACKAGES: list[dict[str, Any]] = _SEED["packages"]

log = get_logger("devservice")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    id TEXT PRIMARY KEY, idempotency_key TEXT, restaurant_id TEXT NOT NULL, items TEXT NOT NULL,
    total REAL NOT NULL, currency TEXT NOT NULL, delivery_address TEXT NOT NULL, note TEXT,
    status TEXT NOT NULL, eta_minutes INTEGER NOT NULL, created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS packages (
    id TEXT PRIMARY KEY, description TEXT, description_zh TEXT, carrier TEXT, status TEXT, status_zh TEXT,
    eta TEXT, destination TEXT
);
-- The first 2xx answer per key, replayed for every later request with the same key.
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY, method TEXT NOT NULL, path TEXT NOT NULL, fingerprint TEXT NOT NULL,
    status INTEGER NOT NULL, response TEXT NOT NULL, created_at REAL NOT NULL
);
-- Every side effect, with the key that caused it: "exactly once" is checked by counting rows per key.
CREATE TABLE IF NOT EXISTS effects (
    id INTEGER PRIMARY KEY AUTOINCREMENT, idempotency_key TEXT, kind TEXT NOT NULL, subject TEXT NOT NULL,
    body TEXT NOT NULL, created_at REAL NOT NULL
);
-- Every request that carried a key, whatever its outcome (observability for tests).
CREATE TABLE IF NOT EXISTS key_requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT, idempotency_key TEXT NOT NULL, status INTEGER NOT NULL,
    replayed INTEGER NOT NULL, at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS closed_restaurants (id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS price_overrides (
    restaurant_id TEXT, item TEXT, size TEXT, price REAL, PRIMARY KEY (restaurant_id, item, size)
);
"""


def _with_aliases(package: dict[str, Any]) -> dict[str, Any]:
    """A package as served: its row, and the other words people use for it (from the seed data)."""
    seed = next((p for p in SEED_PACKAGES if p["id"] == package.get("id")), {})
    return package | {"aliases": seed.get("aliases", [])}


class HttpError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class Faults:
    """What the service is told to do wrong. Applies to API requests, not to /admin (and not /health
    unless `include_health`): a 5xx backend behind a healthy front door is the common case."""

    fail_count: int = 0
    fail_status: int = 503
    fail_message: str = "the service is having trouble"
    delay_ms: int = 0
    delay_after_commit_ms: int = 0  # the side effect is committed, the answer is late: the lost-ack window
    include_health: bool = False


def _fingerprint(method: str, path: str, body: bytes) -> str:
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + body).hexdigest()


class ReferenceService:
    """Start with `ReferenceService(db_path).start()`; `url` is where it listens (loopback only)."""

    def __init__(
        self,
        db_path: Path | str = ":memory:",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
    ) -> None:
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError("the reference service listens on loopback only")
        self.host, self.port = host, port
        self.api_key = api_key
        self.faults = Faults()
        self._faults_lock = threading.Lock()
        self._db_lock = threading.RLock()
        self._db = sqlite3.connect(str(db_path), check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        if str(db_path) != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        if not self._db.execute("SELECT 1 FROM packages LIMIT 1").fetchone():
            for p in SEED_PACKAGES:
                self._db.execute(
                    "INSERT INTO packages VALUES (?,?,?,?,?,?,?,?)",
                    (
                        p["id"],
                        p["description"],
                        p["description_zh"],
                        p["carrier"],
                        p["status"],
                        p["status_zh"],
                        p["eta"],
                        p["destination"],
                    ),
                )
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._up_timer: threading.Timer | None = None
        self._order_seq = self._next_order_number()

    # ------------------------------------------------------------ lifecycle and control

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def is_up(self) -> bool:
        return self._server is not None

    def start(self) -> ReferenceService:
        self._server = _Server((self.host, self.port), _Handler, self)
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
        with self._db_lock:
            self._db.close()

    def __enter__(self) -> ReferenceService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fail_next(
        self, count: int, status: int = 503, message: str | None = None, include_health: bool = False
    ) -> None:
        with self._faults_lock:
            self.faults.fail_count = count
            self.faults.fail_status = status
            self.faults.fail_message = message or (
                "the service is having trouble" if status >= 500 else "the request was refused"
            )
            self.faults.include_health = include_health

    def slow(self, delay_ms: int, after_commit_ms: int = 0) -> None:
        with self._faults_lock:
            self.faults.delay_ms = delay_ms
            self.faults.delay_after_commit_ms = after_commit_ms

    def reset_faults(self) -> None:
        with self._faults_lock:
            self.faults = Faults()

    def set_restaurant_open(self, restaurant_id: str, is_open: bool) -> None:
        with self._db_lock:
            if is_open:
                self._db.execute("DELETE FROM closed_restaurants WHERE id = ?", (restaurant_id,))
            else:
                self._db.execute("INSERT OR IGNORE INTO closed_restaurants VALUES (?)", (restaurant_id,))

    def set_price(self, restaurant_id: str, item: str, size: str, price: float) -> None:
        with self._db_lock:
            self._db.execute(
                "INSERT OR REPLACE INTO price_overrides VALUES (?,?,?,?)", (restaurant_id, item, size, price)
            )

    # ------------------------------------------------------------ observability (tests, the demo)

    def key_counts(self) -> dict[str, dict[str, int]]:
        """Per idempotency key: requests seen, replays answered, side effects created (must be <= 1)."""
        with self._db_lock:
            counts: dict[str, dict[str, int]] = {}
            for key, requests, replays in self._db.execute(
                "SELECT idempotency_key, COUNT(*), SUM(replayed) FROM key_requests GROUP BY idempotency_key"
            ):
                counts[key] = {"requests": requests, "replays": replays or 0, "effects": 0}
            for key, effects in self._db.execute(
                "SELECT idempotency_key, COUNT(*) FROM effects GROUP BY idempotency_key"
            ):
                counts.setdefault(key, {"requests": 0, "replays": 0, "effects": 0})["effects"] = effects
        return counts

    def effects(self, kind: str | None = None) -> list[dict[str, Any]]:
        with self._db_lock:
            rows = self._db.execute(
                "SELECT * FROM effects" + (" WHERE kind = ?" if kind else "") + " ORDER BY id",
                (kind,) if kind else (),
            ).fetchall()
        return [dict(r) | {"body": json.loads(r["body"])} for r in rows]

    def orders(self) -> list[dict[str, Any]]:
        with self._db_lock:
            return [self._order_view(r) for r in self._db.execute("SELECT * FROM orders ORDER BY created_at")]

    # ------------------------------------------------------------ request handling

    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict]:
        """One request in, (status, JSON body) out. Runs on the server's handler thread."""
        split = urlsplit(raw_path)
        path, query = split.path.rstrip("/") or "/", parse_qs(split.query)
        try:
            if path.startswith("/admin/"):
                return self._admin(method, path, body)
            self._inject_faults(path)
            if (
                path != "/health"
                and self.api_key
                and headers.get("authorization") != f"Bearer {self.api_key}"
            ):
                raise HttpError(401, "unauthorized", "the API key is missing or wrong")
            if method == "POST":
                return self._idempotent(method, path, headers, body)
            return self._route(method, path, query, {})
        except HttpError as err:
            return err.status, {"error": {"code": err.code, "message": err.message}}

    def _inject_faults(self, path: str) -> None:
        with self._faults_lock:
            faults = self.faults
            delay = faults.delay_ms
            fail = faults.fail_count > 0 and (path != "/health" or faults.include_health)
            if fail:
                faults.fail_count -= 1
        if delay:
            time.sleep(delay / 1000)
        if fail:
            # Fails before any side effect: a 5xx from this service always means "nothing happened".
            raise HttpError(faults.fail_status, "injected-failure", faults.fail_message)

    def _idempotent(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict]:
        key = headers.get("idempotency-key")
        if not key:
            raise HttpError(400, "idempotency-key-required", "every POST needs an Idempotency-Key header")
        if len(key) > 200:
            raise HttpError(400, "idempotency-key-invalid", "the Idempotency-Key is too long")
        fingerprint = _fingerprint(method, path, body)
        with self._db_lock:
            row = self._db.execute("SELECT * FROM idempotency WHERE key = ?", (key,)).fetchone()
            if row is not None:
                if row["fingerprint"] != fingerprint:
                    self._log_key(key, 422, replayed=False)
                    raise HttpError(
                        422, "idempotency-key-reused", "this Idempotency-Key was used for a different request"
                    )
                self._log_key(key, row["status"], replayed=True)
                response = json.loads(row["response"])
                return row["status"], response | {"replayed": True}
            not_after = headers.get("not-after")
            try:
                if not_after and time.time() > float(not_after):
                    self._log_key(key, 410, replayed=False)
                    raise HttpError(410, "request-expired", "the request arrived after its deadline")
            except ValueError:
                raise HttpError(
                    400, "not-after-invalid", "Not-After must be seconds since the epoch"
                ) from None
            try:
                payload = json.loads(body or b"{}")
            except json.JSONDecodeError:
                raise HttpError(400, "invalid-json", "the body is not JSON") from None
            if not isinstance(payload, dict):
                raise HttpError(400, "invalid-json", "the body must be a JSON object")
            # The side effect, the key's stored answer and the request log commit together: a crash of the
            # service can never leave an order without its key (or a key without its order).
            self._db.execute("BEGIN IMMEDIATE")
            try:
                status, response = self._route(method, path, {}, payload, key=key)
                if 200 <= status < 300:
                    self._db.execute(
                        "INSERT INTO idempotency VALUES (?,?,?,?,?,?,?)",
                        (key, method, path, fingerprint, status, json.dumps(response), time.time()),
                    )
                self._log_key(key, status, replayed=False)
                self._db.execute("COMMIT")
            except HttpError as err:
                self._db.execute("ROLLBACK")
                self._log_key(key, err.status, replayed=False)
                raise
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        with self._faults_lock:
            after = self.faults.delay_after_commit_ms
        if after:
            time.sleep(after / 1000)
        return status, response

    def _log_key(self, key: str, status: int, *, replayed: bool) -> None:
        self._db.execute(
            "INSERT INTO key_requests (idempotency_key, status, replayed, at) VALUES (?,?,?,?)",
            (key, status, int(replayed), time.time()),
        )

    def _effect(self, key: str | None, kind: str, subject: str, body: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT INTO effects (idempotency_key, kind, subject, body, created_at) VALUES (?,?,?,?,?)",
            (key, kind, subject, json.dumps(body, ensure_ascii=False), time.time()),
        )

    def _route(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        payload: dict[str, Any],
        key: str | None = None,
    ) -> tuple[int, dict]:
        parts = path.strip("/").split("/")
        q = {k: v[0] for k, v in query.items()}
        match method, parts:
            case "GET", ["health"]:
                return 200, {"status": "ok", "service": "cabin-reference", "time": time.time()}
            case "GET", ["catalogue"]:
                return 200, self._catalogue()
            case "GET", ["restaurants"]:
                return 200, self._search(q.get("query", ""))
            case "GET", ["restaurants", rid, "menu"]:
                return 200, self._menu(rid)
            case "POST", ["orders"]:
                return 201, self._create_order(payload, key)
            case "GET", ["orders"]:
                return 200, self._list_orders(int(q.get("limit", "5")))
            case "GET", ["orders", order_id]:
                return 200, {"order": self._get_order(order_id)}
            case "POST", ["orders", order_id, "cancel"]:
                return 200, {"order": self._cancel_order(order_id, key)}
            case "GET", ["deliveries"]:
                with self._db_lock:
                    rows = self._db.execute("SELECT * FROM packages ORDER BY id").fetchall()
                return 200, {"packages": [_with_aliases(dict(r)) for r in rows]}
            case "GET", ["deliveries", pid]:
                return 200, {"package": self._package(pid)}
            case "POST", ["deliveries", pid, ("reschedule" | "redirect" | "locker") as action]:
                return 200, {"package": self._change_package(pid, action, payload, key)}
        raise HttpError(404, "not-found", f"no such endpoint: {method} {path}")

    # ------------------------------------------------------------ meals

    def _closed(self) -> set[str]:
        with self._db_lock:
            return {r[0] for r in self._db.execute("SELECT id FROM closed_restaurants")}

    def _price(self, restaurant: dict, item: dict, size: str) -> float:
        with self._db_lock:
            row = self._db.execute(
                "SELECT price FROM price_overrides WHERE restaurant_id=? AND item=? AND size=?",
                (restaurant["id"], item["name"], size),
            ).fetchone()
        return float(row[0]) if row else float(item["prices"][size])

    def _restaurant_view(self, r: dict) -> dict:
        return {k: r[k] for k in ("id", "name", "name_zh", "cuisine", "distance_km")} | {
            "open": r["id"] not in self._closed()
        }

    def _search(self, query: str) -> dict:
        wanted = query.casefold().strip()
        hits = []
        for r in sorted(RESTAURANTS, key=lambda r: r["distance_km"]):
            items = [
                i["name"] for i in r["items"] if wanted and (wanted in i["name"] or wanted in i["name_zh"])
            ]
            if (
                not wanted
                or items
                or wanted in r["cuisine"]
                or wanted in r["name"].casefold()
                or wanted in r["name_zh"]
            ):
                hits.append(self._restaurant_view(r) | {"matching_items": items})
        return {"restaurants": hits}

    def _catalogue(self) -> dict:
        """Every restaurant with its menu at today's prices, whether it is open, and the size words."""
        restaurants = []
        for r in sorted(RESTAURANTS, key=lambda r: r["distance_km"]):
            items = [
                {k: v for k, v in i.items() if k != "prices"}
                | {"prices": {s: self._price(r, i, s) for s in i["prices"]}}
                for i in r["items"]
            ]
            restaurants.append(
                self._restaurant_view(r) | {"aliases": r.get("aliases", []), "cuisine_zh": r.get("cuisine_zh", ""),
                                            "items": items}
            )
        with self._db_lock:
            overrides = self._db.execute("SELECT COUNT(*) FROM price_overrides").fetchone()[0]
        return {
            "version": f"{_SEED['version']}+{overrides}",
            "currency": _SEED.get("currency", "CNY"),
            "sizes": _SEED.get("sizes", {}),
            "restaurants": restaurants,
        }

    def _restaurant(self, rid: str) -> dict:
        for r in RESTAURANTS:
            if r["id"] == rid:
                return r
        raise HttpError(404, "restaurant-not-found", f"there is no restaurant {rid!r}")

    def _menu(self, rid: str) -> dict:
        r = self._restaurant(rid)
        items = [
            {
                "name": i["name"],
                "name_zh": i["name_zh"],
                "prices": {s: self._price(r, i, s) for s in i["prices"]},
            }
            for i in r["items"]
        ]
        return {"restaurant": self._restaurant_view(r), "items": items}

    def _next_order_number(self) -> int:
        row = self._db.execute("SELECT COUNT(*) FROM orders").fetchone()
        return 1001 + int(row[0])

    def _create_order(self, p: dict[str, Any], key: str | None) -> dict:
        r = self._restaurant(str(p.get("restaurant_id", "")))
        if r["id"] in self._closed():
            raise HttpError(409, "restaurant-closed", f"{r['name']} is closed right now")
        lines = p.get("items")
        if not isinstance(lines, list) or not lines:
            raise HttpError(422, "items-missing", "an order needs at least one item")
        address = str(p.get("delivery_address") or "").strip()
        if not address:
            raise HttpError(422, "address-missing", "an order needs a delivery address")
        priced, total = [], 0.0
        for line in lines:
            item = next((i for i in r["items"] if i["name"] == line.get("name")), None)
            if item is None:
                raise HttpError(422, "item-not-on-menu", f"{r['name']} does not sell {line.get('name')!r}")
            size = line.get("size") or next(iter(item["prices"]))
            if size not in item["prices"]:
                raise HttpError(422, "size-not-available", f"{item['name']} does not come in {size}")
            quantity = int(line.get("quantity", 1))
            if not 1 <= quantity <= 20:
                raise HttpError(422, "quantity-invalid", "quantity must be between 1 and 20")
            price = self._price(r, item, size)
            total += price * quantity
            priced.append({"name": item["name"], "size": size, "quantity": quantity, "price": price})
        expected = p.get("expected_total")
        if expected is not None and abs(float(expected) - total) > 0.001:
            # The driver agreed to a price: never charge a different one silently.
            raise HttpError(409, "price-changed", f"the price is now {total:g}, not {float(expected):g}")
        with self._db_lock:
            order_id = f"M{self._order_seq}"
            self._order_seq += 1
            self._db.execute(
                "INSERT INTO orders VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    order_id,
                    key,
                    r["id"],
                    json.dumps(priced),
                    total,
                    str(p.get("currency", "CNY")),
                    address,
                    p.get("note"),
                    "placed",
                    25,
                    time.time(),
                ),
            )
            self._effect(key, "order", order_id, p)
            return {"order": self._get_order(order_id)}

    def _order_view(self, row: sqlite3.Row) -> dict:
        order = dict(row)
        order["items"] = json.loads(order["items"])
        r = self._restaurant(order["restaurant_id"])
        order["restaurant"], order["restaurant_zh"] = r["name"], r["name_zh"]
        if order["status"] == "placed":
            # Orders move along with time: preparing, then on the way, then delivered.
            elapsed_min = (time.time() - order["created_at"]) / 60
            order["status"] = (
                "preparing"
                if elapsed_min < 10
                else "on the way"
                if elapsed_min < order["eta_minutes"]
                else "delivered"
            )
            order["eta_minutes"] = max(0, round(order["eta_minutes"] - elapsed_min))
        return order

    def _get_order(self, order_id: str) -> dict:
        with self._db_lock:
            row = self._db.execute("SELECT * FROM orders WHERE id = ?", (order_id,)).fetchone()
            if row is None:
                raise HttpError(404, "order-not-found", f"there is no order {order_id}")
            return self._order_view(row)

    def _list_orders(self, limit: int) -> dict:
        with self._db_lock:
            rows = self._db.execute(
                "SELECT * FROM orders ORDER BY created_at DESC LIMIT ?", (limit,)
            ).fetchall()
            return {"orders": [self._order_view(r) for r in rows]}

    def _cancel_order(self, order_id: str, key: str | None) -> dict:
        order = self._get_order(order_id)
        if order["status"] == "cancelled":
            return order
        if order["status"] in ("on the way", "delivered"):
            raise HttpError(409, "order-too-late-to-cancel", f"the order is already {order['status']}")
        with self._db_lock:
            self._db.execute("UPDATE orders SET status = 'cancelled' WHERE id = ?", (order_id,))
            self._effect(key, "cancel", order_id, {})
        return self._get_order(order_id)

    # ------------------------------------------------------------ deliveries

    def _package(self, pid: str) -> dict:
        with self._db_lock:
            row = self._db.execute("SELECT * FROM packages WHERE id = ?", (pid,)).fetchone()
        if row is None:
            raise HttpError(404, "package-not-found", f"there is no package {pid}")
        return dict(row)

    def _change_package(self, pid: str, action: str, p: dict[str, Any], key: str | None) -> dict:
        package = self._package(pid)
        if package["status"] == "delivered":
            raise HttpError(409, "package-delivered", "the package has already been delivered")
        if action == "reschedule":
            day = str(p.get("day") or "").strip()
            if not day:
                raise HttpError(422, "day-missing", "say which day to deliver on")
            update = {"eta": " ".join(x for x in (day, str(p.get("time_window") or "").strip()) if x)}
        elif action == "redirect":
            destination = str(p.get("destination") or "").strip()
            if not destination:
                raise HttpError(422, "destination-missing", "say where to deliver to")
            update = {"destination": destination}
        else:
            update = {"destination": str(p.get("locker") or "").strip() or "the nearest parcel locker"}
        with self._db_lock:
            for column, value in update.items():
                self._db.execute(f"UPDATE packages SET {column} = ? WHERE id = ?", (value, pid))
            self._effect(key, action, pid, p)
        return self._package(pid)

    # ------------------------------------------------------------ admin (loopback dev service only)

    def _admin(self, method: str, path: str, body: bytes) -> tuple[int, dict]:
        try:
            p = json.loads(body or b"{}")
        except json.JSONDecodeError:
            raise HttpError(400, "invalid-json", "the body is not JSON") from None
        parts = path.strip("/").split("/")
        match method, parts:
            case "GET", ["admin", "keys"]:
                return 200, {"keys": self.key_counts()}
            case "GET", ["admin", "effects"]:
                return 200, {"effects": self.effects()}
            case "POST", ["admin", "faults"]:
                self.fail_next(
                    int(p.get("fail_next", 0)),
                    int(p.get("status", 503)),
                    p.get("message"),
                    bool(p.get("include_health", False)),
                )
                self.slow(int(p.get("delay_ms", 0)), int(p.get("delay_after_commit_ms", 0)))
                return 200, {"faults": self.faults.__dict__}
            case "POST", ["admin", "down"]:
                # Answer first, then drop the listener: a thread so this handler can finish.
                seconds = float(p.get("seconds", 5))
                threading.Timer(0.05, self.go_down, kwargs={"seconds": seconds}).start()
                return 200, {"down_for_seconds": seconds}
            case "POST", ["admin", "restaurants", rid]:
                self._restaurant(rid)
                self.set_restaurant_open(rid, bool(p.get("open", True)))
                return 200, {"restaurant": self._restaurant_view(self._restaurant(rid))}
            case "POST", ["admin", "prices"]:
                self.set_price(p["restaurant_id"], p["item"], p["size"], float(p["price"]))
                return 200, {"ok": True}
        raise HttpError(404, "not-found", f"no such admin endpoint: {method} {path}")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type, service: ReferenceService) -> None:
        self.service = service
        super().__init__(address, handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    # One request per connection: going down then really drops every client, like a lost link.
    protocol_version = "HTTP/1.0"
    server_version = "cabin-reference/1"

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, payload = self.server.service.handle(self.command, self.path, headers, body)
        data = json.dumps(payload, ensure_ascii=False).encode()
        try:
            self.send_response(
                status, HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else ""
            )
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the car hung up (or was killed) before the answer: the key makes the retry safe

    do_GET = _serve
    do_POST = _serve

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("devservice-request", line=format % args)
