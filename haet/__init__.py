"""haet: a reproducible harness for efficient training under limited resources."""

__version__ = "0.1.0"


class HaetError(Exception):
    """An error the user can act on; the CLI prints its message without a traceback."""
