"""The domain exceptions: the API maps each to one HTTP status; an ingest server tells
an `AdmissionRefused` to its publisher (as `ingest.session.PublishRefused`)."""

from __future__ import annotations

from http import HTTPStatus
from typing import ClassVar


class OnairError(Exception):
    """Base of onair's domain errors."""


class ValidationFailed(OnairError):
    """A request is malformed; `errors` has one message per bad field (400)."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


class BucketOwned(ValidationFailed):
    """The bucket of a new job belongs to another project (400 naming `bucket`).

    Never says which project: that is the other tenant's business.
    """

    def __init__(self) -> None:
        super().__init__(["bucket: owned by another project"])


class PrefixTaken(ValidationFailed):
    """A new job's output prefix equals, lies inside or encloses another job's (400)."""

    def __init__(self) -> None:
        super().__init__(
            [
                "input.filePath: destination/filePath overlaps the output of another live job"
                " in this bucket (the same place, inside it, or enclosing it)"
            ]
        )


class JobNotFound(OnairError):
    """No live job with this id/name/key in this project (404).

    The message is what the API answers. It may name the id or name asked for, never
    a stream key: a key is a secret, and messages end up in logs.
    """

    def __init__(self, ref: str | None = None) -> None:
        super().__init__("live job not found" + (f": {ref}" if ref is not None else ""))


class Unauthorized(OnairError):
    """No API key, or an unknown one (401)."""


class Forbidden(OnairError):
    """A valid key used on another project's resources (403)."""


class Unavailable(OnairError):
    """A backend (storage) does not answer (503)."""


class AdmissionRefused(OnairError):
    """A publisher is not admitted to a live job (at publish, before any media).

    `description` is what the publisher is told (never a stream key); `status` says what
    kind of refusal it is, as an HTTP status (`ingest.session.PublishRefused.status`:
    each ingest server maps it to its own wire). `detail`, when set, is what the job's
    `PublisherRefused` timing adds about it (the numbers behind a refusal).
    """

    status: ClassVar[HTTPStatus] = HTTPStatus.FORBIDDEN
    reason: ClassVar[str] = "refused"  # the metric's label (`onair_admissions_refused`)

    def __init__(self, description: str, detail: str | None = None) -> None:
        super().__init__(description)
        self.description = description
        self.detail = detail


class UnknownStreamKey(AdmissionRefused):
    """No job has this stream key, or the key is published under another application
    (404: the same answer as the online toggle's for an unknown key)."""

    status = HTTPStatus.NOT_FOUND
    reason = "unknown_key"


class JobOffline(AdmissionRefused):
    """The job is offline: put it online first (403)."""

    reason = "offline"


class WrongIngestProtocol(AdmissionRefused):
    """The job's `serverType` is another protocol than the publisher's (403)."""

    reason = "wrong_protocol"


class AlreadyPublishing(AdmissionRefused):
    """Another publisher is on the job's stream key (409)."""

    status = HTTPStatus.CONFLICT
    reason = "already_publishing"


class LeaseHeld(AdmissionRefused):
    """Another live host holds the job's lease: its pipeline runs there (409)."""

    status = HTTPStatus.CONFLICT
    reason = "lease_held"

    def __init__(self, description: str, detail: str | None = None, holder: int = 0) -> None:
        super().__init__(description, detail)
        self.holder = holder  # the encoder id of the host that holds it


class RelayRefused(AdmissionRefused):
    """A relay (another host's, of a Standard job's input) without this host's token."""

    reason = "relay_refused"


class HostAtCapacity(AdmissionRefused):
    """A new live would take the host past `ONAIR_CAPACITY` (503: try another host)."""

    status = HTTPStatus.SERVICE_UNAVAILABLE
    reason = "at_capacity"


class HostDraining(AdmissionRefused):
    """The host is stopping (SIGTERM): it admits no publisher (503: try another host)."""

    status = HTTPStatus.SERVICE_UNAVAILABLE
    reason = "draining"


class StillFinishing(AdmissionRefused):
    """The job's previous pipeline is still publishing its last segments, or the spool
    a stopped service left (503: try again later)."""

    status = HTTPStatus.SERVICE_UNAVAILABLE
    reason = "still_finishing"
