"""What the control API answers: the envelope and every result, as models.

snake_case in Python, the reference's camelCase on the wire (`to_camel`, or an alias
where the reference spells it otherwise: `playBackPathURL`). `api.present` builds them
from the records and `api.present.envelope` sends them; the OpenAPI document's response
schemas are theirs (`api.openapi`).
"""

from __future__ import annotations

from typing import Annotated, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from ingest.health import HealthState, ReasonType

from .status import LiveStatus
from .webhooks.events import EVENT_TYPES as WEBHOOK_EVENT_TYPES

DateTime = Annotated[str, Field(json_schema_extra={"format": "date-time"})]
Uuid = Annotated[str, Field(json_schema_extra={"format": "uuid"})]
LiveStatusName = Annotated[str, Field(json_schema_extra={"enum": [s.label for s in LiveStatus]})]
HealthStatusName = Annotated[
    str,
    Field(
        description="The input's health: Unknown (no input received yet in this live),"
        " Starving (arriving too slowly, or stopped), Healthy",
        json_schema_extra={"enum": [s.value for s in HealthState]},
    ),
]


class ResponseModel(BaseModel):
    """A result's shape: built by field name, sent by alias (camelCase)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        json_schema_serialization_defaults_required=True,
    )


class PageInfo(ResponseModel):
    """`resultInfo` of a paged list."""

    total_count: int
    page_index: int
    page_size: int
    total_pages: int
    has_next_page: bool
    has_previous_page: bool


class Statistics(ResponseModel):
    """The job's input as measured (zeros before any media); rates in kbit/s."""

    width: int
    height: int
    framerate: int
    video_data_rate: int
    video_codec_id: int
    audio_data_rate: int
    audio_sample_rate: int
    audio_sample_size: int
    audio_codec_id: int
    audio_channels: int
    stereo: bool
    encoder: str


class RenditionFigures(ResponseModel):
    """A rendition of a running live: as encoded (size, bitrate and fps over its last
    segments, frames) and as published (null until its writer has it)."""

    name: str
    width: int
    height: int
    bitrate_bps: int
    fps: float
    frames_encoded: int
    dropped_frames: int
    segments: int | None = None
    seconds: float | None = None
    peak_bandwidth: int | None = None
    average_bandwidth: int | None = None
    pending_uploads: int | None = None


class HealthReasonView(ResponseModel):
    """What is wrong with the input now (`encoderOverloaded`: onair's own encoder is
    behind, the input is fine; it never makes the health Starving)."""

    type: str = Field(json_schema_extra={"enum": [r.value for r in ReasonType]})
    description: str


class TransportFigures(ResponseModel):
    """SRT's own figures of the publisher's connection, since it connected."""

    rtt_ms: float = Field(description="Round-trip time (smoothed), ms")
    packets_received: int
    packets_lost: int = Field(description="Never arrived the first time")
    packets_retransmitted: int = Field(description="Sent again by the publisher")
    packets_dropped: int = Field(description="Too late for the latency: given up (lost media)")
    bandwidth_mbps: float = Field(description="The link's estimated capacity, Mbit/s")


class InputFigures(ResponseModel):
    """One input of the job (`primary`; a Standard job's `backup` too), as the program
    that the ladder encodes sees it now."""

    name: str = Field(json_schema_extra={"enum": ["primary", "backup"]})
    active: bool = Field(description="The ladder encodes this input now")
    connected: bool = Field(description="A publisher session is open on it")
    sending: bool = Field(description="Media arrived within input.inputLossThresholdMs")
    last_media_seconds_ago: float | None = Field(
        description="Since its last media arrived, s; null before any"
    )
    width: int
    height: int
    framerate: int


class JobStatistics(Statistics):
    """A row of `stats`: the active input, the frames it dropped, its health, each
    rendition's figures, and every input of the job."""

    dropped_frames: int
    health_status_name: HealthStatusName
    health_reasons: list[HealthReasonView]
    outputs: list[RenditionFigures]
    transport: TransportFigures | None = Field(
        None, description="SRT publishers: the connection's own figures; null otherwise"
    )
    inputs: list[InputFigures] = Field(
        default_factory=list, description="Each input of the running live; [] without one"
    )
    fill: Literal["repeat", "slate"] | None = Field(
        None,
        description="While no input is there: the last picture repeated, then the slate"
        " (ONAIR_INPUT_LOSS_REPEAT_MS); null otherwise",
    )
    fill_frames: int = Field(
        0, description="Frames of the input-loss fill in this live so far (they are recorded)"
    )


class LiveStatusResult(ResponseModel):
    """A live video's status and its input's health, computed at the request."""

    status_name: LiveStatusName
    health_status_name: HealthStatusName
    health_reasons: list[HealthReasonView] = Field(
        description="Why the health is what it is now (empty when nothing is wrong)"
    )


class Option(ResponseModel):
    id: int
    value: str
    enabled: bool


class LiveJobInputView(ResponseModel):
    file_path: str
    server_type: Literal[0, 1, 2]
    server_type_options: list[Option]
    input_class: Literal[0, 1]
    input_class_options: list[Option]
    callback_url: str | None
    srt_passphrase: str | None = Field(
        None,
        description="SRT jobs: whether a passphrase is set, as its first two characters"
        " and an ellipsis (never in full); null without one",
    )
    source_url: str | None = Field(
        None, description="HLS pull jobs: the source playlist onair fetches; null otherwise"
    )
    input_loss_threshold_ms: int = Field(
        description="How long the input may send no media before it is lost, in ms: a"
        " Standard job fails over to its other input; with none to take, the outputs"
        " carry the last picture (ONAIR_INPUT_LOSS_REPEAT_MS), then a slate"
    )
    input_preference: Literal["primary", "equal"] = Field(
        description="Standard jobs: primary (go back to the primary once it has been"
        " clean for failbackAfterSeconds) or equal (stay on the backup after a failover)"
    )
    failback_after_seconds: float = Field(
        description="Standard jobs preferring the primary: how long it must send without"
        " a loss before onair switches back to it, in seconds"
    )
    backup_source_url: str | None = Field(
        description="Standard HLS pull jobs: the backup source playlist onair fetches"
        " beside sourceUrl; null otherwise"
    )


class LiveJobSummary(ResponseModel):
    """A row of the live-jobs list: status by name."""

    id: int
    name: Uuid
    key: Uuid
    status: LiveStatusName
    description: str | None
    file_path: str
    insert_date: DateTime
    start_date_time: DateTime | None
    end_date_time: DateTime | None


class LiveJob(ResponseModel):
    """A live job in full: status by number (1 Offline, 2 Processing, 3 Live, 4 Interrupted)."""

    id: int
    name: Uuid
    key: Uuid
    destination: str
    description: str | None
    project_id: Uuid
    status: Literal[1, 2, 3, 4]
    online: bool
    insert_date: DateTime
    start_date_time: DateTime | None
    end_date_time: DateTime | None
    job_template_id: int
    argo_resource_name: str | None = Field(
        description="The host (pod) running the job's live: its ONAIR_HOST_NAME; null when"
        " none runs it"
    )
    resource_name: str
    bucket: str
    cdn_distribution: bool
    viewer_token_required: bool = Field(
        False, description="WebSocket viewers need a token (POST .../livejobs/{id}/tokens)"
    )
    rtmp_server: str | None = Field(
        description="Where the publisher connects, without the key: for RTMP jobs"
        " rtmp://{host}:{port}/live/ (OBS 'Server', with `key` as its 'Stream Key'); for"
        " SRT jobs srt://{host}:{port}; for HLS push jobs http://{host}:{port}/hls/; null"
        " for HLS pull jobs (onair fetches input.sourceUrl). It is the primary"
        " publisher's: a Standard job's backup publisher uses backupIngestUrl"
    )
    ingest_url: str | None = Field(
        description="The complete URL with the key, for ffmpeg and for OBS's SRT"
        " 'Server' field: rtmp://{host}:{port}/live/{key},"
        " srt://{host}:{port}?streamid=#!::r=live/{key},m=publish or"
        " http://{host}:{port}/hls/{key}/index.m3u8 (the primary publisher's); null for"
        " HLS pull jobs"
    )
    backup_ingest_url: str | None = Field(
        description="Standard input class (inputClass 1): where the backup publisher"
        " sends, with the key: rtmp://{host}:{port}/backup/{key} (OBS: Server"
        " rtmp://{host}:{port}/backup/, Stream Key `key`),"
        " srt://{host}:{port}?streamid=#!::r=backup/{key},m=publish or"
        " http://{host}:{port}/hls-backup/{key}/index.m3u8. onair takes the backup when"
        " the primary sends no media for input.inputLossThresholdMs (and back, see"
        " input.inputPreference). Null for Single jobs and for HLS pull jobs (their"
        " backup is input.backupSourceUrl)"
    )
    web_socket_connection: str = Field(
        description="Where a browser watches the live: ws(s)://{public host}/websocketplay/"
        "{name}, MPEG-TS over WebSocket for mpegts.js (?rendition=source or a rendition's"
        " name; ?token= when viewerTokenRequired). The job's public name, never its stream"
        " key (the key publishes). wss behind TLS (ONAIR_PUBLIC_URL)"
    )
    cdn: str | None = Field(
        description="{ONAIR_CDN_BASE_URL}/{bucket}/{destination}/{filePath}/master.m3u8:"
        " a CDN in front of the S3 public URL, its origin path the bucket path; null"
        " without cdnDistribution or a configured CDN. Path segments are percent-encoded"
    )
    storage_master_file: str = Field(
        description="{S3 public URL}/{bucket}/{destination}/{filePath}/master.m3u8,"
        " path segments percent-encoded"
    )
    storage_dvr_master_file: str = Field(
        description="{S3 public URL}/{bucket}/{destination}/{filePath}/dvr.m3u8: the DVR"
        " master, a sliding window of ONAIR_DVR_WINDOW_SECONDS over the recording"
    )
    output_manifests: dict[str, str] = Field(
        description="Rendition name -> its live playlist (.../{name}/index.m3u8);"
        " renditions skipped for this source are not listed"
    )
    input: LiveJobInputView
    statistics: Statistics


class ToggleResult(ResponseModel):
    online: bool
    play_back_path_url: str = Field(alias="playBackPathURL")


class Output(ResponseModel):
    """A rendition of a live job."""

    live_job_id: int
    output_id: int
    name: str
    progress: int
    status: int = Field(description="The live status (1..4) of the job")
    lock_key: str | None
    counter: int
    encoder_id: int | None
    skipped: bool = Field(
        description="The pipeline does not encode this rendition (the source is smaller)"
    )
    skip_reason: str | None = Field(
        description="Why it is skipped (e.g. 'source is 1280x720'); null if not skipped"
    )


class Timing(ResponseModel):
    """A status change or an event of a live job."""

    status: str
    child_status: str
    start_date_time: DateTime
    message_comment: str
    output_id: int | None


class JobTemplateRow(ResponseModel):
    id: int
    name: str
    job_template_type: str
    category: str
    description: str


class WebhookAttempt(ResponseModel):
    """One attempt at a webhook delivery."""

    at: DateTime
    status_code: int | None = Field(description="The receiver's HTTP status; null if none")
    error: str | None = Field(
        description="What went wrong (a non-2xx status, a timeout, a refused address);"
        " null for a delivered attempt"
    )
    duration_ms: int


class WebhookDelivery(ResponseModel):
    """A webhook event and its delivery to the job's callbackUrl."""

    id: str = Field(description="The webhook-id header: the same on every attempt (dedupe by it)")
    live_job_id: int
    type: str = Field(json_schema_extra={"enum": list(WEBHOOK_EVENT_TYPES)})
    state: Literal["pending", "delivered", "failed"] = Field(
        description="pending (not delivered yet), delivered (a 2xx answer), failed (given"
        " up: still failing when the event was ONAIR_WEBHOOK_RETRY_HOURS old)"
    )
    attempts: int
    created_at: DateTime
    next_attempt_at: DateTime | None = Field(description="Null once delivered or given up")
    delivered_at: DateTime | None
    last_status_code: int | None
    last_error: str | None
    attempt_log: list[WebhookAttempt] = Field(description="The last attempts, oldest first")


VideoStatusName = Literal["Processing", "Ready", "Failed"]


class VideoPublicId(ResponseModel):
    """stop-and-cut's result: the video being cut (GET it for its status)."""

    video_public_id: Uuid


class PublishedCut(ResponseModel):
    """cut-and-publish's result: the video being cut and where its MP4 will be."""

    video_public_id: Uuid
    name: str
    original_file: str = Field(
        description="The MP4 (the top rendition): its storage URL, a presigned one for a"
        " private video (valid ONAIR_PRESIGN_SECONDS); readable once the video is Ready"
    )


class Video(ResponseModel):
    """A video cut from a live."""

    video_public_id: Uuid
    name: str
    title: str | None
    status: VideoStatusName = Field(
        description="Processing (being cut), Ready (every object written), Failed (see error)"
    )
    error: str | None = Field(description="Why it failed; null unless Failed")
    duration: int | None = Field(description="In ms; null until Ready")
    visibility: Literal["Public", "Private", "Password Protected"]
    video_visibility_option_id: Literal[1, 2, 3]
    playback_url: str | None = Field(
        description="The HLS master: its storage URL when Public; for a Private or Password"
        " Protected one, onair's playlist URL with a signed token (valid"
        " ONAIR_PLAYBACK_TOKEN_SECONDS) whose segments are presigned at each request."
        " Null until Ready"
    )
    original_file: str | None = Field(
        description="The MP4: its storage URL, or a presigned URL (valid"
        " ONAIR_PRESIGN_SECONDS) when not Public. Null until Ready"
    )
    live_video_id: Uuid = Field(description="The live job's name")
    live_job_id: int
    from_milisecond: int | None = Field(description="Null: from the live's start, until cut")
    to_milisecond: int | None = Field(description="Null: to the live's end, until cut")
    created_date_time: DateTime
    finished_date_time: DateTime | None


class HealthResult(ResponseModel):
    """Which backend answers: the store (database) and the storage (S3)."""

    store: bool
    storage: bool


ResultT = TypeVar("ResultT")


class Envelope(ResponseModel, Generic[ResultT]):
    """Every response's body, errors included (then `result` is null)."""

    success: bool
    errors: list[str]
    messages: list[str]
    result: ResultT
    result_info: None = None
    status_code: int


class Paged(ResponseModel, Generic[ResultT]):
    """A paged list's body: its page in `resultInfo`."""

    success: bool
    errors: list[str]
    messages: list[str]
    result: list[ResultT]
    result_info: PageInfo
    status_code: int


class Failure(ResponseModel):
    """An error's body: what is wrong in `errors` (one message per bad field for a 400)."""

    success: Literal[False]
    errors: list[str] = Field(min_length=1)
    messages: list[str]
    result: None
    result_info: None
    status_code: int


RestreamStateName = Literal["idle", "connecting", "forwarding", "reconnecting", "errored"]


class Restream(ResponseModel):
    """A restream of a live video (the reference's fields), and what its forwarding
    does now (the rest: idle with zeros while nothing is forwarded)."""

    id: int = Field(description="The restream's id")
    title: str
    stream_key: str = Field(description="The destination's stream key")
    stream_url: str = Field(description="The destination's rtmp:// or rtmps:// URL")
    status: bool = Field(description="Enabled: forwarded whenever the live is on")
    video_id: Uuid = Field(description="The live video's public id: its live job's name")
    state: RestreamStateName = Field(
        description="Its forwarding now: idle (not forwarding: disabled, or the live is"
        " not on), connecting, forwarding, reconnecting (the connection dropped, trying"
        " again), errored (given up for now: see lastError)"
    )
    last_error: str | None = Field(
        description="Why the last connection failed or dropped (never the stream key); null if none"
    )
    connected_since: DateTime | None = Field(
        description="When the current connection was made; null unless forwarding"
    )
    reconnects: int = Field(description="Connections made again in this live, after a drop")
    bytes_sent: int = Field(description="Bytes sent to the destination in this live")
    bitrate: int = Field(description="What is sent now, in bits/s")
    dropped_packets: int = Field(
        description="Packets not sent because the destination was too slow"
    )
    forwarding: str | None = Field(
        None,
        description="What is sent: `source` (the publisher's packets), or `rendition"
        " {name}` (the ladder's top rendition, when the source is not H.264/AAC, e.g."
        " HEVC over enhanced RTMP); null while not connected",
    )


class RestreamToggled(ResponseModel):
    """A restream's status after the toggle."""

    id: int = Field(description="The restream's id")
    status: bool = Field(description="Enabled: forwarded whenever the live is on")
