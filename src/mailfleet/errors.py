"""The one error type of the service layer. The API turns it into the JSON error
shape in one place (api/app.py), the SMTP servers into reply codes in one place."""

from __future__ import annotations


class MailfleetError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


class BadInput(MailfleetError):
    status = 400
    code = "bad_request"


class Unauthorized(MailfleetError):
    status = 401
    code = "unauthorized"


class Forbidden(MailfleetError):
    """Understood and allowed to others, not to this caller now (HTTP 403):
    an account whose sending is held for review."""

    status = 403
    code = "forbidden"


class NotFound(MailfleetError):
    status = 404
    code = "not_found"


class ContentUnavailable(NotFound):
    """The message exists but the stored bytes asked for (its source, an
    attachment) are lost: gone for good, so 404 with a code of its own, never
    503 (retrying cannot bring them back)."""

    code = "content_unavailable"


class Conflict(MailfleetError):
    status = 409
    code = "conflict"


class TooLarge(MailfleetError):
    status = 413
    code = "too_large"


class Invalid(MailfleetError):
    """Well-formed but not acceptable (HTTP 422)."""

    status = 422
    code = "invalid"


class RateLimited(MailfleetError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class TooManyAttempts(RateLimited):
    """Logins refused for a while after too many failures (accounts/throttle.py)."""

    code = "too_many_attempts"


class Unavailable(MailfleetError):
    """A backend is down: try later (HTTP 503, SMTP 451)."""

    status = 503
    code = "unavailable"
