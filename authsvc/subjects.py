"""What a subject (the user or service a family belongs to) and a device id may be.

Both come from the caller and reach the tokens (`sub`) and the database. A control character has no
place in either: a NUL would cut `sub` short for a consumer that reads it as a C string ("alice" for
"alice\\0x"), and PostgreSQL cannot store one where SQLite would.
"""

from __future__ import annotations

import re

from authsvc.errors import InvalidRequest

MAX_SUBJECT = 200
MAX_DEVICE_ID = 200
#: Unicode's control characters: C0, DEL and C1.
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def check_subject(subject: str, device_id: str = "") -> None:
    """For a new family: InvalidRequest unless `subject` is 1 to `MAX_SUBJECT` characters and
    `device_id` at most `MAX_DEVICE_ID`, neither with a control character."""
    check_named_subject(subject)
    if len(device_id) > MAX_DEVICE_ID:
        raise InvalidRequest(f"device_id is at most {MAX_DEVICE_ID} characters")
    if _CONTROL_CHARACTER.search(subject) or _CONTROL_CHARACTER.search(device_id):
        raise InvalidRequest("subject and device_id may not contain control characters")


def check_named_subject(subject: str) -> None:
    """For a subject a call looks up or revokes: 1 to `MAX_SUBJECT` characters, no NUL (which
    no database of ours holds). Other control characters are let through: a subject stored
    before `check_subject` refused them must still be listed and logged out."""
    if not subject or len(subject) > MAX_SUBJECT or "\x00" in subject:
        raise InvalidRequest(f"subject is required (at most {MAX_SUBJECT} characters, no NUL)")
