"""Time spans given on the command line and to the JSON route: `30m`, `1h`, `2d` or an ISO time."""

import datetime
import re
import time

from core import errors

DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
SINCE_HELP = "a duration such as 30m, 1h, 2d, or an ISO time such as 2026-11-22T10:00:00Z"


class SinceError(errors.UserError):
    """A time span that is neither a duration nor an ISO time."""


def parse_since(text: str, now: float | None = None) -> float:
    """`30m`, `1h`, `2d` before now, or an ISO time (UTC unless it names a zone) -> unix time."""
    now = time.time() if now is None else now
    match = DURATION.match(text.strip())
    if match:
        return now - float(match[1]) * UNIT_SECONDS[match[2]]
    try:
        moment = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise SinceError(f"since must be {SINCE_HELP} (received {text!r})") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()
