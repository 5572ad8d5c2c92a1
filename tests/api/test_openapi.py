"""The OpenAPI document is complete and the running service conforms to it (schemathesis)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from api.app import APP_ROUTES, create_app
from api.openapi import openapi_document
from api.settings import Settings
from packager.s3server import EmbeddedS3
from tests.support.service import Api, RunningService, service_env


def document() -> dict[str, Any]:
    return openapi_document(Settings(), APP_ROUTES)


def test_every_route_the_app_serves_is_documented() -> None:
    router = create_app(Settings()).router
    # The web console's static files (api.console) are pages, not API operations.
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in router.routes()
        if route.method != "HEAD"
        and route.resource is not None
        and not route.resource.canonical.startswith("/console")
    }
    documented = {(method, path) for path, item in document()["paths"].items() for method in item}
    assert served == documented, served ^ documented
    assert {"/healthz", "/metrics", "/api/openapi.json"} <= {path for _, path in served}


@pytest.fixture(scope="module")
def running(
    tmp_path_factory: pytest.TempPathFactory, s3_server: EmbeddedS3
) -> Iterator[tuple[RunningService, dict[str, str]]]:
    tmp: Path = tmp_path_factory.mktemp("schemathesis")
    service = RunningService(
        service_env(
            tmp,
            ONAIR_S3_ENDPOINT=s3_server.endpoint,
            ONAIR_S3_ACCESS_KEY=s3_server.access_key,
            ONAIR_S3_SECRET_KEY=s3_server.secret_key,
        )
    )
    project = service.wait_ready()
    headers = {"Authorization": f"Bearer {project['key']}"}
    # A few real jobs so that generated ids and keys sometimes hit something.
    for template in (1, 2, 3):
        requests.post(
            f"{service.base}/api/v1/projects/{project['id']}/livejobs",
            headers=headers,
            timeout=5,
            json={
                "jobTemplateId": template,
                "destination": "d",
                "bucket": "bucket-a",
                "input": {"filePath": f"f{template}", "serverType": 0, "inputClass": 0},
            },
        ).raise_for_status()
    yield service, project
    service.stop()


def _check_operation(operation, service: RunningService, project: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    def run(case) -> None:  # type: ignore[no-untyped-def]
        if case.path_parameters and "projectId" in case.path_parameters:
            case.path_parameters["projectId"] = project["id"]
            case.path_parameters["version"] = "1"
        # Valid-by-schema values can still be refused by rules the schema cannot say
        # (a `..` path segment, a template id that does not exist): 400 is right there.
        case.call_and_validate(
            base_url=service.base,
            headers={"Authorization": f"Bearer {project['key']}"},
            excluded_checks=[positive_data_acceptance],
        )

    run()


EXAMPLES = 30


@pytest.mark.slow  # the whole service as a subprocess, 30 examples an operation
def test_api_conforms_to_its_openapi_document(
    running: tuple[RunningService, dict[str, str]],
) -> None:
    service, project = running
    schema = schemathesis.openapi.from_url(f"{service.base}/api/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 9
    for operation in operations:
        _check_operation(operation, service, project)


PATH_PARAMETER = re.compile(r"\{([^}]*)\}")
LIVE_JOB_PATH = "/api/v{version}/projects/{projectId}/livejobs/{id}"


def test_no_two_paths_differ_only_by_parameter_names() -> None:
    """OpenAPI 3: templated paths with the same hierarchy but other names are identical."""
    paths = list(document()["paths"])
    shapes = [PATH_PARAMETER.sub("{}", path) for path in paths]
    assert sorted(shapes) == sorted(set(shapes)), paths


def test_path_parameters_are_exactly_those_of_the_template() -> None:
    for path, item in document()["paths"].items():
        names = set(PATH_PARAMETER.findall(path))
        for method, operation in item.items():
            declared = [p["name"] for p in operation.get("parameters", []) if p["in"] == "path"]
            assert sorted(declared) == sorted(names), (method, path)


def test_get_and_the_online_toggle_share_one_path_and_its_route() -> None:
    item = document()["paths"][LIVE_JOB_PATH]
    assert set(item) == {"get", "post"}
    assert item["post"]["operationId"] == "toggleLiveJob"
    for operation in item.values():
        (job_ref,) = [p for p in operation["parameters"] if p["in"] == "path" and p["name"] == "id"]
        assert job_ref["description"].lower() == (
            "the job id or name for get, the stream key for post"
        )
    served = {(route.method, route.path) for route in APP_ROUTES}
    assert {("GET", LIVE_JOB_PATH), ("POST", LIVE_JOB_PATH)} <= served


async def test_the_served_document_is_valid_openapi(api: Api) -> None:
    validator = pytest.importorskip("openapi_spec_validator")
    async with api.session.get(f"{api.base}/api/openapi.json") as response:
        assert response.status == 200
        document = await response.json()
    assert document["openapi"].startswith("3.")
    validator.validate(document)


def test_query_parameters_carry_the_models_bounds_and_no_null() -> None:
    operation = document()["paths"]["/api/v{version}/projects/{projectId}/livejobs/outputs"]["get"]
    schemas = {p["name"]: p["schema"] for p in operation["parameters"] if p["in"] == "query"}
    assert schemas == {
        "pageIndex": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1, "default": 1},
        "pageSize": {"type": "integer", "minimum": 1, "maximum": 100, "default": 10},
        "liveJobId": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
    }
