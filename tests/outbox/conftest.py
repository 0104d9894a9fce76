"""The outbox tests' reference service, on its own SQLite file: a restart keeps the orders it took."""

from __future__ import annotations

import pytest

from agent.devtools.reference_service import ReferenceService


@pytest.fixture
def service(tmp_path):
    with ReferenceService(tmp_path / "service.db") as svc:
        yield svc
