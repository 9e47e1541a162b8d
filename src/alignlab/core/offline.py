"""The one download switch: nothing is fetched from a hub unless the user opts in.

The opt-in is an explicit ``allow_download=True`` (``--allow-download`` on the command line) or the
environment variable ``ALIGNLAB_ALLOW_DOWNLOAD`` set to a true word. Every loader asks
:func:`download_allowed`, so ``ALIGNLAB_ALLOW_DOWNLOAD=false`` or ``=0`` means off everywhere.

>>> import os
>>> os.environ[ALLOW_DOWNLOAD_ENV] = "false"; download_allowed()
False
>>> os.environ[ALLOW_DOWNLOAD_ENV] = "YES"; download_allowed()
True
>>> download_allowed(False)
False
>>> del os.environ[ALLOW_DOWNLOAD_ENV]
"""

from __future__ import annotations

import os

ALLOW_DOWNLOAD_ENV = "ALIGNLAB_ALLOW_DOWNLOAD"
_TRUE = ("1", "true", "yes", "on")


def download_allowed(allow_download: bool | None = None) -> bool:
    """Whether a hub model may be downloaded: an explicit argument wins, else ``ALIGNLAB_ALLOW_DOWNLOAD``."""
    if allow_download is not None:
        return bool(allow_download)
    return os.environ.get(ALLOW_DOWNLOAD_ENV, "").strip().lower() in _TRUE


def hub_offline_unless_allowed(allow_download: bool | None = None) -> bool:
    """Put Hugging Face libraries in offline mode unless downloads are allowed; returns whether they are."""
    allowed = download_allowed(allow_download)
    if not allowed:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return allowed
