"""Schemathesis against the OpenAPI description the collector serves, on a real server.

The document (``touchline/collect/openapi.json``) is read from ``GET /openapi.json`` of a
collector on 127.0.0.1, and every operation in it is exercised with generated requests, valid
and invalid by the document, with every kind of key and none: no answer may be a 5xx, and
every answer must be one the document lists, with its content type and body schema. Bounded:
:data:`EXAMPLES_PER_OPERATION` requests per operation and mode (about 500 in all, 20-35 s
here), and :data:`BUDGET_SECONDS` at most.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import schemathesis
from collector_kit import LiveCollector, Warehouse, make_settings, make_warehouse
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from touchline.collect.app import BATCH_ROUTES, SINGLE_ROUTES, WEBHOOK_PREFIX, AddressBudget

EXAMPLES_PER_OPERATION = 12
#: the hard bound on the run (about 20-35 s on two shared cores): pytest-timeout stops it
BUDGET_SECONDS = 120
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
MAPPINGS = """
[sources.chat]
kind = "event"
type = "track"
event = "Chat Started"
fields = { anonymousId = "visitor.id", "properties.email" = "visitor.email", timestamp = "at" }

[sources.crm]
kind = "deal"
fields = { deal_id = "objectId", amount = "properties.amount", created_at = "createdAt" }
"""


@pytest.fixture
def served(tmp_path: Path, start_collector: Callable[[Warehouse], LiveCollector]) -> LiveCollector:
    """A collector with webhook sources and a DNI pool, so every route has work to do."""
    (tmp_path / "webhooks.toml").write_text(MAPPINGS)
    warehouse = make_warehouse(make_settings(
        tmp_path, webhook_mappings_file=tmp_path / "webhooks.toml",
        dni_pools={"default": ["+15550100001", "+15550100002"]},
    ))
    live = start_collector(warehouse)
    # a generated request with a bad key is not an attack: without this the address would be
    # throttled (429) after ten of them and the run would test nothing else
    live.app.auth_failures = AddressBudget(burst=1_000_000)
    live.app.recorded_refusals = AddressBudget(burst=1_000_000)
    return live


@pytest.mark.timeout(BUDGET_SECONDS)
def test_no_route_answers_a_5xx_or_anything_the_document_does_not_list(
    served: LiveCollector,
) -> None:
    schema = schemathesis.openapi.from_url(f"{served.url}/openapi.json")
    wh = served.warehouse
    keys = st.sampled_from([
        {"X-Touchline-Key": wh.admin_key}, {"X-Touchline-Key": wh.server_key},
        {"X-Touchline-Key": wh.write_key}, {"X-Touchline-Key": "tlw_unknown"}, {},
    ])
    operations = [result.ok() for result in schema.get_all_operations()]
    with httpx.Client(base_url=served.url) as http:
        document = http.get("/openapi.json").json()
    documented = {f"{m.upper()} {p}" for p, item in document["paths"].items() for m in item}
    # every route the app dispatches is documented ...
    assert {f"POST {p}" for p in (*SINGLE_ROUTES, *BATCH_ROUTES, "/v1/dni/lease",
                                  f"{WEBHOOK_PREFIX}{{source}}")} <= documented
    assert {"GET /t.js", "GET /v1/t.js", "GET /health", "GET /v1/stats"} <= documented
    # ... and tested, but the document itself, which schemathesis does not call back
    assert documented - {op.label for op in operations} == {"GET /openapi.json"}
    statuses: dict[str, Counter[int]] = defaultdict(Counter)
    for operation in operations:
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode), headers=keys)
            @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                      phases=[Phase.explicit, Phase.generate],
                      suppress_health_check=list(HealthCheck))
            def one(case: schemathesis.Case, headers: dict[str, str]) -> None:
                response = case.call_and_validate(
                    base_url=served.url, headers=headers, checks=CHECKS, timeout=10)
                statuses[case.operation.label][response.status_code] += 1

            try:
                one()
            except Unsatisfiable:
                # nothing to make invalid: an operation without parameters or body
                assert mode is schemathesis.GenerationMode.NEGATIVE, operation.label
    # the generated requests got past the door, not only refused at it
    for label in ("POST /v1/track", "POST /v1/batch", "POST /v1/dni/lease"):
        assert statuses[label][200] > 0, (label, statuses[label])
        assert statuses[label][400] > 0, (label, statuses[label])
        assert statuses[label][401] > 0, (label, statuses[label])
    assert statuses["POST /v1/webhooks/{source}"][404] > 0  # a source with no mapping
