"""The outbox tests' reference service: on its own SQLite file, so a test can restart it and keep its orders."""

from __future__ import annotations

import pytest

from agent.devtools.reference_service import ReferenceService


@pytest.fixture
def service(tmp_path):
    with ReferenceService(tmp_path / "service.db") as svc:
        yield svc
