"""uvicorn's log lines (its own formats: `INFO: 127.0.0.1:5050 - "POST ..." 200`) set up on its
own loggers only.

uvicorn sets them up with logging.config.dictConfig, which first closes every handler already in
the process: a notebook's, or absl's, which closes the stream it was given when that is no longer
sys.stderr. A server started inside a pipeline run, a notebook or a test would cut their logging;
in a test session, pytest's capture file. Here nothing outside uvicorn's loggers is touched, and
the handlers write to whatever sys.stdout and sys.stderr are when a line is logged.
"""

import logging
import sys

from uvicorn.logging import AccessFormatter, DefaultFormatter

# As uvicorn.config.LOGGING_CONFIG formats them.
DEFAULT_FORMAT = "%(levelprefix)s %(message)s"
ACCESS_FORMAT = '%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s'


class CurrentStreamHandler(logging.StreamHandler):
    """Writes to sys.<name> as it is at each line (redirections and captures included)."""

    def __init__(self, name: str):
        self.stream_name = name
        super().__init__()

    @property
    def stream(self):
        return getattr(sys, self.stream_name)

    @stream.setter
    def stream(self, _):
        """StreamHandler's constructor sets a stream: this handler looks it up at each line."""


def configure() -> None:
    """Handlers for `uvicorn` (stderr) and `uvicorn.access` (stdout), added once; uvicorn.Config's
    log_level sets their levels, given log_config=None."""
    for name, formatter, stream in (
        ("uvicorn", DefaultFormatter(DEFAULT_FORMAT), "stderr"),
        ("uvicorn.access", AccessFormatter(ACCESS_FORMAT), "stdout"),
    ):
        logger = logging.getLogger(name)
        if not any(isinstance(h, CurrentStreamHandler) for h in logger.handlers):
            handler = CurrentStreamHandler(stream)
            handler.setFormatter(formatter)
            logger.addHandler(handler)
        logger.propagate = False
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)
