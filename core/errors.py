"""The base of every error a user can cause and fix; entry points print it without a traceback."""

import sys
from collections.abc import Callable

USER_ERROR_EXIT = 2


class UserError(Exception):
    """A bad config, input or request. The message names the problem and how to fix it."""


def exit_on_user_error(function: Callable[[], object]) -> int:
    """Runs `function`; a UserError becomes one line on stderr and exit status 2."""
    try:
        function()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return USER_ERROR_EXIT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
