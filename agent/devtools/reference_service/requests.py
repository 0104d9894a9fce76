"""What a request to the reference service may hold (docs/openapi.yaml), and the error it answers otherwise.

Bodies and queries are validated with pydantic: a malformed request is a 400/422 with a short reason naming
the field, never a dropped connection.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Annotated, Any, TypeVar
from urllib.parse import parse_qs

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError


class HttpError(Exception):
    """An answer other than 2xx: the status, a kebab-case code and a short reason a driver could be told."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


MAX_BODY_BYTES = 64 * 1024  # an order is a few hundred bytes
MAX_QUERY_FIELDS = 20
NOT_AFTER_MAX = 1e11  # seconds since the epoch: year 5138, far past any deadline, far below float trouble
_NOT_AFTER = re.compile(r"^[0-9]{1,11}(\.[0-9]{1,9})?$")
IDEMPOTENCY_KEY = re.compile(r"^[!-~]{1,200}$")  # visible ASCII: the car sends a UUID

Text = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)]
Required = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class Body(BaseModel):
    # Strict: "2" is not a quantity, 89 is a total; no NaN or infinity. Fields the spec does not name are
    # ignored, as a real backend would (the car adds some of its own: `package_id`, a test's `note`).
    model_config = ConfigDict(extra="ignore", strict=True, allow_inf_nan=False)


_B = TypeVar("_B", bound=Body)


class OrderLine(Body):
    name: Required
    size: Annotated[str, StringConstraints(max_length=20)] | None = None
    quantity: int = Field(default=1, ge=1, le=20)


class OrderRequest(Body):
    restaurant_id: Required
    items: list[OrderLine] = Field(min_length=1, max_length=20)
    delivery_address: Required
    expected_total: float | None = Field(default=None, ge=0, le=1_000_000)
    currency: Annotated[str, StringConstraints(min_length=1, max_length=8)] = "CNY"
    note: Annotated[str, StringConstraints(max_length=500)] | None = None


class CancelRequest(Body):
    pass


class RescheduleRequest(Body):
    day: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=40)]
    time_window: Annotated[str, StringConstraints(max_length=40)] | None = None


class RedirectRequest(Body):
    destination: Required


class LockerRequest(Body):
    locker: Annotated[str, StringConstraints(max_length=80)] | None = None


class FaultsRequest(Body):
    fail_next: int = Field(default=0, ge=0, le=1000)
    status: int = Field(default=503, ge=400, le=599)
    message: Annotated[str, StringConstraints(max_length=200)] | None = None
    include_health: bool = False
    delay_ms: int = Field(default=0, ge=0, le=60_000)
    delay_after_commit_ms: int = Field(default=0, ge=0, le=60_000)


class DownRequest(Body):
    seconds: float = Field(default=5, ge=0, le=3600)


class OpenRequest(Body):
    open: bool = True


class PriceRequest(Body):
    restaurant_id: Required
    item: Required
    size: Required
    price: float = Field(ge=0, le=1_000_000)


class Query(BaseModel):
    # Query values are text: "5" is a limit here. Unknown parameters are ignored (proxies add some).
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


class RestaurantsQuery(Query):
    query: Annotated[str, StringConstraints(max_length=100)] = ""


class OrdersQuery(Query):
    limit: int = Field(default=5, ge=1, le=100)


# Which field's problem has its own documented code (the rest are "invalid-request").
_FIELD_CODES = {
    "items": "items-missing",
    "quantity": "quantity-invalid",
    "delivery_address": "address-missing",
    "day": "day-missing",
    "destination": "destination-missing",
}


def invalid(err: ValidationError, status: int = 422, code: str = "invalid-request") -> HttpError:
    """The first problem as the service's error: which field, what is wrong, in one short line."""
    first = err.errors(include_url=False)[0]
    loc = [str(p) for p in first["loc"]]
    where = ".".join(loc) or "body"
    field_code = next((_FIELD_CODES[p] for p in reversed(loc) if p in _FIELD_CODES), None)
    if field_code == "items-missing" and len(loc) > 1:
        field_code = None  # a bad item, not a missing list
    message = f"{where}: {first['msg']}"
    return HttpError(status, field_code or code, message[:200])


def parsed(model: type[_B], payload: Any) -> _B:
    try:
        return model.model_validate(payload)
    except ValidationError as err:
        raise invalid(err) from None


def validated(model: type[Body], payload: dict[str, Any]) -> dict[str, Any]:
    """The body with its known fields as the model made them, the others as they came (the effect log
    records what the client sent)."""
    return {**payload, **parsed(model, payload).model_dump(exclude_unset=True)}


def allowed_methods(parts: list[str]) -> tuple[str, ...] | None:
    """The methods an endpoint answers (docs/openapi.yaml), or None for no such endpoint."""
    match parts:
        case ["health"] | ["catalogue"] | ["restaurants"] | ["restaurants", _, "menu"] | ["orders", _] | ["deliveries"]:
            return ("GET",)
        case ["deliveries", _]:
            return ("GET",)
        case ["orders"]:
            return ("GET", "POST")
        case ["orders", _, "cancel"] | ["deliveries", _, "reschedule" | "redirect" | "locker"]:
            return ("POST",)
    return None


def body_model(method: str, parts: list[str]) -> type[Body] | None:
    match method, parts:
        case "POST", ["orders"]:
            return OrderRequest
        case "POST", ["orders", _, "cancel"]:
            return CancelRequest
        case "POST", ["deliveries", _, "reschedule"]:
            return RescheduleRequest
        case "POST", ["deliveries", _, "redirect"]:
            return RedirectRequest
        case "POST", ["deliveries", _, "locker"]:
            return LockerRequest
    return None


def json_body(body: bytes) -> Any:
    try:
        payload = json.loads(body.decode("utf-8") if body else "{}")
    except (UnicodeDecodeError, ValueError, RecursionError):  # JSONDecodeError is a ValueError
        raise HttpError(400, "invalid-json", "the body is not JSON (UTF-8)") from None
    if not isinstance(payload, dict):
        raise HttpError(400, "invalid-json", "the body must be a JSON object")
    return payload


def not_after(headers: dict[str, str]) -> float | None:
    raw = headers.get("not-after")
    if raw is None:
        return None
    value = raw.strip()
    # The pattern keeps out "nan", "inf", "1e999" and negative numbers; the bound keeps out absurd ones.
    if not _NOT_AFTER.match(value) or not math.isfinite(float(value)) or float(value) > NOT_AFTER_MAX:
        raise HttpError(
            400, "not-after-invalid", "Not-After must be seconds since the epoch, e.g. 1767225600"
        )
    return float(value)



def idempotency_key(headers: dict[str, str]) -> str:
    key = headers.get("idempotency-key")
    if not key:
        raise HttpError(400, "idempotency-key-required", "every POST needs an Idempotency-Key header")
    if not IDEMPOTENCY_KEY.match(key):
        raise HttpError(
            400,
            "idempotency-key-invalid",
            "the Idempotency-Key must be 1 to 200 visible ASCII characters",
        )
    return key


def fingerprint(method: str, path: str, body: bytes) -> str:
    """What a replay must match: the same key for a different request is refused."""
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + body).hexdigest()


def query_fields(raw: str) -> dict[str, str]:
    try:
        # Blank values kept: `?limit=` is a bad limit, not a missing one.
        query = parse_qs(raw, keep_blank_values=True, max_num_fields=MAX_QUERY_FIELDS)
    except ValueError:
        raise HttpError(400, "query-invalid", "too many query parameters") from None
    return {k: v[0] for k, v in query.items()}


def parsed_query(model: type[Query], query: dict[str, str]) -> Any:
    try:
        return model.model_validate(query)
    except ValidationError as err:
        raise invalid(err, 400, "query-invalid") from None
