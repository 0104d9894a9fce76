"""The reference service's own SQLite store: orders, packages, the first answer per idempotency key, and every
side effect with the key that caused it (so "exactly once" is checked by counting rows)."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from agent.devtools.reference_service.catalogue import RESTAURANTS, SEED, SEED_PACKAGES, with_aliases
from agent.devtools.reference_service.requests import HttpError

SCHEMA = """
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


class ServiceStore:
    """One SQLite connection shared by the handler threads, serialised by `lock` (re-entrant: a request holds
    it across its whole transaction)."""

    def __init__(self, db_path: Path | str = ":memory:") -> None:
        self.lock = threading.RLock()
        self.db = sqlite3.connect(str(db_path), check_same_thread=False, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        if str(db_path) != ":memory:":
            self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        if not self.db.execute("SELECT 1 FROM packages LIMIT 1").fetchone():
            for p in SEED_PACKAGES:
                self.db.execute(
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
        self._order_seq = self._next_order_number()

    def close(self) -> None:
        with self.lock:
            self.db.close()

    # ------------------------------------------------------------ admin and observability (tests, the demo)

    def set_restaurant_open(self, restaurant_id: str, is_open: bool) -> None:
        with self.lock:
            if is_open:
                self.db.execute("DELETE FROM closed_restaurants WHERE id = ?", (restaurant_id,))
            else:
                self.db.execute("INSERT OR IGNORE INTO closed_restaurants VALUES (?)", (restaurant_id,))

    def set_price(self, restaurant_id: str, item: str, size: str, price: float) -> None:
        with self.lock:
            self.db.execute(
                "INSERT OR REPLACE INTO price_overrides VALUES (?,?,?,?)", (restaurant_id, item, size, price)
            )

    def key_counts(self) -> dict[str, dict[str, int]]:
        """Per idempotency key: requests seen, replays answered, side effects created (must be <= 1)."""
        with self.lock:
            counts: dict[str, dict[str, int]] = {}
            for key, requests, replays in self.db.execute(
                "SELECT idempotency_key, COUNT(*), SUM(replayed) FROM key_requests GROUP BY idempotency_key"
            ):
                counts[key] = {"requests": requests, "replays": replays or 0, "effects": 0}
            for key, effects in self.db.execute(
                "SELECT idempotency_key, COUNT(*) FROM effects GROUP BY idempotency_key"
            ):
                counts.setdefault(key, {"requests": 0, "replays": 0, "effects": 0})["effects"] = effects
        return counts

    def effects(self, kind: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            rows = self.db.execute(
                "SELECT * FROM effects" + (" WHERE kind = ?" if kind else "") + " ORDER BY id",
                (kind,) if kind else (),
            ).fetchall()
        return [dict(r) | {"body": json.loads(r["body"])} for r in rows]

    def orders(self) -> list[dict[str, Any]]:
        with self.lock:
            return [self._order_view(r) for r in self.db.execute("SELECT * FROM orders ORDER BY created_at")]

    def log_key(self, key: str, status: int, *, replayed: bool) -> None:
        """Every request that carried a key, whatever its outcome."""
        self.db.execute(
            "INSERT INTO key_requests (idempotency_key, status, replayed, at) VALUES (?,?,?,?)",
            (key, status, int(replayed), time.time()),
        )

    def _effect(self, key: str | None, kind: str, subject: str, body: dict[str, Any]) -> None:
        self.db.execute(
            "INSERT INTO effects (idempotency_key, kind, subject, body, created_at) VALUES (?,?,?,?,?)",
            (key, kind, subject, json.dumps(body, ensure_ascii=False), time.time()),
        )

    # ------------------------------------------------------------ idempotency

    def stored_answer(self, key: str) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM idempotency WHERE key = ?", (key,)).fetchone()

    def remember_answer(
        self, key: str, method: str, path: str, fingerprint: str, status: int, response: dict
    ) -> None:
        self.db.execute(
            "INSERT INTO idempotency VALUES (?,?,?,?,?,?,?)",
            (key, method, path, fingerprint, status, json.dumps(response), time.time()),
        )

    # ------------------------------------------------------------ meals

    def _closed(self) -> set[str]:
        with self.lock:
            return {r[0] for r in self.db.execute("SELECT id FROM closed_restaurants")}

    def _price(self, restaurant: dict, item: dict, size: str) -> float:
        with self.lock:
            row = self.db.execute(
                "SELECT price FROM price_overrides WHERE restaurant_id=? AND item=? AND size=?",
                (restaurant["id"], item["name"], size),
            ).fetchone()
        return float(row[0]) if row else float(item["prices"][size])

    def restaurant_view(self, r: dict) -> dict:
        return {k: r[k] for k in ("id", "name", "name_zh", "cuisine", "distance_km")} | {
            "open": r["id"] not in self._closed()
        }

    def search(self, query: str) -> dict:
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
                hits.append(self.restaurant_view(r) | {"matching_items": items})
        return {"restaurants": hits}

    def catalogue(self) -> dict:
        """Every restaurant with its menu at today's prices, whether it is open, and the size words."""
        restaurants = []
        for r in sorted(RESTAURANTS, key=lambda r: r["distance_km"]):
            items = [
                {k: v for k, v in i.items() if k != "prices"}
                | {"prices": {s: self._price(r, i, s) for s in i["prices"]}}
                for i in r["items"]
            ]
            restaurants.append(
                self.restaurant_view(r)
                | {"aliases": r.get("aliases", []), "cuisine_zh": r.get("cuisine_zh", ""), "items": items}
            )
        with self.lock:
            overrides = self.db.execute("SELECT COUNT(*) FROM price_overrides").fetchone()[0]
        return {
            "version": f"{SEED['version']}+{overrides}",
            "currency": SEED.get("currency", "CNY"),
            "sizes": SEED.get("sizes", {}),
            "restaurants": restaurants,
        }

    def restaurant(self, rid: str) -> dict:
        for r in RESTAURANTS:
            if r["id"] == rid:
                return r
        raise HttpError(404, "restaurant-not-found", f"there is no restaurant {rid!r}")

    def menu(self, rid: str) -> dict:
        r = self.restaurant(rid)
        items = [
            {
                "name": i["name"],
                "name_zh": i["name_zh"],
                "prices": {s: self._price(r, i, s) for s in i["prices"]},
            }
            for i in r["items"]
        ]
        return {"restaurant": self.restaurant_view(r), "items": items}

    def _next_order_number(self) -> int:
        row = self.db.execute("SELECT COUNT(*) FROM orders").fetchone()
        return 1001 + int(row[0])

    def create_order(self, p: dict[str, Any], key: str | None) -> dict:
        r = self.restaurant(str(p.get("restaurant_id", "")))
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
        with self.lock:
            order_id = f"M{self._order_seq}"
            self._order_seq += 1
            self.db.execute(
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
            return {"order": self.get_order(order_id)}

    def _order_view(self, row: sqlite3.Row) -> dict:
        order = dict(row)
        order["items"] = json.loads(order["items"])
        r = self.restaurant(order["restaurant_id"])
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

    def get_order(self, order_id: str) -> dict:
        with self.lock:
            row = self.db.execute("SELECT * FROM orders WHERE id = ?", (order_id,)).fetchone()
            if row is None:
                raise HttpError(404, "order-not-found", f"there is no order {order_id}")
            return self._order_view(row)

    def list_orders(self, limit: int) -> dict:
        with self.lock:
            rows = self.db.execute(
                "SELECT * FROM orders ORDER BY created_at DESC LIMIT ?", (limit,)
            ).fetchall()
            return {"orders": [self._order_view(r) for r in rows]}

    def cancel_order(self, order_id: str, key: str | None) -> dict:
        order = self.get_order(order_id)
        if order["status"] == "cancelled":
            return order
        if order["status"] in ("on the way", "delivered"):
            raise HttpError(409, "order-too-late-to-cancel", f"the order is already {order['status']}")
        with self.lock:
            self.db.execute("UPDATE orders SET status = 'cancelled' WHERE id = ?", (order_id,))
            self._effect(key, "cancel", order_id, {})
        return self.get_order(order_id)

    # ------------------------------------------------------------ deliveries

    def packages(self) -> list[dict]:
        with self.lock:
            rows = self.db.execute("SELECT * FROM packages ORDER BY id").fetchall()
        return [with_aliases(dict(r)) for r in rows]

    def package(self, pid: str) -> dict:
        with self.lock:
            row = self.db.execute("SELECT * FROM packages WHERE id = ?", (pid,)).fetchone()
        if row is None:
            raise HttpError(404, "package-not-found", f"there is no package {pid}")
        return dict(row)

    def change_package(self, pid: str, action: str, p: dict[str, Any], key: str | None) -> dict:
        package = self.package(pid)
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
        with self.lock:
            for column, value in update.items():
                self.db.execute(f"UPDATE packages SET {column} = ? WHERE id = ?", (value, pid))
            self._effect(key, action, pid, p)
        return self.package(pid)
