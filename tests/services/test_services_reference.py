"""The reference service and the httpx clients against it: idempotency, faults on command, errors sorted right."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from agent.core.config import ServiceEndpoint
from agent.core.errors import ServiceError
from agent.devtools.reference_service import ReferenceService
from agent.services.client import MealsClient, ServiceClient

ORDER = {
    "restaurant_id": "luigis",
    "items": [{"name": "pepperoni pizza", "size": "large", "quantity": 1}],
    "delivery_address": "12 Linden Road",
    "expected_total": 89,
}
T = 5.0  # seconds: every await in these tests has a timeout


@pytest.fixture
async def client(service):
    c = MealsClient("meals", ServiceEndpoint(base_url=service.url, timeout_seconds=1.0))
    yield c
    await asyncio.wait_for(c.aclose(), T)


async def test_replayed_key_returns_the_first_result_and_never_a_second_order(service, client):
    first = await asyncio.wait_for(client.request("POST", "/orders", json=ORDER, idempotency_key="k-1"), T)
    again = await asyncio.wait_for(client.request("POST", "/orders", json=ORDER, idempotency_key="k-1"), T)
    assert again["order"]["id"] == first["order"]["id"] and again["replayed"] is True
    assert len(service.orders()) == 1
    assert service.key_counts()["k-1"] == {"requests": 2, "replays": 1, "effects": 1}


async def test_same_key_for_a_different_request_is_refused(service, client):
    await asyncio.wait_for(client.request("POST", "/orders", json=ORDER, idempotency_key="k-2"), T)
    with pytest.raises(ServiceError) as err:
        await asyncio.wait_for(
            client.request("POST", "/orders", json=ORDER | {"expected_total": 1}, idempotency_key="k-2"), T
        )
    assert err.value.status == 422 and not err.value.retryable and err.value.code == "idempotency-key-reused"


async def test_post_without_key_is_refused(client):
    with pytest.raises(ServiceError) as err:
        await asyncio.wait_for(client.request("POST", "/orders", json=ORDER), T)
    assert err.value.status == 400 and err.value.code == "idempotency-key-required"


async def test_5xx_is_retryable_and_leaves_no_order(service, client):
    service.fail_next(2, 503)
    for _ in range(2):
        with pytest.raises(ServiceError) as err:
            await asyncio.wait_for(client.request("POST", "/orders", json=ORDER, idempotency_key="k-3"), T)
        assert err.value.retryable and err.value.status == 503
    assert not service.orders()
    await asyncio.wait_for(client.request("POST", "/orders", json=ORDER, idempotency_key="k-3"), T)
    assert len(service.orders()) == 1


async def test_4xx_is_permanent_with_a_readable_reason(service, client):
    service.set_restaurant_open("luigis", False)
    with pytest.raises(ServiceError) as err:
        await asyncio.wait_for(client.request("POST", "/orders", json=ORDER, idempotency_key="k-4"), T)
    assert not err.value.retryable and err.value.status == 409
    assert err.value.message == "Luigi's Pizzeria is closed right now"


async def test_price_change_is_refused_rather_than_charged(service, client):
    service.set_price("luigis", "pepperoni pizza", "large", 99)
    with pytest.raises(ServiceError) as err:
        await asyncio.wait_for(client.request("POST", "/orders", json=ORDER, idempotency_key="k-5"), T)
    assert err.value.code == "price-changed" and "99" in err.value.message


async def test_down_is_unreachable_then_back(service, client):
    service.go_down()
    with pytest.raises(ServiceError) as err:
        await asyncio.wait_for(client.request("GET", "/health"), T)
    assert err.value.retryable and err.value.code == "service-unreachable"
    assert not await asyncio.wait_for(client.healthy(0.5), T)
    service.come_up()
    assert await asyncio.wait_for(client.healthy(0.5), T)


async def test_slow_service_times_out_retryably(service):
    service.slow(400)
    c = ServiceClient("meals", ServiceEndpoint(base_url=service.url, timeout_seconds=0.1))
    try:
        with pytest.raises(ServiceError) as err:
            await asyncio.wait_for(c.request("GET", "/restaurants"), T)
        assert err.value.retryable and err.value.code == "service-timeout"
    finally:
        await asyncio.wait_for(c.aclose(), T)


async def test_not_after_refuses_late_new_requests_but_replays_accepted_ones(service, client):
    late = time.time() - 1
    with pytest.raises(ServiceError) as err:
        await asyncio.wait_for(
            client.request("POST", "/orders", json=ORDER, idempotency_key="k-6", not_after=late), T
        )
    assert err.value.status == 410 and not err.value.retryable
    first = await asyncio.wait_for(
        client.request("POST", "/orders", json=ORDER, idempotency_key="k-7", not_after=time.time() + 60), T
    )
    replay = await asyncio.wait_for(
        client.request("POST", "/orders", json=ORDER, idempotency_key="k-7", not_after=late), T
    )
    assert replay["order"]["id"] == first["order"]["id"]


async def test_reads_cancel_and_deliveries(service, client):
    assert [r["id"] for r in await asyncio.wait_for(client.search("pizza"), T)] == ["luigis"]
    placed = await asyncio.wait_for(client.request("POST", "/orders", json=ORDER, idempotency_key="k-8"), T)
    order_id = placed["order"]["id"]
    assert (await asyncio.wait_for(client.order(order_id), T))["status"] == "preparing"
    await asyncio.wait_for(
        client.request("POST", f"/orders/{order_id}/cancel", json={}, idempotency_key="k-9"), T
    )
    assert (await asyncio.wait_for(client.order(order_id), T))["status"] == "cancelled"
    moved = await asyncio.wait_for(
        client.request(
            "POST",
            "/deliveries/P1/redirect",
            json={"destination": "88 Century Avenue"},
            idempotency_key="k-10",
        ),
        T,
    )
    assert moved["package"]["destination"] == "88 Century Avenue"


async def test_api_key_is_required_sent_and_never_logged(capsys):
    from agent.core.logging import setup_logging

    setup_logging("debug", "json")
    try:
        await _exercise_api_key()
    finally:
        import structlog

        structlog.reset_defaults()  # the logger above writes to capsys's stream, which closes after this test
    captured = capsys.readouterr()
    assert "s3cret-key" not in captured.err + captured.out
    assert "s3cret-key" not in repr(ServiceEndpoint(base_url="http://127.0.0.1:1", api_key="s3cret-key"))


async def _exercise_api_key() -> None:
    with ReferenceService(api_key="s3cret-key") as svc:
        anonymous = ServiceClient("meals", ServiceEndpoint(base_url=svc.url))
        keyed = ServiceClient("meals", ServiceEndpoint(base_url=svc.url, api_key="s3cret-key"))
        try:
            with pytest.raises(ServiceError) as err:
                await asyncio.wait_for(anonymous.request("GET", "/restaurants"), T)
            assert err.value.status == 401
            assert await asyncio.wait_for(keyed.request("GET", "/restaurants"), T)
            svc.fail_next(1, 500)
            with pytest.raises(ServiceError):
                await asyncio.wait_for(keyed.request("GET", "/restaurants"), T)
        finally:
            await asyncio.wait_for(anonymous.aclose(), T)
            await asyncio.wait_for(keyed.aclose(), T)


@pytest.fixture
def admin_service():
    with ReferenceService(admin=True) as svc:
        yield svc


def test_admin_endpoints_control_the_service_over_http(admin_service):
    service = admin_service
    with httpx.Client(base_url=service.url, timeout=T, trust_env=False) as http:
        assert http.post("/admin/faults", json={"fail_next": 1, "status": 502}).status_code == 200
        assert http.get("/restaurants").status_code == 502
        assert http.get("/restaurants").status_code == 200
        r = http.post("/orders", json=ORDER, headers={"Idempotency-Key": "k-11"})
        assert r.status_code == 201
        assert http.get("/admin/keys").json()["keys"]["k-11"]["effects"] == 1
        assert json.loads(http.post("/admin/down", json={"seconds": 0.3}).text)["down_for_seconds"] == 0.3
    deadline = time.monotonic() + 3
    while service.is_up and time.monotonic() < deadline:
        time.sleep(0.02)
    while not service.is_up and time.monotonic() < deadline:
        time.sleep(0.02)
    assert service.is_up


def test_every_path_in_the_openapi_spec_is_served(service):
    """docs/openapi.yaml and the reference service must not drift apart."""
    from pathlib import Path

    import yaml

    spec = yaml.safe_load((Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml").read_text())
    samples = {"restaurant_id": "luigis", "order_id": "M1001", "package_id": "P1"}
    with httpx.Client(base_url=service.url, timeout=T, trust_env=False) as http:
        http.post("/orders", json=ORDER, headers={"Idempotency-Key": "spec-order"})
        for path, methods in spec["paths"].items():
            for method in methods:
                url = path.format(**samples)
                body = {"day": "tomorrow", "destination": "office"} if method == "post" else None
                r = http.request(
                    method.upper(), url, json=body, headers={"Idempotency-Key": f"spec-{method}-{url}"}
                )
                assert r.json().get("error", {}).get("code") != "not-found", f"{method.upper()} {path}"
                assert r.status_code < 500, f"{method.upper()} {path}: {r.status_code}"
