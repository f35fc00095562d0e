"""Errors that dlrun explains to the user in one line instead of a traceback."""


class DlrunError(Exception):
    """A problem the user can fix (bad config, missing data, unusable checkpoint)."""

    exit_code = 2


class ConfigError(DlrunError):
    """A config value that composes but cannot be used."""
