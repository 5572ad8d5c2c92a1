"""The OpenAPI 3.1 document of the control API, served at /api/openapi.json.

It is built from the route table (`Route`, one per operation: `api.views.ROUTES` and
the app's own) and the models: request bodies and query strings from
`api.validation`, every response from `api.models`. Only the summaries, the error
statuses' names and the security schemes are written here.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.alias_generators import to_camel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, models_json_schema
from pydantic_core import CoreSchema

from .models import Envelope, Failure, Paged
from .settings import Settings

JSON = "application/json"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_PATH_PARAMETER = re.compile(r"\{([^}]*)\}")
_ERRORS = {
    400: "Bad Request: one message per bad field in errors",
    401: "Unauthorized: no or an invalid API key",
    403: "Forbidden: the key belongs to another project",
    404: "Result Not Found",
    409: "Conflict: the resource is not in a state that allows it (a live not on)",
    500: "Internal Server Error",
    503: "Backend Fetch Failed: a backend does not answer",
}
_SECURITY: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": []}, {"rawKey": []}]
_SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
    "rawKey": {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "The API key itself, without a scheme",
    },
}


class _Schemas(GenerateJsonSchema):
    """The models' JSON schemas without a title on every field (`"title": "Filepath"`)."""

    def field_title_should_be_set(self, schema: CoreSchema) -> bool:
        return False


@dataclass(frozen=True)
class PathParameter:
    """A path template's `{name}`: what it is, and its schema (a string by default)."""

    description: str
    schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "string"})


@dataclass(frozen=True)
class Route:
    """One operation: what the router serves, and what the document says of it.

    The operation id is the handler's name in camelCase. Error statuses documented:
    `errors`, plus 400 with a body or a query model, plus 401, 403 and 500 unless
    `public` (no API key).
    """

    method: str
    path: str
    handler: Handler
    summary: str
    result: Any = None  # the envelope's `result`: a model, list[model]; None: no body
    status: int = 200
    paged: bool = False  # `result` is one page of items, `resultInfo` says which
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    parameters: Mapping[str, PathParameter] = field(default_factory=dict)
    errors: tuple[int, ...] = ()
    public: bool = False
    also: tuple[int, ...] = ()  # statuses that answer this envelope too (a failed /healthz)
    media_type: str | None = None  # a body that is not the envelope (the metrics' text)

    @property
    def envelope(self) -> type[BaseModel] | None:
        if self.result is None or self.media_type is not None:
            return None
        return Paged[self.result] if self.paged else Envelope[self.result]  # type: ignore[name-defined]


def openapi_document(settings: Settings, routes: Sequence[Route]) -> dict[str, Any]:
    """The complete document: every route's operation, the models' schemas."""
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [(Failure, "serialization")]
    for route in routes:
        if route.envelope is not None:
            models.append((route.envelope, "serialization"))
        if route.body is not None:
            models.append((route.body, "validation"))
    refs, schemas = models_json_schema(
        list(dict.fromkeys(models)),
        ref_template="#/components/schemas/{model}",
        schema_generator=_Schemas,
    )
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, refs)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "onair control API",
            "version": "1",
            "description": "Live jobs: create, toggle online, statistics, outputs, timings.",
        },
        "servers": [{"url": f"http://{settings.public_host}:{settings.http_port}"}],
        "paths": paths,
        "components": {"schemas": schemas["$defs"], "securitySchemes": _SECURITY_SCHEMES},
    }


def _operation(route: Route, refs: Mapping[Any, Any]) -> dict[str, Any]:
    def answer(description: str, schema: Any) -> dict[str, Any]:
        return {"description": description, "content": {JSON: {"schema": schema}}}

    responses: dict[str, Any] = {}
    success = HTTPStatus(route.status).phrase
    if route.envelope is not None:
        responses[str(route.status)] = answer(success, refs[route.envelope, "serialization"])
        for status in route.also:
            responses[str(status)] = answer(_ERRORS[status], refs[route.envelope, "serialization"])
    elif route.media_type is not None:
        schema = {"type": "string" if route.media_type.startswith("text/") else "object"}
        responses[str(route.status)] = {
            "description": success,
            "content": {route.media_type: {"schema": schema}},
        }
    else:
        responses[str(route.status)] = {"description": success}
    errors = set(route.errors)
    if route.body is not None or route.query is not None:
        errors.add(400)
    if not route.public:
        errors |= {401, 403, 500}
    for status in sorted(errors):
        responses[str(status)] = answer(_ERRORS[status], refs[Failure, "serialization"])

    operation: dict[str, Any] = {
        "summary": route.summary,
        "operationId": to_camel(route.handler.__name__),
        "parameters": _path_parameters(route) + _query_parameters(route.query),
        "responses": responses,
        "security": [] if route.public else _SECURITY,
    }
    if route.body is not None:
        schema = refs[route.body, "validation"]
        operation["requestBody"] = {"required": True, "content": {JSON: {"schema": schema}}}
    return operation


def _path_parameters(route: Route) -> list[dict[str, Any]]:
    names = _PATH_PARAMETER.findall(route.path)
    if set(names) != set(route.parameters):
        raise ValueError(f"{route.path}: parameters {sorted(route.parameters)}")
    return [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": dict(route.parameters[name].schema),
            "description": route.parameters[name].description,
        }
        for name in names
    ]


def _query_parameters(query: type[BaseModel] | None) -> list[dict[str, Any]]:
    """A query model's fields; an optional one's schema without its `null` (a query
    string has none)."""
    if query is None:
        return []
    model = query.model_json_schema(schema_generator=_Schemas)
    parameters = []
    for name, schema in model["properties"].items():
        description = schema.pop("description", "")
        options = [o for o in schema.pop("anyOf", [schema]) if o != {"type": "null"}]
        if schema.get("default", 0) is None:
            del schema["default"]
        parameters.append(
            {
                "name": name,
                "in": "query",
                "required": name in model.get("required", ()),
                "schema": {**schema, **options[0]},
                "description": description,
            }
        )
    return parameters
