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

    def __init__(self, what: str, *, where: str | None = None, fix: str | None = None):
        self.what = what
        self.where = where
        self.fix = fix
        super().__init__(self.one_line())

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
