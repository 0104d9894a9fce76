"""The reference meals-and-deliveries service (docs/openapi.yaml) for tests, the demo, the eval and the bench.

`ReferenceService` is the server; `load_catalogue` its seed data, which tests read to know what is on the
menu; `loopback_config` points a car's config at it. Never imported by the runtime: a head unit talks to a
real backend.
"""

from agent.devtools.reference_service.catalogue import CATALOGUE_FILE, RESTAURANTS, load_catalogue
from agent.devtools.reference_service.loopback import loopback_config
from agent.devtools.reference_service.service import ReferenceService

__all__ = ["CATALOGUE_FILE", "RESTAURANTS", "ReferenceService", "load_catalogue", "loopback_config"]
