"""Shared foundations: errors, seeding, atomic I/O, manifests, statistics, registries, progress."""

from alignlab.core.errors import (
    AlignlabError,
    ConfigError,
    DataError,
    DependencyError,
    ModelError,
    ResumeError,
)

__all__ = ["AlignlabError", "ConfigError", "DataError", "DependencyError", "ModelError", "ResumeError"]
