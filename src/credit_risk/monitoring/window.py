"""The window of the monitoring commands (``--since``, ``--until``): whole UTC days or moments.

A bound is a day (``YYYY-MM-DD``: the whole day, UTC) or a moment (an ISO date and time, UTC
when it has no zone). Records are kept by comparing their timestamps, ISO texts in UTC as the
service writes them, with the bounds as ISO texts: a record is in the window when its
timestamp is not before ``since`` and its first ``len(until)`` characters are not after
``until`` (so a day ends with its last moment).
"""

from datetime import UTC, date, datetime

OPEN_UNTIL = "~"
"""Sorts after every timestamp."""


def day_or_moment(text: str) -> date | datetime:
    """A day (``YYYY-MM-DD``), or a moment in UTC (a time without a zone is UTC); ``ValueError``
    otherwise."""
    if len(text) == 10:
        return date.fromisoformat(text)
    moment = datetime.fromisoformat(text)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def bound_texts(since: date | None, until: date | None) -> tuple[str, str]:
    """The bounds as the texts :func:`within` compares with; an open bound excludes nothing."""
    return (since.isoformat() if since else "", until.isoformat() if until else OPEN_UNTIL)


def within(timestamp: str, since: str, until: str) -> bool:
    """Whether a record's ``timestamp`` is in the window of the bound texts ``since``, ``until``."""
    return since <= timestamp and timestamp[: len(until)] <= until


def is_reversed(since: date | None, until: date | None) -> bool:
    """Whether ``until`` is before ``since`` (a day ``until`` lasts to the day's end)."""
    if since is None or until is None:
        return False
    first, last = bound_texts(since, until)
    return first[: len(last)] > last
