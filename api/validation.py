"""Request validation: every bad field gets its own message, named by its JSON path."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from encoder.templates import TemplateNotFound, get_template
from packager.layout import object_prefix

from .errors import ValidationFailed

RTMP_SERVER_TYPE = 0
SERVER_TYPES = {RTMP_SERVER_TYPE: "RTMP", 1: "SRT", 2: "HLS"}
INPUT_CLASSES = {0: "Single", 1: "Standard"}

MAX_PATH_CHARS = 512
# S3 keys are at most 1024 bytes of UTF-8. onair appends to a job's prefix
# (`/{rendition}/seg_NNNNNNNNN.ts`, the playlists, later `/videos/...`): this margin is
# kept for that, so the prefix `{destination}/{filePath}` may take the rest.
MAX_KEY_BYTES = 1024
KEY_SUFFIX_MARGIN_BYTES = 128
MAX_PREFIX_BYTES = MAX_KEY_BYTES - KEY_SUFFIX_MARGIN_BYTES
MAX_DESCRIPTION_CHARS = 2000
MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 10

# The S3 "general purpose bucket naming rules", in full.
_BUCKET_CHARS = re.compile(r"[a-z0-9.-]+")
_IP_LIKE = re.compile(r"\d+\.\d+\.\d+\.\d+")
_RESERVED_BUCKET_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_BUCKET_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# ASCII only: `str.isdigit` takes superscripts ('\u00b2', which int() then refuses),
# and int() takes other scripts' digits ('\u0661' is 1) and '1_0': no client means those.
_ASCII_INTEGER = re.compile(r"-?[0-9]+")


@dataclass(frozen=True)
class NewLiveJob:
    job_template_id: int
    destination: str
    description: str | None
    bucket: str
    cdn_distribution: bool
    file_path: str
    server_type: int
    input_class: int
    callback_url: str | None


@dataclass(frozen=True)
class Toggle:
    online: bool
    start: str | None
    finish: str | None


@dataclass(frozen=True)
class Paging:
    page_index: int  # 1-based
    page_size: int

    @property
    def offset(self) -> int:
        return (self.page_index - 1) * self.page_size


def ascii_int(text: str) -> int | None:
    """The integer `text` spells in ASCII digits (an optional '-'), else None."""
    if not _ASCII_INTEGER.fullmatch(text):
        return None
    try:
        return int(text)
    except ValueError:  # more digits than int() converts
        return None


def check_key_path(field: str, value: Any, errors: list[str], *, required: bool) -> str:
    """A relative object-key path that cannot escape its prefix."""
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            errors.append(f"{field}: is required and must not be empty")
        return ""
    if not isinstance(value, str):
        errors.append(f"{field}: must be a string")
        return ""
    if len(value) > MAX_PATH_CHARS:
        errors.append(f"{field}: at most {MAX_PATH_CHARS} characters")
    elif _CONTROL.search(value):
        errors.append(f"{field}: must not contain control characters")
    elif value.startswith("/") or "\\" in value or re.match(r"^[A-Za-z]:", value):
        errors.append(f"{field}: must be a relative path (no leading '/', no '\\')")
    elif any(part in ("..", ".") for part in value.split("/")):
        errors.append(f"{field}: must not contain '.' or '..' segments")
    elif "//" in value.rstrip("/"):
        errors.append(f"{field}: must not contain empty segments ('//')")
    else:
        return value.strip("/")
    return ""


def bucket_name_problem(name: str) -> str | None:
    """Why `name` is not a valid S3 bucket name, None if it is one."""
    if not 3 <= len(name) <= 63:
        return "must be 3 to 63 characters long"
    if not _BUCKET_CHARS.fullmatch(name):
        return "may contain only lowercase letters a-z, digits, '.' and '-'"
    if not (name[0].isalnum() and name[-1].isalnum()):
        return "must begin and end with a letter or a digit"
    if ".." in name or ".-" in name or "-." in name:
        return "must not contain '..', '.-' or '-.'"
    if _IP_LIKE.fullmatch(name):
        return "must not be formatted as an IP address"
    for prefix in _RESERVED_BUCKET_PREFIXES:
        if name.startswith(prefix):
            return f"must not start with {prefix!r} (reserved by S3)"
    for suffix in _RESERVED_BUCKET_SUFFIXES:
        if name.endswith(suffix):
            return f"must not end with {suffix!r} (reserved by S3)"
    return None


def _bucket(value: Any, errors: list[str], allowed: tuple[str, ...] | None) -> str:
    if not isinstance(value, str) or not value.strip():
        errors.append("bucket: is required and must not be empty")
        return ""
    problem = bucket_name_problem(value)
    if problem is not None:
        errors.append(f"bucket: not a valid S3 bucket name: {problem}")
        return ""
    if allowed is not None and value not in allowed:
        errors.append("bucket: not in ONAIR_S3_BUCKETS")
        return ""
    return value


def _check_prefix_bytes(destination: str, file_path: str, errors: list[str]) -> None:
    """Every key under the job's prefix must fit in S3's 1024 bytes (see MAX_PREFIX_BYTES).

    The field named is the one that makes the prefix too long: `destination` when it
    alone is, else `input.filePath`.
    """
    if not destination or not file_path:
        return  # already refused
    size = len(object_prefix(destination, file_path).encode())
    if size <= MAX_PREFIX_BYTES:
        return
    field = "destination" if len(destination.encode()) > MAX_PREFIX_BYTES else "input.filePath"
    errors.append(
        f"{field}: destination/filePath is {size} bytes of UTF-8; at most {MAX_PREFIX_BYTES}"
        f" (S3 keys are at most {MAX_KEY_BYTES} bytes, {KEY_SUFFIX_MARGIN_BYTES} are kept for"
        " the names onair appends)"
    )


def _int_choice(field: str, value: Any, choices: Mapping[int, str], errors: list[str]) -> int:
    allowed = ", ".join(f"{k} ({v})" for k, v in choices.items())
    if isinstance(value, bool) or not isinstance(value, int) or value not in choices:
        if value is None:
            errors.append(f"{field}: is required, one of {allowed}")
        else:
            errors.append(f"{field}: must be one of {allowed}")
        return -1
    return value


def _callback_url(value: Any, errors: list[str]) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        errors.append("input.callbackUrl: must be a string")
        return None
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:
        parts, host = None, None
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not host
        or _CONTROL.search(value)
        or len(value) > 2048
    ):
        errors.append("input.callbackUrl: must be an http:// or https:// URL with a host")
        return None
    return value


def parse_new_live_job(body: Any, allowed_buckets: tuple[str, ...] | None = None) -> NewLiveJob:
    """Validate a create-live-job body; the `input` fields may also be given at top level.

    `allowed_buckets` is the operator's allow-list (ONAIR_S3_BUCKETS), None for any bucket.
    Who owns the bucket and whether the prefix is free are the store's to check, in the
    transaction that inserts the job.
    """
    if not isinstance(body, dict):
        raise ValidationFailed(["body: must be a JSON object"])
    errors: list[str] = []
    raw_input = body.get("input")
    if raw_input is not None and not isinstance(raw_input, dict):
        errors.append("input: must be an object")
        raw_input = None
    source: dict[str, Any] = {**body, **(raw_input or {})}

    template_id = body.get("jobTemplateId")
    if isinstance(template_id, bool) or not isinstance(template_id, int):
        errors.append("jobTemplateId: is required and must be an integer")
    else:
        try:
            get_template(template_id)
        except TemplateNotFound:
            errors.append(f"jobTemplateId: unknown job template {template_id}")

    destination = check_key_path("destination", body.get("destination"), errors, required=True)
    bucket = _bucket(body.get("bucket"), errors, allowed_buckets)

    description = body.get("description")
    if description is not None and not isinstance(description, str):
        errors.append("description: must be a string")
        description = None
    elif description is not None and len(description) > MAX_DESCRIPTION_CHARS:
        errors.append(f"description: at most {MAX_DESCRIPTION_CHARS} characters")

    cdn = body.get("cdnDistribution", False)
    if cdn is None:
        cdn = False
    if not isinstance(cdn, bool):
        errors.append("cdnDistribution: must be true or false")

    file_path = check_key_path("input.filePath", source.get("filePath"), errors, required=True)
    server_type = _int_choice("input.serverType", source.get("serverType"), SERVER_TYPES, errors)
    input_class = _int_choice("input.inputClass", source.get("inputClass"), INPUT_CLASSES, errors)
    callback_url = _callback_url(source.get("callbackUrl"), errors)
    _check_prefix_bytes(destination, file_path, errors)

    if errors:
        raise ValidationFailed(errors)
    assert isinstance(template_id, int)
    return NewLiveJob(
        job_template_id=template_id,
        destination=destination,
        description=description,
        bucket=bucket,
        cdn_distribution=bool(cdn),
        file_path=file_path,
        server_type=server_type,
        input_class=input_class,
        callback_url=callback_url,
    )


def _datetime(field: str, value: Any, errors: list[str]) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        errors.append(f"{field}: must be an ISO 8601 date-time string")
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        errors.append(f"{field}: must be an ISO 8601 date-time such as 2022-01-28T23:33:39.961Z")
        return None
    if parsed.tzinfo is None:
        errors.append(f"{field}: must carry a time zone (e.g. a trailing Z)")
        return None
    return parsed


def parse_toggle(body: Any) -> Toggle:
    if not isinstance(body, dict):
        raise ValidationFailed(["body: must be a JSON object"])
    errors: list[str] = []
    online = body.get("online")
    if not isinstance(online, bool):
        errors.append("online: is required and must be true or false")
    start = _datetime("startDateTime", body.get("startDateTime"), errors)
    finish = _datetime("finishDateTime", body.get("finishDateTime"), errors)
    if start and finish and finish <= start:
        errors.append("finishDateTime: must be later than startDateTime")
    if errors:
        raise ValidationFailed(errors)
    assert isinstance(online, bool)
    return Toggle(
        online,
        start.isoformat() if start else None,
        finish.isoformat() if finish else None,
    )


def _query_int(
    query: Mapping[str, str], name: str, errors: list[str], *, minimum: int, maximum: int
) -> int | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    value = ascii_int(raw)
    if value is None:
        errors.append(f"{name}: must be an integer")
        return None
    if not minimum <= value <= maximum:
        errors.append(f"{name}: must be between {minimum} and {maximum}")
        return None
    return value


def _lookup(query: Mapping[str, str], name: str) -> str | None:
    """Query parameters are matched case-insensitively (`pageIndex`, `PageIndex`)."""
    for key, value in query.items():
        if key.lower() == name.lower():
            return value
    return None


def parse_paging(query: Mapping[str, str], errors: list[str]) -> Paging:
    normalized = {
        name: v for name in ("pageIndex", "pageSize") if (v := _lookup(query, name)) is not None
    }
    index = _query_int(normalized, "pageIndex", errors, minimum=1, maximum=2**31 - 1)
    size = _query_int(normalized, "pageSize", errors, minimum=1, maximum=MAX_PAGE_SIZE)
    return Paging(index or 1, size or DEFAULT_PAGE_SIZE)


def parse_optional_id(query: Mapping[str, str], name: str, errors: list[str]) -> int | None:
    raw = _lookup(query, name)
    return _query_int(
        {name: raw} if raw is not None else {}, name, errors, minimum=1, maximum=2**63 - 1
    )


def query_text(query: Mapping[str, str], name: str) -> str | None:
    return _lookup(query, name)
