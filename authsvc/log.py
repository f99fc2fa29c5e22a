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

_SECRET_PATTERNS = (
    re.compile(r"\b(asrt|asc|asac)_[A-Za-z0-9_-]{20,}"),
    re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"),
)
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def redact(text: str) -> str:
    """`text` with anything that looks like a secret replaced by [redacted]."""
    text = _SECRET_PATTERNS[0].sub(lambda m: m.group(1) + "_[redacted]", text)
    text = _SECRET_PATTERNS[1].sub("[redacted-jwt]", text)
    return _SECRET_PATTERNS[2].sub(lambda m: m.group(1) + "[redacted]", text)


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
