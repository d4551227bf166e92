"""The project's error types. A `UserError` is a mistake in what the user gave (a config key, a file, a
checkpoint): its message is one line naming the culprit (file, row or key), what was found and what was
expected. The command line prints it as that one line and exits non-zero; anything else is a bug and
keeps its traceback."""

from __future__ import annotations

import os
import sys

FULL_ERROR_ENV = "HYDRA_FULL_ERROR"  # set to 1: every error keeps its traceback (Hydra's convention)


class UserError(Exception):
    """A mistake in the user's input; str(e) is the whole, one-line explanation."""


class ConfigError(UserError, ValueError):
    """A bad config value or keyword (which key, what was given, what is valid)."""


class DataError(UserError, ValueError):
    """A data file that is missing or malformed (which file, which line or field)."""


def closest(key, valid) -> str | None:
    """The valid name nearest a misspelled one (difflib), for a "did you mean" in an error; None if none is near."""
    import difflib

    found = difflib.get_close_matches(str(key), sorted(map(str, valid)), n=1)
    return found[0] if found else None


def full_error_requested() -> bool:
    return os.environ.get(FULL_ERROR_ENV) == "1"


def exit_with(prog: str, message, code: int = 2):
    """Print `prog: error: message` as one line on stderr and exit with `code` (2: a usage error)."""
    text = " ".join(str(message).split()).strip() if "\n" in str(message) else str(message).strip()
    print(f"{prog}: error: {text}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def decode_utf8(raw: bytes, path, error: type[UserError] = DataError) -> str:
    """raw as UTF-8, or one `error` that names the file, line, column and byte that is not."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise error(f"{path}:{line}: not UTF-8 (byte 0x{raw[e.start]:02x} at column {column}); "
                    f"save the file as UTF-8") from None
