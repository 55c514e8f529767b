"""User-facing errors: the CLI prints ``str(error)`` as one line (it names the file and the problem), no traceback."""


class FacedistillError(Exception):
    """Base class of every error a user can cause with bad input, a bad config or a bad file."""
