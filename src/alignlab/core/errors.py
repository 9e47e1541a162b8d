"""Errors a user can cause.

Every mistake a user can make (a bad file, a missing image, a wrong shape, an unknown name) raises an
:class:`AlignlabError` subclass that says *what* went wrong, *where*, and *how to fix it*. The CLI
prints it on one line and exits with status 2; bugs in alignlab itself still raise normally.

>>> e = DataError("caption is empty", where="train.jsonl:17", fix="remove the line or give a caption")
>>> str(e)
'caption is empty (train.jsonl:17); remove the line or give a caption'
"""

from __future__ import annotations


class AlignlabError(Exception):
    """Base class of the errors a user can cause; ``str()`` gives the one-line CLI message."""

    def __init__(
        self, what: str, *, where: str | None = None, fix: str | None = None, key: str | None = None
    ):
        self.what = what
        self.where = where
        self.fix = fix
        # The config key (or option name) the error is about, when the raiser knows it but not where the
        # value came from: from_dict() and the CLI turn it into a ``where`` (the YAML line, --set, the flag).
        self.key = key
        super().__init__(self.one_line())

    def located(self, where: str | None = None, fix: str | None = None) -> AlignlabError:
        """The same error with ``where`` and ``fix`` filled in where they were missing."""
        if (self.where or not where) and (self.fix or not fix):
            return self
        return type(self)(self.what, where=self.where or where, fix=self.fix or fix, key=self.key)

    def one_line(self) -> str:
        text = self.what
        if self.where:
            text += f" ({self.where})"
        if self.fix:
            text += f"; {self.fix}"
        return " ".join(text.split("\n"))


class DataError(AlignlabError):
    """A data file or data set is missing, unreadable or malformed."""


class ConfigError(AlignlabError):
    """A configuration value, key or command-line option is invalid."""


class ModelError(AlignlabError):
    """A model cannot be built or loaded, or it returned something outside its contract."""


class DependencyError(AlignlabError):
    """An optional dependency (package, model files, WordNet) is not available."""


class ResumeError(AlignlabError):
    """A run cannot be resumed from its checkpoint (different config, missing or corrupt files)."""
