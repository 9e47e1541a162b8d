"""Test-wide settings: offline, CPU-only, deterministic, no network.

* Hugging Face libraries are put in offline mode and CUDA is hidden before anything imports them.
* Any socket connection to a non-loopback address fails the test that makes it.
* Under pytest-xdist each worker uses one torch thread, so two workers share two cores fairly.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

os.environ.update(
    {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "TOKENIZERS_PARALLELISM": "false",
        "ALIGNLAB_QUIET": "1",
        "MPLBACKEND": "Agg",
    }
)
os.environ.pop("ALIGNLAB_ALLOW_DOWNLOAD", None)

import torch  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _is_loopback(address) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX path
        return True
    host = address[0] if isinstance(address, tuple) and address else ""
    return host in ("localhost", "::1", "0.0.0.0", "") or str(host).startswith("127.")


class NetworkAccessError(RuntimeError):
    pass


def _guarded_connect(self, address):
    if not _is_loopback(address):
        raise NetworkAccessError(f"test tried to reach the network: {address!r}")
    return _real_connect(self, address)


def _guarded_connect_ex(self, address):
    if not _is_loopback(address):
        raise NetworkAccessError(f"test tried to reach the network: {address!r}")
    return _real_connect_ex(self, address)


socket.socket.connect = _guarded_connect
socket.socket.connect_ex = _guarded_connect_ex

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The real caption data in ../shared/data (3AM, Multi30K); skips when it is not there."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (only present in the project workspace)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _seed_everything():
    from alignlab.core.seed import set_seed

    set_seed(0)
    yield
