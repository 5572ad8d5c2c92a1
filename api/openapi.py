"""The OpenAPI 3 document of the control API, served at /api/openapi.json."""

from __future__ import annotations

from typing import Any

from .settings import Settings
from .validation import KEY_SUFFIX_MARGIN_BYTES, MAX_PAGE_SIZE, MAX_PATH_CHARS, MAX_PREFIX_BYTES

JSON = "application/json"

_STR = {"type": "string"}
_NSTR = {"type": ["string", "null"]}
_INT = {"type": "integer"}
_BOOL = {"type": "boolean"}
_DT = {"type": ["string", "null"], "format": "date-time"}
_UUID = {"type": "string", "format": "uuid"}


def _obj(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
    }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


PAGE_INFO = _obj(
    {
        "totalCount": _INT,
        "pageIndex": _INT,
        "pageSize": _INT,
        "totalPages": _INT,
        "hasNextPage": _BOOL,
        "hasPreviousPage": _BOOL,
    }
)

STATISTICS = _obj(
    {
        "width": _INT,
        "height": _INT,
        "framerate": _INT,
        "videoDataRate": _INT,
        "videoCodecId": _INT,
        "audioDataRate": _INT,
        "audioSampleRate": _INT,
        "audioSampleSize": _INT,
        "audioCodecId": _INT,
        "audioChannels": _INT,
        "stereo": _BOOL,
        "encoder": _STR,
    }
)

OPTION = _obj({"id": _INT, "value": _STR, "enabled": _BOOL})

LIVE_JOB = _obj(
    {
        "id": _INT,
        "name": _UUID,
        "key": _UUID,
        "destination": _STR,
        "description": _NSTR,
        "projectId": _UUID,
        "status": {"type": "integer", "enum": [1, 2, 3, 4]},
        "online": _BOOL,
        "insertDate": {"type": "string", "format": "date-time"},
        "startDateTime": _DT,
        "endDateTime": _DT,
        "jobTemplateId": _INT,
        "argoResourceName": _NSTR,
        "resourceName": _STR,
        "bucket": _STR,
        "cdnDistribution": _BOOL,
        "rtmpServer": {
            "type": ["string", "null"],
            "description": "The RTMP server URL (OBS 'Server') of an RTMP job; null for SRT"
            " and HLS jobs (serverType 1, 2), whose ingest is not built yet",
        },
        "webSocketConnection": _STR,
        "cdn": {
            "type": ["string", "null"],
            "description": "{ONAIR_CDN_BASE_URL}/{bucket}/{destination}/{filePath}/master.m3u8:"
            " a CDN in front of the S3 public URL, its origin path the bucket path; null"
            " without cdnDistribution or a configured CDN. Path segments are percent-encoded",
        },
        "storageMasterFile": {
            "type": "string",
            "description": "{S3 public URL}/{bucket}/{destination}/{filePath}/master.m3u8,"
            " path segments percent-encoded",
        },
        "storageDvrMasterFile": {
            "type": "string",
            "description": "{S3 public URL}/{bucket}/{destination}/{filePath}/dvr.m3u8: the DVR"
            " master, a sliding window of ONAIR_DVR_WINDOW_SECONDS over the recording",
        },
        "outputManifests": {
            "type": "object",
            "additionalProperties": _STR,
            "description": "Rendition name -> its live playlist (.../{name}/index.m3u8);"
            " renditions skipped for this source are not listed",
        },
        "input": _obj(
            {
                "filePath": _STR,
                "serverType": {"type": "integer", "enum": [0, 1, 2]},
                "serverTypeOptions": {"type": "array", "items": _ref("Option")},
                "inputClass": {"type": "integer", "enum": [0, 1]},
                "inputClassOptions": {"type": "array", "items": _ref("Option")},
                "callbackUrl": _NSTR,
            }
        ),
        "statistics": _ref("Statistics"),
    }
)

LIVE_JOB_SUMMARY = _obj(
    {
        "id": _INT,
        "name": _UUID,
        "key": _UUID,
        "status": {"type": "string", "enum": ["Offline", "Processing", "Live", "Interrupted"]},
        "description": _NSTR,
        "filePath": _STR,
        "insertDate": {"type": "string", "format": "date-time"},
        "startDateTime": _DT,
        "endDateTime": _DT,
    }
)

NEW_LIVE_JOB = {
    "type": "object",
    "required": ["jobTemplateId", "destination", "bucket", "input"],
    "properties": {
        "jobTemplateId": {"type": "integer", "description": "1, 2 or 3 (see jobtemplates)"},
        "destination": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_PATH_CHARS,
            "description": "Relative key path in the bucket. With filePath it makes the job's"
            " prefix destination/filePath, which no other job in the bucket may equal,"
            " lie inside or enclose (400 naming input.filePath), and which is at most"
            f" {MAX_PREFIX_BYTES} bytes of UTF-8 (S3 keys are at most 1024; onair keeps"
            f" {KEY_SUFFIX_MARGIN_BYTES} for the names it appends)",
        },
        "description": {"type": "string", "maxLength": 2000},
        "bucket": {
            "type": "string",
            "minLength": 3,
            "maxLength": 63,
            "description": "An S3 bucket name (the general purpose bucket naming rules)."
            " It belongs to the project whose job first used it: another project's job on"
            " it is a 400. With ONAIR_S3_BUCKETS set, only those buckets are accepted",
        },
        "cdnDistribution": _BOOL,
        "input": {
            "type": "object",
            "required": ["filePath", "serverType", "inputClass"],
            "properties": {
                "filePath": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_PATH_CHARS,
                    "description": "Relative key path under destination (see destination)",
                },
                "serverType": {
                    "type": "integer",
                    "enum": [0, 1, 2],
                    "description": "0 RTMP, 1 SRT, 2 HLS",
                },
                "inputClass": {
                    "type": "integer",
                    "enum": [0, 1],
                    "description": "0 Single, 1 Standard",
                },
                "callbackUrl": {"type": "string", "format": "uri"},
            },
        },
    },
}

TOGGLE = {
    "type": "object",
    "required": ["online"],
    "properties": {
        "online": _BOOL,
        "startDateTime": {"type": "string", "format": "date-time"},
        "finishDateTime": {"type": "string", "format": "date-time"},
    },
}

OUTPUT = _obj(
    {
        "liveJobId": _INT,
        "outputId": _INT,
        "name": _STR,
        "progress": _INT,
        "status": {"type": "integer", "description": "The live status (1..4) of the job"},
        "lockKey": {"type": ["string", "null"]},
        "counter": _INT,
        "encoderId": {"type": ["integer", "null"]},
        "skipped": {
            "type": "boolean",
            "description": "The pipeline does not encode this rendition (the source is smaller)",
        },
        "skipReason": {
            "type": ["string", "null"],
            "description": "Why it is skipped (e.g. 'source is 1280x720'); null if not skipped",
        },
    }
)

TIMING = _obj(
    {
        "status": _STR,
        "childStatus": _STR,
        "startDateTime": {"type": "string", "format": "date-time"},
        "messageComment": _STR,
        "outputId": {"type": ["integer", "null"]},
    }
)

TEMPLATE = _obj(
    {
        "id": _INT,
        "name": _STR,
        "jobTemplateType": _STR,
        "category": _STR,
        "description": _STR,
    }
)

OUTPUT_STATS = {"type": "object", "additionalProperties": True}


def _envelope(result: dict[str, Any], paged: bool = False) -> dict[str, Any]:
    return _obj(
        {
            "success": _BOOL,
            "errors": {"type": "array", "items": _STR},
            "messages": {"type": "array", "items": _STR},
            "result": result,
            "resultInfo": _ref("PageInfo") if paged else {"type": "null"},
            "statusCode": _INT,
        }
    )


ERROR = _obj(
    {
        "success": {"type": "boolean", "const": False},
        "errors": {"type": "array", "items": _STR, "minItems": 1},
        "messages": {"type": "array", "items": _STR},
        "result": {"type": "null"},
        "resultInfo": {"type": "null"},
        "statusCode": _INT,
    }
)


def _response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    names = {
        400: "Bad Request: one message per bad field in errors",
        401: "Unauthorized: no or an invalid API key",
        403: "Forbidden: the key belongs to another project",
        404: "Not found",
        500: "Internal Server Error",
    }
    return {str(c): _response(names[c], _ref("Error")) for c in codes}


def _param(
    name: str, where: str, schema: dict[str, Any], required: bool, desc: str
) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required, "schema": schema, "description": desc}


VERSION = _param("version", "path", {"type": "string", "enum": ["1"]}, True, "API version")
PROJECT = _param("projectId", "path", _UUID, True, "The project id")
JOB_REF = _param(
    "id", "path", {"type": "string"}, True, "The live job's id (integer) or name (UUID)"
)
JOB_REF_OR_KEY = _param(
    "id",
    "path",
    {"type": "string"},
    True,
    "The job id or name for GET, the stream key for POST",
)
PAGE_INDEX = _param(
    "pageIndex", "query", {"type": "integer", "minimum": 1}, False, "1-based page (default 1)"
)
PAGE_SIZE = _param(
    "pageSize",
    "query",
    {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
    False,
    f"Items per page (default 10, at most {MAX_PAGE_SIZE})",
)
PAGING = [PAGE_INDEX, PAGE_SIZE]

BASE = "/api/v{version}/projects/{projectId}"


def _op(
    summary: str,
    params: list[dict[str, Any]],
    responses: dict[str, Any],
    body: dict[str, Any] | None = None,
    op_id: str = "",
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "operationId": op_id,
        "parameters": [VERSION, PROJECT, *params],
        "responses": {**responses, **_errors(401, 403, 500)},
        "security": [{"bearer": []}, {"apiKey": []}, {"rawKey": []}],
    }
    if body is not None:
        op["requestBody"] = {"required": True, "content": {JSON: {"schema": body}}}
    return op


def openapi_document(settings: Settings) -> dict[str, Any]:
    """The complete document; schemas match exactly what the handlers send."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "onair control API",
            "version": "1",
            "description": "Live jobs: create, toggle online, statistics, outputs, timings.",
        },
        "servers": [{"url": f"http://{settings.public_host}:{settings.http_port}"}],
        "paths": {
            f"{BASE}/livejobs": {
                "get": _op(
                    "List live jobs (paged, searchable)",
                    [
                        _param(
                            "search",
                            "query",
                            _STR,
                            False,
                            "Text contained in name, description, destination, filePath or bucket",
                        ),
                        *PAGING,
                    ],
                    {
                        "200": _response(
                            "Live jobs",
                            _envelope(
                                {"type": "array", "items": _ref("LiveJobSummary")}, paged=True
                            ),
                        ),
                        **_errors(400),
                    },
                    op_id="listLiveJobs",
                ),
                "post": _op(
                    "Create a live job",
                    [],
                    {
                        "201": _response("The created live job", _envelope(_ref("LiveJob"))),
                        **_errors(400),
                    },
                    body=NEW_LIVE_JOB,
                    op_id="createLiveJob",
                ),
            },
            f"{BASE}/livejobs/outputs": {
                "get": _op(
                    "List live encoding outputs (one per rendition)",
                    [
                        _param(
                            "liveJobId",
                            "query",
                            {"type": "integer", "minimum": 1},
                            False,
                            "Only this live job's outputs",
                        ),
                        *PAGING,
                    ],
                    {
                        "200": _response(
                            "Outputs",
                            _envelope({"type": "array", "items": _ref("Output")}, paged=True),
                        ),
                        **_errors(400, 404),
                    },
                    op_id="listOutputs",
                ),
            },
            # GET and POST share one template (OpenAPI forbids two that differ only
            # by a parameter's name): `id` is the job id or name, or the stream key.
            f"{BASE}/livejobs/{{id}}": {
                "get": _op(
                    "Get a live job",
                    [JOB_REF_OR_KEY],
                    {"200": _response("The live job", _envelope(_ref("LiveJob"))), **_errors(404)},
                    op_id="getLiveJob",
                ),
                "post": _op(
                    "Put a live job online (accept its publisher) or offline, by its stream key",
                    [JOB_REF_OR_KEY],
                    {
                        "201": _response(
                            "New state", _envelope(_obj({"online": _BOOL, "playBackPathURL": _STR}))
                        ),
                        **_errors(400, 404),
                    },
                    body=TOGGLE,
                    op_id="toggleLiveJob",
                ),
            },
            # Not the toggle: a longer path, and `id` is the job's id or name here.
            f"{BASE}/livejobs/{{id}}/key": {
                "post": _op(
                    "Rotate a live job's stream key: a new key, the previous one refused from"
                    " now on (new publishers, the online toggle); a publisher already live"
                    " is not cut",
                    [JOB_REF],
                    {
                        "201": _response(
                            "The live job with its new key", _envelope(_ref("LiveJob"))
                        ),
                        **_errors(404),
                    },
                    op_id="rotateStreamKey",
                ),
            },
            f"{BASE}/livejobs/{{id}}/timings": {
                "get": _op(
                    "List a live job's timings (status changes and events)",
                    [
                        JOB_REF,
                        _param(
                            "outputId",
                            "query",
                            {"type": "integer", "minimum": 1},
                            False,
                            "Only this output's timings",
                        ),
                        *PAGING,
                    ],
                    {
                        "200": _response(
                            "Timings",
                            _envelope({"type": "array", "items": _ref("Timing")}, paged=True),
                        ),
                        **_errors(400, 404),
                    },
                    op_id="listTimings",
                ),
            },
            f"{BASE}/livejobs/{{id}}/stats": {
                "get": _op(
                    "Get a live job's input statistics (and its outputs')",
                    [JOB_REF],
                    {
                        "200": _response(
                            "Statistics",
                            _envelope(
                                {
                                    "type": "array",
                                    "items": {
                                        "allOf": [
                                            _ref("Statistics"),
                                            {
                                                "type": "object",
                                                "properties": {
                                                    "outputs": {
                                                        "type": "array",
                                                        "items": OUTPUT_STATS,
                                                    }
                                                },
                                            },
                                        ]
                                    },
                                }
                            ),
                        ),
                        **_errors(404),
                    },
                    op_id="getStats",
                ),
            },
            f"{BASE}/livejobs/{{id}}/events": {
                "get": _op(
                    "WebSocket (webSocketConnection): the job's status, statistics and"
                    " outputs, one JSON message a second",
                    [JOB_REF],
                    {
                        "101": {"description": "Switching to the WebSocket protocol"},
                        **_errors(400, 404),
                    },
                    op_id="liveJobEvents",
                ),
            },
            f"{BASE}/jobtemplates": {
                "get": _op(
                    "List job templates",
                    PAGING,
                    {
                        "200": _response(
                            "Job templates",
                            _envelope({"type": "array", "items": _ref("JobTemplate")}, paged=True),
                        ),
                        **_errors(400),
                    },
                    op_id="listJobTemplates",
                ),
            },
            "/healthz": {
                "get": {
                    "summary": "Health: the store is open and S3 answers",
                    "operationId": "health",
                    "security": [],
                    "responses": {
                        "200": _response(
                            "Healthy", _envelope(_obj({"store": _BOOL, "storage": _BOOL}))
                        ),
                        "503": _response(
                            "A backend does not answer",
                            _obj(
                                {
                                    "success": _BOOL,
                                    "errors": {"type": "array", "items": _STR},
                                    "messages": {"type": "array", "items": _STR},
                                    "result": _obj({"store": _BOOL, "storage": _BOOL}),
                                    "resultInfo": {"type": "null"},
                                    "statusCode": _INT,
                                }
                            ),
                        ),
                    },
                }
            },
        },
        "components": {
            "schemas": {
                "PageInfo": PAGE_INFO,
                "Statistics": STATISTICS,
                "Option": OPTION,
                "LiveJob": LIVE_JOB,
                "LiveJobSummary": LIVE_JOB_SUMMARY,
                "Output": OUTPUT,
                "Timing": TIMING,
                "JobTemplate": TEMPLATE,
                "Error": ERROR,
            },
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
                "rawKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "The API key itself, without a scheme",
                },
            },
        },
    }
