"""haet: a reproducible harness for efficient training under limited resources."""

__version__ = "0.1.0"


class HaetError(Exception):
    """An error the user can act on; the CLI prints its message without a traceback."""


def key_name(key: object) -> str:
    """A config key as an error message shows it: plain when it reads plainly, else its repr (a key from a
    hand-written YAML file can be a number, or hold a newline)."""
    return key if isinstance(key, str) and key.isidentifier() else repr(key)
