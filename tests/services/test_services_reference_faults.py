"""The reference service against hostile or broken clients: always an answer with a reason, never a crash, a
hung thread or a second effect. Real HTTP on loopback, with httpx and with raw sockets."""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.devtools.reference_service import ReferenceService

ORDER = {
    "restaurant_id": "luigis",
    "items": [{"name": "pepperoni pizza", "size": "large", "quantity": 1}],
    "delivery_address": "12 Linden Road",
    "expected_total": 89,
}
T = 5.0


@pytest.fixture
def http(service):
    with httpx.Client(base_url=service.url, timeout=T, trust_env=False) as client:
        yield client


def raw(service: ReferenceService, data: bytes, timeout: float = T) -> tuple[int, dict]:
    """Send bytes as they are (no client fixing them up), read the whole answer."""
    with socket.create_connection((service.host, service.port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    answer = b"".join(chunks)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1."), answer[:200]
    return int(head.split()[1]), json.loads(body)


def post(http: httpx.Client, path: str, body: object, key: str, **headers: str) -> httpx.Response:
    return http.post(path, json=body, headers={"Idempotency-Key": key, **headers})


def error_of(response: httpx.Response) -> str:
    return response.json()["error"]["code"]


# ---------------------------------------------------------------- malformed requests: 400/422 with a reason


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (ORDER | {"items": [1]}, "invalid-request"),
        (ORDER | {"items": [{"name": "cola", "quantity": "abc"}]}, "quantity-invalid"),
        (ORDER | {"items": [{"name": "cola", "quantity": 2.5}]}, "quantity-invalid"),
        (ORDER | {"items": [{"name": "cola", "quantity": 0}]}, "quantity-invalid"),
        (ORDER | {"items": "cola"}, "items-missing"),
        (ORDER | {"items": []}, "items-missing"),
        (ORDER | {"items": [{"quantity": 1}]}, "invalid-request"),
        (ORDER | {"items": [{"name": ["cola"]}]}, "invalid-request"),
        (ORDER | {"delivery_address": "   "}, "address-missing"),
        (ORDER | {"delivery_address": 12}, "address-missing"),
        (ORDER | {"expected_total": "89"}, "invalid-request"),
        (ORDER | {"restaurant_id": None}, "invalid-request"),
        (ORDER | {"note": {"a": 1}}, "invalid-request"),
        ({k: v for k, v in ORDER.items() if k != "restaurant_id"}, "invalid-request"),
    ],
    ids=[
        "item-not-an-object", "quantity-abc", "quantity-fraction", "quantity-zero", "items-a-string",
        "items-empty", "item-without-name", "name-a-list", "address-blank", "address-a-number",
        "total-a-string", "restaurant-null", "note-an-object", "restaurant-missing",
    ],
)  # fmt: skip
def test_malformed_order_fields_get_422(service, http, body, code) -> None:
    response = post(http, "/orders", body, "k-bad")
    assert response.status_code == 422, response.text
    assert error_of(response) == code
    assert response.json()["error"]["message"]
    assert not service.orders()
    # The connection was answered, and the next request is served as usual.
    assert post(http, "/orders", ORDER, "k-good").status_code == 201


@pytest.mark.parametrize(
    ("path", "body", "code"),
    [
        ("/deliveries/P1/reschedule", {"day": 3}, "day-missing"),
        ("/deliveries/P1/reschedule", {}, "day-missing"),
        ("/deliveries/P1/redirect", {"destination": ["home"]}, "destination-missing"),
        ("/deliveries/P1/locker", {"locker": 7}, "invalid-request"),
    ],
)
def test_malformed_delivery_and_cancel_bodies_get_422(service, http, path, body, code) -> None:
    response = post(http, path, body, f"k-{path}")
    assert response.status_code == 422 and error_of(response) == code, response.text
    assert not service.effects()


@pytest.mark.parametrize(
    "query",
    ["limit=abc", "limit=-1", "limit=", "limit=1e9", "limit=100000000000000000000",
     "&".join(f"x{i}=1" for i in range(50))],
)  # fmt: skip
def test_malformed_query_gets_400(http, query) -> None:
    response = http.get(f"/orders?{query}")
    assert response.status_code == 400 and error_of(response) == "query-invalid", response.text
    assert http.get("/orders?limit=2").status_code == 200


POST = b"POST /orders HTTP/1.1\r\nIdempotency-Key: k\r\n"


@pytest.mark.parametrize(
    ("request_bytes", "status", "code"),
    [
        (POST + b"Content-Length: abc\r\n\r\n", 400, "content-length-invalid"),
        (POST + b"Content-Length: -5\r\n\r\n", 400, "content-length-invalid"),
        (POST + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}", 400, "content-length-invalid"),
        (POST + b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", 411, "length-required"),
        (POST + b"Content-Length: 4\r\n\r\n\xff\xfe{}", 400, "invalid-json"),
        (POST + b"Content-Length: 7\r\n\r\n[1,2,3]", 400, "invalid-json"),
        (b"GARBAGE\r\n\r\n", 400, "bad-request"),
        (b"GET /health HTTP/1.1 extra\r\n\r\n", 400, "bad-request"),
    ],
    ids=["length-abc", "length-negative", "two-lengths", "chunked", "not-utf8", "not-an-object", "garbage",
         "four-words"],
)  # fmt: skip
def test_malformed_framing_gets_an_answer(service, request_bytes, status, code) -> None:
    got, body = raw(service, request_bytes)
    assert (got, body["error"]["code"]) == (status, code)
    assert not service.orders()


def test_json_nested_thousands_deep_gets_400(service, http) -> None:
    deep = b"[" * 30_000 + b"]" * 30_000  # under the body limit
    response = http.post("/orders", content=deep, headers={"Idempotency-Key": "k-deep"})
    assert response.status_code == 400 and error_of(response) == "invalid-json"


@pytest.mark.parametrize(
    "value", ["nan", "NaN", "inf", "-inf", "Infinity", "1e999", "-5", "12abc", "9" * 40, ""]
)
def test_not_after_nan_rejected(service, http, value) -> None:
    response = post(http, "/orders", ORDER, f"k-na-{value[:10]}", **{"Not-After": value})
    assert response.status_code == 400 and error_of(response) == "not-after-invalid", response.text
    assert not service.orders()
    ok = post(http, "/orders", ORDER, "k-na-ok", **{"Not-After": f"{time.time() + 60:.3f}"})
    assert ok.status_code == 201


def test_nan_and_infinite_numbers_in_the_body_are_refused(service, http) -> None:
    for total in ("NaN", "Infinity", "1e999"):
        body = json.dumps(ORDER).replace('"expected_total": 89', f'"expected_total": {total}')
        response = http.post("/orders", content=body, headers={"Idempotency-Key": f"k-{total}"})
        assert response.status_code == 422, (total, response.text)
    assert not service.orders()


# ---------------------------------------------------------------- admin: on only when asked, behind the key


def test_admin_requires_api_key() -> None:
    with (
        ReferenceService(api_key="s3cret", admin=True) as svc,
        httpx.Client(base_url=svc.url, timeout=T, trust_env=False) as client,
    ):
        cheap = {"restaurant_id": "luigis", "item": "cola", "size": "regular", "price": 0.01}
        for path, body in [
            ("/admin/prices", cheap),
            ("/admin/faults", {"fail_next": 5}),
            ("/admin/down", {}),
        ]:
            response = client.post(path, json=body)
            assert response.status_code == 401 and error_of(response) == "unauthorized", path
        assert client.get("/admin/keys").status_code == 401
        wrong = client.post("/admin/prices", json=cheap, headers={"Authorization": "Bearer guess"})
        assert wrong.status_code == 401
        keyed = {"Authorization": "Bearer s3cret"}
        menu = client.get("/restaurants/luigis/menu", headers=keyed).json()
        cola = next(i for i in menu["items"] if i["name"] == "cola")
        assert cola["prices"]["regular"] == 8  # nothing changed
        assert client.post("/admin/prices", json=cheap, headers=keyed).status_code == 200
        bad = client.post("/admin/prices", json=cheap | {"price": "free"}, headers=keyed)
        assert bad.status_code == 422


def test_admin_is_refused_unless_the_service_was_started_with_it(service, http) -> None:
    for method, path in [("POST", "/admin/prices"), ("POST", "/admin/down"), ("GET", "/admin/keys")]:
        response = http.request(method, path, json={})
        assert response.status_code == 403 and error_of(response) == "admin-disabled", path
    assert service.is_up


# ---------------------------------------------------------------- limits: size, time, threads


def test_body_too_large_413(service, http) -> None:
    big = {"restaurant_id": "luigis", "items": [], "delivery_address": "x", "note": "x" * 20_000_000}
    response = post(http, "/orders", big, "k-big")
    assert response.status_code == 413 and error_of(response) == "body-too-large"
    # Refused from the headers alone: the service does not wait for (or read) a body it will not take.
    started = time.monotonic()
    status, body = raw(
        service, b"POST /orders HTTP/1.1\r\nIdempotency-Key: k\r\nContent-Length: 20000000\r\n\r\n"
    )
    assert (status, body["error"]["code"]) == (413, "body-too-large") and time.monotonic() - started < 2
    assert not service.orders()


def test_stalled_uploads_do_not_hold_threads() -> None:
    """40 clients that send half a request and stall: a bounded number of threads, each let go at the
    deadline; the service keeps answering."""
    with ReferenceService(request_deadline_seconds=1.0, max_connections=8) as svc:
        baseline = threading.active_count()
        stalled = []
        for _ in range(40):
            sock = socket.create_connection((svc.host, svc.port), timeout=5)
            sock.sendall(b'POST /orders HTTP/1.1\r\nIdempotency-Key: k\r\nContent-Length: 500\r\n\r\n{"items')
            stalled.append(sock)
        time.sleep(0.3)
        assert threading.active_count() <= baseline + 8 + 1  # the handler slots (+ a timer at most)
        started = time.monotonic()
        for sock in stalled:  # every one is answered or closed by the service by its deadline
            sock.settimeout(4)
            while sock.recv(65536):
                pass
            sock.close()
        assert time.monotonic() - started < 3
        with httpx.Client(base_url=svc.url, timeout=T, trust_env=False) as client:
            assert client.get("/health").status_code == 200
        deadline = time.monotonic() + 3
        while threading.active_count() > baseline and time.monotonic() < deadline:
            time.sleep(0.05)
        assert threading.active_count() <= baseline


def test_byte_a_second_upload_is_cut_off_at_the_deadline() -> None:
    with ReferenceService(request_deadline_seconds=1.0) as svc:
        sock = socket.create_connection((svc.host, svc.port), timeout=5)
        started = time.monotonic()
        request = b"GET /health HTTP/1.1\r\nX-Slow: " + b"a" * 100
        with pytest.raises(OSError):  # reset or broken pipe once the service hung up
            for byte in request:
                sock.send(bytes([byte]))
                time.sleep(0.1)
                if time.monotonic() - started > 4:
                    break
            sock.settimeout(1)
            assert sock.recv(1) == b""  # or the orderly close
            raise ConnectionResetError("closed")
        assert time.monotonic() - started < 3
        sock.close()


def test_too_many_connections_get_503_not_a_thread_each() -> None:
    with ReferenceService(request_deadline_seconds=2.0, max_connections=2) as svc:
        held = [socket.create_connection((svc.host, svc.port), timeout=5) for _ in range(2)]
        time.sleep(0.2)
        status, body = raw(svc, b"GET /health HTTP/1.1\r\n\r\n")
        assert (status, body["error"]["code"]) == (503, "busy")
        for sock in held:
            sock.close()
        time.sleep(0.3)
        assert raw(svc, b"GET /health HTTP/1.1\r\n\r\n")[0] == 200


# ---------------------------------------------------------------- idempotency under concurrency


def test_concurrent_same_key_gets_in_use(service) -> None:
    """While the first request with a key is being processed, a second gets 409 idempotency-key-in-use (the
    car retries it); there is never a second effect."""
    service.slow(600)  # processing takes 0.6 s

    def order(delay: float) -> httpx.Response:
        time.sleep(delay)
        with httpx.Client(base_url=service.url, timeout=T, trust_env=False) as client:
            return post(client, "/orders", ORDER, "k-same")

    with ThreadPoolExecutor(2) as pool:
        first, second = pool.submit(order, 0), pool.submit(order, 0.2)
        first_response, second_response = first.result(), second.result()
    assert first_response.status_code == 201
    assert second_response.status_code == 409
    assert error_of(second_response) == "idempotency-key-in-use"
    assert second_response.headers["Retry-After"] == "1"
    service.slow(0)
    with httpx.Client(base_url=service.url, timeout=T, trust_env=False) as client:
        again = post(client, "/orders", ORDER, "k-same")
    assert again.status_code == 201 and again.json()["replayed"] is True
    assert service.key_counts()["k-same"] == {"requests": 3, "replays": 1, "effects": 1}


def test_a_retry_in_the_lost_answer_window_gets_the_stored_answer(service) -> None:
    """Committed, answer still on its way (delay_after_commit): the stored answer speaks for the key."""
    service.slow(0, after_commit_ms=800)

    def order(delay: float) -> httpx.Response:
        time.sleep(delay)
        with httpx.Client(base_url=service.url, timeout=T, trust_env=False) as client:
            return post(client, "/orders", ORDER, "k-late")

    with ThreadPoolExecutor(2) as pool:
        first, second = pool.submit(order, 0), pool.submit(order, 0.3)
        assert second.result().json()["replayed"] is True
        assert first.result().status_code == 201
    assert service.key_counts()["k-late"]["effects"] == 1


def test_a_crowd_with_one_key_makes_one_effect(service) -> None:
    service.slow(50)

    def order(_: int) -> int:
        with httpx.Client(base_url=service.url, timeout=T, trust_env=False) as client:
            response = post(client, "/orders", ORDER, "k-crowd")
            assert response.status_code in (201, 409), response.text
            if response.status_code == 409:
                assert error_of(response) == "idempotency-key-in-use"
            return response.status_code

    with ThreadPoolExecutor(12) as pool:
        statuses = list(pool.map(order, range(24)))
    assert 201 in statuses
    assert service.key_counts()["k-crowd"]["effects"] == 1 and len(service.orders()) == 1


# ---------------------------------------------------------------- a short fuzz of the request handling

PATHS = ["/orders", "/orders/M1001", "/orders/M1001/cancel", "/deliveries/P1/reschedule",
         "/deliveries/P1/redirect", "/deliveries/P1/locker", "/restaurants", "/restaurants/luigis/menu",
         "/health", "/admin/prices", "/nope"]  # fmt: skip
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
bodies = (
    json_values.map(lambda v: json.dumps(v).encode())
    | st.fixed_dictionaries({}, optional={k: json_values for k in ORDER}).map(
        lambda v: json.dumps(v).encode()
    )
    | st.binary(max_size=200)
)


def header_text(max_size: int) -> st.SearchStrategy[str]:
    return st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=max_size).map(str.strip)


headers = st.fixed_dictionaries(
    {},
    optional={
        "Idempotency-Key": header_text(250),
        "Not-After": header_text(20) | st.sampled_from(["nan", "inf", "1e999", "0", "99999999999.5"]),
        "Authorization": header_text(20),
    },
)
KNOWN = {200, 201, 400, 401, 403, 404, 405, 409, 410, 411, 413, 422}


@pytest.fixture(scope="module")
def fuzzed():
    with ReferenceService(request_deadline_seconds=2.0) as svc:
        yield svc


@settings(
    deadline=timedelta(seconds=2),
    max_examples=150,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]), path=st.sampled_from(PATHS),
       query=st.text(max_size=30), body=bodies, extra=headers)  # fmt: skip
def test_any_request_gets_a_json_answer_never_a_crash(fuzzed, method, path, query, body, extra) -> None:
    with httpx.Client(base_url=fuzzed.url, timeout=T, trust_env=False) as client:
        response = client.request(
            method, path, params={"q": query, "limit": query}, content=body, headers=extra
        )
    assert response.status_code in KNOWN, (response.status_code, response.text)
    payload = response.json()
    if response.status_code >= 400:
        assert payload["error"]["code"] and payload["error"]["message"]
    counts = fuzzed.key_counts()
    assert all(c["effects"] <= 1 for c in counts.values())
