"""Structured logs: one JSON object per line on stderr, with secrets scrubbed on the way out.

Redaction is the last line of defence, not the first: code never logs a token or secret on purpose.
Anything shaped like one of our opaque secrets, a JWT, or a bearer header is replaced before writing.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

from authsvc.clock import Clock

#: What looks like a secret, each with what replaces it, applied in this order.
_REDACTIONS = (
    (re.compile(r"\b(asrt|asc|asac)_[A-Za-z0-9_-]{20,}"), r"\g<1>_[redacted]"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), "[redacted-jwt]"),
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\g<1>[redacted]"),
    # A URL's password (AUTHSVC_DATABASE_URL's, in a driver's error), and libpq's key=value form.
    (re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^\s:/?#@]*:)[^\s@]+@"), r"\g<1>[redacted]@"),
    (re.compile(r"(?i)(\bpassword=)[^\s&;'\"]+"), r"\g<1>[redacted]"),
)
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def redact(text: str) -> str:
    """`text` with anything that looks like a secret replaced by [redacted]."""
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


class JsonFormatter(logging.Formatter):
    """time, level, logger, message, the record's `extra` fields, and the traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and key != "color_message":
                entry[key] = value
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry, default=str))


def configure(level: str = "INFO") -> None:
    """Send every log record to stderr as JSON at `level`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("sqlalchemy").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


#: How many kinds of failure (descriptions, exception types) one run of them logs in full; past
#: that, they are counted in the line per `every` seconds only.
MAX_KINDS = 8


class RepeatedFailure:
    """A failure that a loop meets at every try, logged without flooding the log: the first of
    each kind in full, with its traceback when it was unexpected; then one line per `every`
    seconds while they last, with the number of tries that failed; and one line when a try goes
    through again.

    Call `failed` from the `except` block that caught the failure, `succeeded` after a try that
    went through."""

    def __init__(
        self, logger: logging.Logger, what: str, clock: Clock, *, every: float = 60.0
    ) -> None:
        self._logger = logger
        self._what = what
        self._clock = clock
        self._every = every
        self._since: float | None = None  # when the failures began; None while all is well
        self._reported = 0.0
        self._failures = 0
        self._kinds: set[tuple[bool, str]] = set()  # those logged in full since `_since`

    def failed(self, description: str | None = None) -> None:
        """An expected failure (an outage) has a `description`; with None, the exception being
        handled is a bug, logged with its traceback the first time its type is met."""
        now = self._clock.now()
        self._failures += 1
        if self._since is None:
            self._since = self._reported = now
        # The first of each kind in full, not only the first of all: a bug that shows up during
        # an outage would otherwise be one "the last:" line at most, without its traceback.
        kind = (True, description) if description is not None else (False, _exception_kind())
        if kind not in self._kinds and len(self._kinds) < MAX_KINDS:
            self._kinds.add(kind)
            if description is None:
                self._logger.exception("%s failed; retrying", self._what)
            else:
                self._logger.warning("%s: %s; retrying", self._what, description)
            return
        if now - self._reported < self._every:
            return
        self._reported = now
        reason = description if description is not None else _last_exception()
        self._logger.warning(
            "%s still failing: %d tries in %.0f s; the last: %s; retrying",
            self._what,
            self._failures,
            now - self._since,
            reason,
        )

    def succeeded(self) -> None:
        if self._since is None:
            return
        # WARNING, not INFO: a log kept at WARNING shows the end of the failures it showed.
        self._logger.warning(
            "%s works again, after %d failed tries in %.0f s",
            self._what,
            self._failures,
            self._clock.now() - self._since,
        )
        self._since = None
        self._failures = 0
        self._kinds.clear()


def _exception_kind() -> str:
    exc = sys.exc_info()[1]
    return "unknown" if exc is None else f"{type(exc).__module__}.{type(exc).__qualname__}"


def _last_exception() -> str:
    exc = sys.exc_info()[1]
    # Redacted before it is cut: a secret cut short no longer looks like one on the way out.
    return "unknown" if exc is None else redact(f"{type(exc).__name__}: {exc}")[:200]
