"""What a request may carry: the request models (bodies and query strings) and their rules.

camelCase on the wire, snake_case in Python; unknown fields are ignored; nothing is
coerced (`"2"` is not an integer, `1` is not `true`). `parse` validates a model and
answers every bad field with its own message, named by its JSON path
(`input.filePath: ...`), as `ValidationFailed` (400).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, TypeVar
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from encoder.templates import TemplateNotFound, get_template
from media.outbound import (
    ALLOW_PRIVATE_ENV,
    HTTP_SCHEMES,
    OutboundPolicy,
    OutboundRefused,
    address_refused,
    check_url,
)
from media.outbound.addresses import ip_literal
from packager.layout import object_prefix

from .errors import ValidationFailed

RTMP_SERVER_TYPE, SRT_SERVER_TYPE, HLS_SERVER_TYPE = 0, 1, 2
SERVER_TYPES = {RTMP_SERVER_TYPE: "RTMP", SRT_SERVER_TYPE: "SRT", HLS_SERVER_TYPE: "HLS"}
SINGLE_INPUT_CLASS, STANDARD_INPUT_CLASS = 0, 1
INPUT_CLASSES = {SINGLE_INPUT_CLASS: "Single", STANDARD_INPUT_CLASS: "Standard"}

MAX_PATH_CHARS = 512
# S3 keys are at most 1024 bytes of UTF-8. onair appends to a job's prefix
# (`/{rendition}/seg_NNNNNNNNN.ts`, the playlists, later `/videos/...`): this margin is
# kept for that, so the prefix `{destination}/{filePath}` may take the rest.
MAX_KEY_BYTES = 1024
KEY_SUFFIX_MARGIN_BYTES = 128
MAX_PREFIX_BYTES = MAX_KEY_BYTES - KEY_SUFFIX_MARGIN_BYTES
MAX_DESCRIPTION_CHARS = 2000
MAX_URL_CHARS = 2048
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

# -- the rules --------------------------------------------------------------------------


def ascii_int(text: str) -> int | None:
    """The integer `text` spells in ASCII digits (an optional '-'), else None."""
    if not _ASCII_INTEGER.fullmatch(text):
        return None
    try:
        return int(text)
    except ValueError:  # more digits than int() converts
        return None


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


def refuse(message: str, *, at: str | None = None) -> PydanticCustomError:
    """A field's error with onair's own `message`; `at` names another field than the
    one validated (the JSON path the message is for)."""
    return PydanticCustomError("onair", "{message}", {"message": message, "at": at})


def _key_path(value: str) -> str:
    """A relative object-key path that cannot escape its prefix, without outer '/'."""
    if not value.strip():
        raise refuse("must not be empty")
    if _CONTROL.search(value):
        raise refuse("must not contain control characters")
    if value.startswith("/") or "\\" in value or re.match(r"^[A-Za-z]:", value):
        raise refuse("must be a relative path (no leading '/', no '\\')")
    if any(part in ("..", ".") for part in value.split("/")):
        raise refuse("must not contain '.' or '..' segments")
    if "//" in value.rstrip("/"):
        raise refuse("must not contain empty segments ('//')")
    return value.strip("/")


def _one_of(choices: Mapping[int, str]) -> AfterValidator:
    allowed = ", ".join(f"{k} ({v})" for k, v in choices.items())

    def check(value: int) -> int:
        if value not in choices:
            raise refuse(f"must be one of {allowed}")
        return value

    return AfterValidator(check)


def _aware_date_time(value: Any) -> str | None:
    """An ISO 8601 date-time with a time zone, as `datetime.isoformat` writes it."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise refuse("must be an ISO 8601 date-time string")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise refuse("must be an ISO 8601 date-time such as 2022-01-28T23:33:39.961Z") from None
    if parsed.tzinfo is None:
        raise refuse("must carry a time zone (e.g. a trailing Z)")
    return parsed.isoformat()


def _query_int(value: Any) -> Any:
    """A query string's integer: ASCII digits only (`ascii_int`)."""
    if isinstance(value, str):
        number = ascii_int(value)
        if number is None:
            raise refuse("must be an integer")
        return number
    return value


KeyPath = Annotated[str, Field(min_length=1, max_length=MAX_PATH_CHARS), AfterValidator(_key_path)]
ServerType = Annotated[
    int,
    _one_of(SERVER_TYPES),
    Field(json_schema_extra={"enum": list(SERVER_TYPES)}, description="0 RTMP, 1 SRT, 2 HLS"),
]
InputClass = Annotated[
    int,
    _one_of(INPUT_CLASSES),
    Field(json_schema_extra={"enum": list(INPUT_CLASSES)}, description="0 Single, 1 Standard"),
]
DateTimeText = Annotated[
    str | None, BeforeValidator(_aware_date_time), Field(json_schema_extra={"format": "date-time"})
]
QueryInt = Annotated[int, BeforeValidator(_query_int)]
QueryId = Annotated[int, Field(ge=1, le=2**63 - 1), BeforeValidator(_query_int)]


# -- bodies -----------------------------------------------------------------------------


class RequestModel(BaseModel):
    """A request's body: camelCase fields, unknown ones ignored, no coercion."""

    model_config = ConfigDict(alias_generator=to_camel, strict=True, frozen=True)


def _http_url(value: str) -> str:
    """An http(s) URL with a host, of a shape the outbound guard opens (its address is
    the guard's to check, at each connection)."""
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:
        host = None
    if (
        not host
        or parts.scheme not in ("http", "https")
        or _CONTROL.search(value)
        or len(value) > MAX_URL_CHARS
    ):
        raise refuse("must be an http:// or https:// URL with a host")
    try:
        check_url(value, HTTP_SCHEMES)
    except OutboundRefused as exc:
        raise refuse(f"must be an http:// or https:// URL onair can open: {exc.reason}") from None
    return value


SRT_PASSPHRASE_CHARS = (10, 79)  # libsrt's bounds

# Standard input class (a primary and a backup publisher): when an input is lost, and
# which one onair goes back to. The defaults also apply to jobs from before them (the
# columns' server defaults in `api.database.schema` and migration 0009 say the same).
DEFAULT_INPUT_LOSS_THRESHOLD_MS = 1000
INPUT_LOSS_THRESHOLD_MS = (100, 60_000)
PRIMARY_PREFERENCE, EQUAL_PREFERENCE = "primary", "equal"
INPUT_PREFERENCES = (PRIMARY_PREFERENCE, EQUAL_PREFERENCE)
DEFAULT_FAILBACK_AFTER_SECONDS = 30.0
FAILBACK_AFTER_SECONDS = (1, 3600)


def _null_is_default(default: Any) -> BeforeValidator:
    """null means the field's default, as if absent."""
    return BeforeValidator(lambda value: default if value is None else value)


def _input_preference(value: str) -> str:
    if value not in INPUT_PREFERENCES:
        raise refuse(f"must be one of {', '.join(INPUT_PREFERENCES)}")
    return value


InputLossThresholdMs = Annotated[
    int,
    _null_is_default(DEFAULT_INPUT_LOSS_THRESHOLD_MS),
    Field(ge=INPUT_LOSS_THRESHOLD_MS[0], le=INPUT_LOSS_THRESHOLD_MS[1]),
]
InputPreference = Annotated[
    str,
    _null_is_default(PRIMARY_PREFERENCE),
    AfterValidator(_input_preference),
    Field(json_schema_extra={"enum": list(INPUT_PREFERENCES)}),
]
FailbackAfterSeconds = Annotated[
    float,
    _null_is_default(DEFAULT_FAILBACK_AFTER_SECONDS),
    Field(ge=FAILBACK_AFTER_SECONDS[0], le=FAILBACK_AFTER_SECONDS[1], allow_inf_nan=False),
]


class LiveJobInput(RequestModel):
    file_path: KeyPath = Field(description="Relative key path under destination (see destination)")
    server_type: ServerType
    input_class: InputClass
    callback_url: str | None = Field(
        None,
        json_schema_extra={"format": "uri"},
        description="Where the job's webhooks are POSTed (http or https). Its address is"
        " checked at each delivery (names change what they resolve to): a private one is"
        " refused unless ONAIR_OUTBOUND_ALLOW_PRIVATE",
    )

    @field_validator("callback_url")
    @classmethod
    def _callback_url(cls, value: str | None) -> str | None:
        return _http_url(value) if value else None

    srt_passphrase: str | None = Field(
        None,
        description="SRT jobs (serverType 1): the passphrase the publisher must give"
        f" (SRT encryption), {SRT_PASSPHRASE_CHARS[0]}-{SRT_PASSPHRASE_CHARS[1]} printable"
        " ASCII characters; a wrong one is refused by SRT itself. Never returned in full",
    )
    source_url: str | None = Field(
        None,
        json_schema_extra={"format": "uri"},
        description="HLS jobs (serverType 2) that pull: the source's playlist (http or"
        " https; a master playlist's highest-bandwidth variant is followed). Without it an"
        " HLS job takes pushes. Its address and every segment's are checked at each"
        " fetch: a private one is refused unless ONAIR_OUTBOUND_ALLOW_PRIVATE",
    )

    input_loss_threshold_ms: InputLossThresholdMs = Field(
        DEFAULT_INPUT_LOSS_THRESHOLD_MS,
        description="How long the input may send no media before it is lost, in ms"
        f" ({INPUT_LOSS_THRESHOLD_MS[0]}-{INPUT_LOSS_THRESHOLD_MS[1]}, default"
        f" {DEFAULT_INPUT_LOSS_THRESHOLD_MS}): a Standard job fails over to its other"
        " input; with none to take, the outputs carry the last picture, then a slate",
    )
    input_preference: InputPreference = Field(
        PRIMARY_PREFERENCE,
        description="Standard jobs: `primary` (default) goes back to the primary input"
        " once it has been clean for failbackAfterSeconds; `equal` stays on the backup"
        " after a failover, until the backup is lost in turn",
    )
    failback_after_seconds: FailbackAfterSeconds = Field(
        DEFAULT_FAILBACK_AFTER_SECONDS,
        description="Standard jobs with inputPreference `primary`: how long the primary"
        " must send without a loss before onair switches back to it, in seconds"
        f" ({FAILBACK_AFTER_SECONDS[0]}-{FAILBACK_AFTER_SECONDS[1]}, default"
        f" {DEFAULT_FAILBACK_AFTER_SECONDS:g})",
    )
    backup_source_url: str | None = Field(
        None,
        json_schema_extra={"format": "uri"},
        description="HLS pull jobs (serverType 2 with sourceUrl) of the Standard input"
        " class (inputClass 1): the backup source's playlist, pulled beside sourceUrl and"
        " checked like it (http or https, its address at each fetch)",
    )

    @field_validator("srt_passphrase")
    @classmethod
    def _srt_passphrase(cls, value: str | None) -> str | None:
        if value is None:
            return None
        low, high = SRT_PASSPHRASE_CHARS
        if not low <= len(value) <= high:
            raise refuse(f"must be {low} to {high} characters (SRT's rule)")
        if not all(" " <= c <= "~" for c in value):
            raise refuse("must be printable ASCII")
        return value

    @field_validator("source_url", "backup_source_url")
    @classmethod
    def _source_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        return _http_url(value)

    @model_validator(mode="after")
    def _for_its_protocol(self) -> LiveJobInput:
        if self.srt_passphrase is not None and self.server_type != SRT_SERVER_TYPE:
            raise refuse("only for SRT jobs (serverType 1)", at="input.srtPassphrase")
        if self.source_url is not None and self.server_type != HLS_SERVER_TYPE:
            raise refuse("only for HLS jobs (serverType 2)", at="input.sourceUrl")
        if self.backup_source_url is not None:
            if self.server_type != HLS_SERVER_TYPE or self.source_url is None:
                raise refuse(
                    "only for HLS pull jobs (serverType 2 with sourceUrl): other jobs"
                    " take their backup publisher at backupIngestUrl",
                    at="input.backupSourceUrl",
                )
            if self.input_class != STANDARD_INPUT_CLASS:
                raise refuse(
                    "only for jobs of the Standard input class (inputClass 1)",
                    at="input.backupSourceUrl",
                )
        return self


INPUT_FIELDS = tuple(field.alias or name for name, field in LiveJobInput.model_fields.items())


class NewLiveJob(RequestModel):
    """A new live job; the `input` fields may also be given at top level."""

    # The operator's bucket allow-list (ONAIR_S3_BUCKETS) comes in the validation
    # context (`allowed_buckets`, None for any bucket). Who owns the bucket and whether
    # the prefix is free are the store's to check, in the transaction that inserts the job.

    job_template_id: int = Field(description="1, 2 or 3 (see jobtemplates)")
    destination: KeyPath = Field(
        description="Relative key path in the bucket. With filePath it makes the job's"
        " prefix destination/filePath, which no other job in the bucket may equal,"
        " lie inside or enclose (400 naming input.filePath), and which is at most"
        f" {MAX_PREFIX_BYTES} bytes of UTF-8 (S3 keys are at most {MAX_KEY_BYTES}; onair"
        f" keeps {KEY_SUFFIX_MARGIN_BYTES} for the names it appends)"
    )
    description: str | None = Field(None, max_length=MAX_DESCRIPTION_CHARS)
    bucket: str = Field(
        json_schema_extra={"minLength": 3, "maxLength": 63},
        description="An S3 bucket name (the general purpose bucket naming rules)."
        " It belongs to the project whose job first used it: another project's job on"
        " it is a 400. With ONAIR_S3_BUCKETS set, only those buckets are accepted",
    )
    cdn_distribution: bool = False
    input: LiveJobInput

    @model_validator(mode="before")
    @classmethod
    def _input_at_top_level(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        nested = data.get("input")
        if nested is not None and not isinstance(nested, dict):
            return data  # refused as not an object
        flat = {name: data[name] for name in INPUT_FIELDS if name in data}
        return {**data, "input": {**flat, **(nested or {})}}

    @field_validator("job_template_id")
    @classmethod
    def _known_template(cls, value: int) -> int:
        try:
            get_template(value)
        except TemplateNotFound:
            raise refuse(f"unknown job template {value}") from None
        return value

    @field_validator("bucket")
    @classmethod
    def _bucket_name(cls, value: str, info: ValidationInfo) -> str:
        if not value.strip():
            raise refuse("is required and must not be empty")
        problem = bucket_name_problem(value)
        if problem is not None:
            raise refuse(f"not a valid S3 bucket name: {problem}")
        allowed = (info.context or {}).get("allowed_buckets")
        if allowed is not None and value not in allowed:
            raise refuse("not in ONAIR_S3_BUCKETS")
        return value

    viewer_token_required: bool = Field(
        False,
        description="WebSocket viewers (webSocketConnection) need a short-lived token"
        " from POST .../livejobs/{id}/tokens (purpose view); false: viewing is public, as"
        " the HLS is",
    )

    @field_validator("cdn_distribution", "viewer_token_required", mode="before")
    @classmethod
    def _null_is_false(cls, value: Any) -> Any:
        return False if value is None else value

    @field_validator("input")
    @classmethod
    def _prefix_fits(cls, value: LiveJobInput, info: ValidationInfo) -> LiveJobInput:
        """Every key under the job's prefix must fit in S3's 1024 bytes (MAX_PREFIX_BYTES).

        The field named is the one that makes the prefix too long: `destination` when
        it alone is, else `input.filePath`.
        """
        destination = info.data.get("destination")
        if destination is None:
            return value  # refused already
        size = len(object_prefix(destination, value.file_path).encode())
        if size > MAX_PREFIX_BYTES:
            alone = len(destination.encode()) > MAX_PREFIX_BYTES
            raise refuse(
                f"destination/filePath is {size} bytes of UTF-8; at most {MAX_PREFIX_BYTES}"
                f" (S3 keys are at most {MAX_KEY_BYTES} bytes, {KEY_SUFFIX_MARGIN_BYTES} are"
                " kept for the names onair appends)",
                at="destination" if alone else "input.filePath",
            )
        return value

    # The job's record takes the input's fields as its own.
    @property
    def file_path(self) -> str:
        return self.input.file_path

    @property
    def server_type(self) -> int:
        return self.input.server_type

    @property
    def input_class(self) -> int:
        return self.input.input_class

    @property
    def callback_url(self) -> str | None:
        return self.input.callback_url

    @property
    def srt_passphrase(self) -> str | None:
        return self.input.srt_passphrase

    @property
    def source_url(self) -> str | None:
        return self.input.source_url

    @property
    def input_loss_threshold_ms(self) -> int:
        return self.input.input_loss_threshold_ms

    @property
    def input_preference(self) -> str:
        return self.input.input_preference

    @property
    def failback_after_seconds(self) -> float:
        return self.input.failback_after_seconds

    @property
    def backup_source_url(self) -> str | None:
        return self.input.backup_source_url


class Toggle(RequestModel):
    """Online (accept the publisher) or offline; optionally the window to cut."""

    # The date-times are kept as `datetime.isoformat` writes them.

    online: bool
    start: DateTimeText = Field(None, alias="startDateTime")
    finish: DateTimeText = Field(None, alias="finishDateTime")

    @field_validator("finish")
    @classmethod
    def _after_start(cls, value: str | None, info: ValidationInfo) -> str | None:
        start = info.data.get("start")
        if value and start and datetime.fromisoformat(value) <= datetime.fromisoformat(start):
            raise refuse("must be later than startDateTime")
        return value


VISIBILITIES = {1: "Public", 2: "Private", 3: "Password Protected"}
DEFAULT_VISIBILITY = 1
MAX_TITLE_CHARS = 500


def _absent_if_zero(value: Any) -> Any:
    """The reference's example sends `0` for a millisecond it does not mean: absent."""
    return None if value == 0 and not isinstance(value, bool) else value


def _visibility(value: Any) -> Any:
    """`0` (the reference's example) and null mean the default, Public."""
    return (
        DEFAULT_VISIBILITY
        if value is None or (value == 0 and not isinstance(value, bool))
        else value
    )


Milliseconds = Annotated[
    Annotated[int, Field(ge=0, le=2**53)] | None,
    BeforeValidator(_absent_if_zero),
    Field(description="Offset in the live's recording, in ms (0 or null: absent)"),
]
Visibility = Annotated[
    int,
    BeforeValidator(_visibility),
    _one_of(VISIBILITIES),
    Field(
        json_schema_extra={"enum": [0, *VISIBILITIES]},
        description="1 Public (default; 0 and null mean it), 2 Private, 3 Password Protected",
    ),
]
MS_FIELDS = ("fromMilisecond", "toMilisecond")
TIME_FIELDS = ("dateTimeFrom", "dateTimeTo")


class CutRange(RequestModel):
    """A range of the live's recording, in ms from its start; both optional."""

    from_milisecond: Milliseconds = None
    to_milisecond: Milliseconds = None
    video_visibility_option_id: Visibility = DEFAULT_VISIBILITY

    @field_validator("to_milisecond")
    @classmethod
    def _after_from(cls, value: int | None, info: ValidationInfo) -> int | None:
        start = info.data.get("from_milisecond")
        if value is not None and start is not None and value <= start:
            raise refuse("must be greater than fromMilisecond")
        return value

    @property
    def has_ms(self) -> bool:
        return self.from_milisecond is not None or self.to_milisecond is not None


class StopAndCut(CutRange):
    """Stop the live and cut a range of it: milliseconds or date-times, not both; with
    neither, the cut window of the online toggle, else the whole live."""

    date_time_from: DateTimeText = None
    date_time_to: DateTimeText = None

    @field_validator("date_time_to")
    @classmethod
    def _later(cls, value: str | None, info: ValidationInfo) -> str | None:
        start = info.data.get("date_time_from")
        if value and start and datetime.fromisoformat(value) <= datetime.fromisoformat(start):
            raise refuse("must be later than dateTimeFrom")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> StopAndCut:
        times = self.date_time_from is not None or self.date_time_to is not None
        if self.has_ms and times:
            given = [
                name
                for name, value in zip(
                    (*MS_FIELDS, *TIME_FIELDS),
                    (
                        self.from_milisecond,
                        self.to_milisecond,
                        self.date_time_from,
                        self.date_time_to,
                    ),
                    strict=True,
                )
                if value is not None
            ]
            raise refuse(
                "give either the milliseconds (fromMilisecond, toMilisecond) or the"
                " date-times (dateTimeFrom, dateTimeTo), not both",
                at=", ".join(given),
            )
        return self

    @property
    def has_times(self) -> bool:
        return self.date_time_from is not None or self.date_time_to is not None


class CutAndPublish(CutRange):
    """Cut a range of the live while it goes on: its end must be recorded already."""

    title: str | None = Field(None, max_length=MAX_TITLE_CHARS)

    @field_validator("title")
    @classmethod
    def _clean_title(cls, value: str | None) -> str | None:
        if value is not None and _CONTROL.search(value):
            raise refuse("must not contain control characters")
        return value.strip() or None if value is not None else None


# -- query strings ----------------------------------------------------------------------


class QueryModel(RequestModel):
    """A query string: names matched case-insensitively (`pageIndex`, `PageIndex`), the
    first of repeated ones taken, an empty value as if absent."""

    @model_validator(mode="before")
    @classmethod
    def _by_name(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        found: dict[str, Any] = {}
        for key, value in data.items():
            for name in cls.model_fields:
                alias = cls.model_fields[name].alias or name
                if key.lower() == alias.lower() and value != "":
                    found.setdefault(alias, value)
        return found


class Paging(QueryModel):
    page_index: QueryInt = Field(1, ge=1, le=2**31 - 1, description="1-based page (default 1)")
    page_size: QueryInt = Field(
        DEFAULT_PAGE_SIZE,
        ge=1,
        le=MAX_PAGE_SIZE,
        description=f"Items per page (default {DEFAULT_PAGE_SIZE}, at most {MAX_PAGE_SIZE})",
    )

    @property
    def offset(self) -> int:
        return (self.page_index - 1) * self.page_size


class LiveJobsQuery(Paging):
    search: str | None = Field(
        None, description="Text contained in name, description, destination, filePath or bucket"
    )


class OutputsQuery(Paging):
    live_job_id: QueryId | None = Field(None, description="Only this live job's outputs")


class TimingsQuery(Paging):
    output_id: QueryId | None = Field(None, description="Only this output's timings")


class WebhookDeliveriesQuery(Paging):
    live_job_id: QueryId | None = Field(None, description="Only this live job's deliveries")


class VideosQuery(Paging):
    live_job_id: QueryId | None = Field(None, description="Only the videos of this live job")


class PlaylistQuery(QueryModel):
    token: str = Field(min_length=1, max_length=200, description="The playback token")
    variant: QueryInt | None = Field(
        None, ge=0, le=99, description="A variant of the master (its index); absent: the master"
    )


# -- errors -----------------------------------------------------------------------------

# pydantic's error types -> what onair answers, formatted with the error's context.
_MESSAGES = {
    "missing": "is required",
    "model_type": "must be a JSON object",
    "model_attributes_type": "must be a JSON object",
    "int_type": "must be an integer",
    "float_type": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "string_too_short": "must not be empty",
    "string_too_long": "at most {max_length} characters",
    "greater_than_equal": "must be at least {ge}",
    "less_than_equal": "must be at most {le}",
}

Model = TypeVar("Model", bound=BaseModel)


def field_errors(error: ValidationError) -> list[str]:
    """One message per bad field, `path: what is wrong`; the body itself is `body`."""
    messages: dict[str, str] = {}
    for item in error.errors():
        context = item.get("ctx", {})
        path = context.get("at") or ".".join(str(part) for part in item["loc"]) or "body"
        if item["type"] == "onair":
            text = context["message"]
        elif item["type"] in _MESSAGES:
            text = _MESSAGES[item["type"]].format(**context)
        else:
            text = item["msg"]
        messages.setdefault(path, f"{path}: {text}")
    return list(messages.values())


def parse(model: type[Model], data: Any, **context: Any) -> Model:
    """`data` (a decoded JSON body, a query string) as `model`; else ValidationFailed."""
    try:
        return model.model_validate(data, context=context)
    except ValidationError as error:
        raise ValidationFailed(field_errors(error)) from None


# -- restreams --------------------------------------------------------------------------

RESTREAM_SCHEMES = frozenset({"rtmp", "rtmps"})
MAX_STREAM_URL_CHARS = 1024
MAX_STREAM_KEY_CHARS = 512
MAX_VIDEO_REF_CHARS = 64  # a UUID (36) or an integer id


def _invisible(value: str) -> bool:
    """Whether `value` has whitespace, a control or format character (`\\u200b`)."""
    return any(unicodedata.category(c)[0] in "CZ" for c in value)


def stream_url_problem(value: str, policy: OutboundPolicy) -> str | None:
    """Why `value` is not a restream's destination, None if it is one: an rtmp:// or
    rtmps:// URL with a host and an application path, no userinfo, no query or
    fragment, a port 1-65535 if given, a host the outbound guard could open. A host that
    is an IP literal is checked against `policy` now; a name is resolved and checked
    when the restream connects (the runtime, through `media.outbound`)."""
    shape = "must be an rtmp:// or rtmps:// URL with a host and an application path"
    if _invisible(value) or "\\" in value:
        return "must not contain whitespace, control characters or a backslash"
    try:
        parts = urlsplit(value)
        host, port = parts.hostname, parts.port
    except ValueError:
        return f"{shape}, a port from 1 to 65535 if one is given"
    if parts.scheme.lower() not in RESTREAM_SCHEMES:
        return f"{shape} (e.g. rtmp://a.rtmp.youtube.com/live2)"
    if "@" in parts.netloc:
        return "must not carry a user or password: the stream key goes in streamKey"
    if not host:
        return f"{shape}: it has no host"
    if port == 0:
        return "its port must be from 1 to 65535"
    if not parts.path.strip("/"):
        return f"{shape}: it has no application path (rtmp://host/app)"
    if parts.query or parts.fragment or value.endswith(("?", "#")):
        return "must not have a query or a fragment: what follows the application is streamKey"
    try:
        check_url(value, RESTREAM_SCHEMES)
    except OutboundRefused as exc:
        return f"not a URL onair can open: {exc.reason}"
    literal = ip_literal(host)
    if literal is not None:
        reason = policy.refusal(literal)
        if reason is not None:
            always = address_refused(literal, allow_private=True) is not None
            return f"its host {literal} is {reason}: refused" + (
                "" if always else f" unless {ALLOW_PRIVATE_ENV}=true"
            )
    return None


class NewRestream(RequestModel):
    """A restream of a live video: its media forwarded to `streamUrl` + `streamKey`."""

    # The outbound policy (`Settings.outbound`) comes in the validation context
    # (`outbound`), for the check of a host given as an IP address.

    video_id: str = Field(
        min_length=1,
        max_length=MAX_VIDEO_REF_CHARS,
        description="The live video's public id: its live job's name (UUID); its integer"
        " id (as a string) is accepted too",
    )
    title: str = Field(min_length=1, max_length=MAX_TITLE_CHARS, description="Its title")
    stream_url: str = Field(
        min_length=1,
        max_length=MAX_STREAM_URL_CHARS,
        json_schema_extra={"format": "uri"},
        description="The destination's server: an rtmp:// or rtmps:// URL with a host and"
        " an application path (rtmp://a.rtmp.youtube.com/live2, rtmp://live.twitch.tv/app,"
        " rtmps://live-api-s.facebook.com:443/rtmp/), no user or password, no query. A host"
        " given as an IP address that is loopback, private or link-local is refused here"
        f" unless {ALLOW_PRIVATE_ENV}=true; a host name is resolved and checked each time"
        " the restream connects (a name may change what it resolves to)",
    )
    stream_key: str = Field(
        min_length=1,
        max_length=MAX_STREAM_KEY_CHARS,
        description="The destination's stream key (a secret: never logged); no whitespace"
        " or control characters",
    )
    status: bool = Field(description="Enabled: forwarded whenever the live is on")

    @field_validator("title")
    @classmethod
    def _clean_title(cls, value: str) -> str:
        if _CONTROL.search(value):
            raise refuse("must not contain control characters")
        if not value.strip():
            raise refuse("must not be empty")
        return value.strip()

    @field_validator("video_id")
    @classmethod
    def _video_ref(cls, value: str) -> str:
        if not value.strip() or _invisible(value):
            raise refuse("must be the live video's id (its live job's name, a UUID)")
        return value

    @field_validator("stream_url")
    @classmethod
    def _stream_url(cls, value: str, info: ValidationInfo) -> str:
        policy = (info.context or {}).get("outbound") or OutboundPolicy()
        problem = stream_url_problem(value, policy)
        if problem is not None:
            raise refuse(problem)
        return value

    @field_validator("stream_key")
    @classmethod
    def _stream_key(cls, value: str) -> str:
        # The message never repeats the key: messages are answered, and may be logged.
        if _invisible(value):
            raise refuse("must not contain whitespace or control characters")
        return value
