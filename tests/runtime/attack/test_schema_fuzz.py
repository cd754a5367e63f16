"""Schemathesis against a real serving process, driven by mlplat's own OpenAPI description of
the Open Inference Protocol v2 REST API (``docs/openapi/oip-v2-rest.yaml``): positive and
negative cases for every operation, bounded to about two thousand. Every answer must be a
documented status with a documented body; nothing may be a 500.

The model name is pinned to the served model (``m``) on every other case, so inference bodies
reach the decoder instead of stopping at a 404."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import positive_data_acceptance

from tests.runtime.serving.conftest import Serving, build_version, start_serving

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("attack-schema")]

SPEC = Path(__file__).resolve().parents[3] / "docs" / "openapi" / "oip-v2-rest.yaml"
schema = schemathesis.openapi.from_path(SPEC)
CASES_PER_OPERATION = 150  # x 9 operations: about 1,350 cases
_seen = {"n": 0}


@pytest.fixture(scope="module")
def serving(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serving]:
    root = tmp_path_factory.mktemp("fuzz")
    server = start_serving(root, build_version(root, "1"))
    yield server
    assert server.stop() == 0


@schema.parametrize()
@settings(
    max_examples=CASES_PER_OPERATION,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_every_answer_is_documented_and_none_is_a_server_error(case: Any, serving: Serving) -> None:
    _seen["n"] += 1
    if case.path_parameters and "model_name" in case.path_parameters and _seen["n"] % 2:
        case.path_parameters["model_name"] = "m"
    # positive_data_acceptance would require a 2xx for any schema-valid body; a valid OIP body
    # with another model's input names is rightly a 400.
    case.call_and_validate(base_url=serving.url, excluded_checks=[positive_data_acceptance], timeout=10)
