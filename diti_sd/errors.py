"""The errors a user can fix: bad input, a missing file, a setting that does not fit.

The CLI prints any ``DitiError`` as one line (its message names the problem and the fix) and exits 2;
anything else is a bug and raises with its traceback. Each class also derives from the built-in error
its callers would expect (``ValueError``, ``FileNotFoundError``, ``RuntimeError``).
"""

from __future__ import annotations


class DitiError(Exception):
    """A problem with what the user asked for or gave."""


class ConfigError(DitiError, ValueError):
    """A setting, argument or combination of them that cannot work."""


class MissingEntryError(DitiError, KeyError):
    """A split, column or image the user named is not in the data set."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class MissingFileError(DitiError, FileNotFoundError):
    """A file or folder the user pointed at is not there."""


class DitiWarning(UserWarning):
    """Something the user should know that does not stop the work; the command line prints it as one line."""


class CoarseShortcutWarning(DitiWarning):
    """The shots' coarse content alone (a blur of them) names their class: if that content is an accident of
    where the shots were taken rather than the class, the adapters learn it with the class."""
