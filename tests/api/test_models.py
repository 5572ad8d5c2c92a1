"""Requests and responses are models: errors named by JSON path, query strings as
clients write them, and a route-table line that is all the document needs."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from pydantic import Field

from api.models import ResponseModel
from api.openapi import PathParameter, Route, openapi_document
from api.settings import Settings
from api.validation import RequestModel
from tests.support.service import CREATE_BODY, Api


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({**CREATE_BODY, "input": 5}, ["input: must be a JSON object"]),
        (
            {**CREATE_BODY, "cdnDistribution": 1, "input": {"serverType": "0", "inputClass": 1}},
            [
                "cdnDistribution: must be true or false",
                "input.filePath: is required",
                "input.serverType: must be an integer",
            ],
        ),
        (
            {**CREATE_BODY, "input": {**CREATE_BODY["input"], "inputClass": 5}},
            ["input.inputClass: must be one of 0 (Single), 1 (Standard)"],
        ),
        ({**CREATE_BODY, "description": "x" * 2001}, ["description: at most 2000 characters"]),
    ],
)
async def test_each_bad_field_has_one_message_named_by_its_json_path(
    api: Api, body: dict[str, Any], errors: list[str]
) -> None:
    status, answer = await api.call("POST", "/livejobs", json=body)
    assert status == 400, answer
    assert answer["errors"] == errors


async def test_a_top_level_input_field_is_named_by_its_path_in_input(api: Api) -> None:
    body = {k: v for k, v in CREATE_BODY.items() if k != "input"}
    status, answer = await api.call("POST", "/livejobs", json={**body, "filePath": "a/../b"})
    assert status == 400
    assert answer["errors"] == [
        "input.filePath: must not contain '.' or '..' segments",
        "input.serverType: is required",
        "input.inputClass: is required",
    ]
    # Given in both places, `input` wins.
    nested = {**CREATE_BODY["input"], "filePath": "nested"}
    status, answer = await api.call(
        "POST", "/livejobs", json={**body, "filePath": "top", "input": nested}
    )
    assert status == 201 and answer["result"]["input"]["filePath"] == "nested"


async def test_query_names_are_case_insensitive_and_empty_values_absent(api: Api) -> None:
    for i in range(3):
        await api.create_job(input={**CREATE_BODY["input"], "filePath": f"ep{i}"})
    status, body = await api.call("GET", "/livejobs?PAGESIZE=2&pageindex=2&pageSize=1")
    assert status == 200, body
    assert body["resultInfo"]["pageSize"] == 2 and body["resultInfo"]["pageIndex"] == 2
    assert len(body["result"]) == 1
    status, body = await api.call("GET", "/livejobs?pageSize=&pageIndex=")
    assert status == 200 and body["resultInfo"]["pageSize"] == 10
    status, body = await api.call("GET", "/livejobs?pageSize=0&pageIndex=%2B1&liveJobId=x")
    assert status == 400
    assert body["errors"] == ["pageIndex: must be an integer", "pageSize: must be at least 1"]


class Restream(RequestModel):
    """A restream of a live job."""

    rtmp_url: str = Field(description="Where to push")
    enabled: bool = True


class RestreamRow(ResponseModel):
    id: int
    rtmp_url: str


async def create_restream(request: web.Request) -> web.Response:
    raise NotImplementedError


def test_a_route_table_line_is_a_documented_operation() -> None:
    validator = pytest.importorskip("openapi_spec_validator")
    path = "/api/v{version}/projects/{projectId}/restreams/{restreamId}"
    route = Route(
        "POST",
        path,
        create_restream,
        "Create a restream",
        RestreamRow,
        status=201,
        body=Restream,
        parameters={name: PathParameter(name) for name in ("version", "projectId", "restreamId")},
        errors=(404,),
    )
    document = openapi_document(Settings(), [route])
    validator.validate(document)
    operation = document["paths"][path]["post"]
    assert operation["operationId"] == "createRestream"
    assert [p["name"] for p in operation["parameters"]] == ["version", "projectId", "restreamId"]
    assert sorted(operation["responses"]) == ["201", "400", "401", "403", "404", "500"]
    schemas = document["components"]["schemas"]
    sent = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    body = schemas[sent.removeprefix("#/components/schemas/")]
    assert body["required"] == ["rtmpUrl"] and set(body["properties"]) == {"rtmpUrl", "enabled"}
    created = operation["responses"]["201"]["content"]["application/json"]["schema"]["$ref"]
    envelope = schemas[created.removeprefix("#/components/schemas/")]
    assert set(envelope["required"]) == {
        "success", "errors", "messages", "result", "resultInfo", "statusCode",
    }  # fmt: skip
    assert envelope["properties"]["result"] == {"$ref": "#/components/schemas/RestreamRow"}
    assert schemas["RestreamRow"]["required"] == ["id", "rtmpUrl"]


def test_a_route_must_describe_exactly_its_path_parameters() -> None:
    route = Route("GET", "/api/v{version}/things/{id}", create_restream, "A thing")
    with pytest.raises(ValueError, match="things"):
        openapi_document(Settings(), [route])
