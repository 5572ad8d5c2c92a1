"""The domain exceptions; the API maps each to one HTTP status."""

from __future__ import annotations


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
