"""The one exception type for mistakes a user can fix.

The CLI prints a ``UserError`` as a single line, without a traceback: the
message must name what was wrong and say what to do about it.
"""


class UserError(Exception):
    """A bad flag, missing file, corrupt input or similar; the message says the fix."""
