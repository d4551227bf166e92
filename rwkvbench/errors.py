"""The project's error types. A `UserError` is a mistake in what the user gave (a config key, a file, a
checkpoint): its message is one line naming the culprit (file, row or key), what was found and what was
expected. The command line prints it as that one line and exits non-zero; anything else is a bug and
keeps its traceback."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input; str(e) is the whole, one-line explanation."""


class ConfigError(UserError, ValueError):
    """A bad config value or keyword (which key, what was given, what is valid)."""


class DataError(UserError, ValueError):
    """A data file that is missing or malformed (which file, which line or field)."""
