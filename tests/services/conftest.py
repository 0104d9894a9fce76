"""The reference service the client tests talk to, in memory, one per test."""

from __future__ import annotations

import pytest

from agent.devtools.reference_service import ReferenceService


@pytest.fixture
def service():
    with ReferenceService() as svc:
        yield svc
