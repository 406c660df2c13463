"""Property-based fuzzing of the whole API from its own OpenAPI document (schemathesis): every operation, a bounded
number of generated requests each, against a live server. No 5xx, and no answer that contradicts the document."""

import os
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks as st_checks

from pipelex_server import create_app
from pipelex_server.settings import Settings
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow

MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "25"))

# The document the server serves, built without booting anything.
schema = schemathesis.openapi.from_dict(create_app(Settings(data_dir=Path("/nonexistent"))).openapi())


@pytest.fixture(scope="module")
def live_server(tmp_path_factory, stub):
    env = {"OPENAI_BASE_URL": stub.base_url, "MAX_REQUEST_BODY_MIB": "1"}
    server = ServerProcess(tmp_path_factory.mktemp("fuzz"), env=env).start()
    yield server
    server.stop()


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_every_operation_honours_its_documented_contract(case, live_server):
    case.call_and_validate(
        base_url=live_server.url,
        timeout=60,
        checks=[
            st_checks.not_a_server_error,
            st_checks.status_code_conformance,
            st_checks.content_type_conformance,
            st_checks.response_schema_conformance,
        ],
    )
