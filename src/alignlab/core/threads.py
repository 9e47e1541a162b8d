"""Thread control in one place: run a block with a given number of torch threads, then restore.

One thread per process avoids oversubscription when several jobs share few cores: on a busy 2-core
machine the tiny models ran 20-50x slower with the default thread count. Experiments also pin their
thread count so that the same command gives the same numbers on another machine of the same kind.

>>> import torch
>>> before = torch.get_num_threads()
>>> with torch_threads(1):
...     torch.get_num_threads()
1
>>> torch.get_num_threads() == before
True
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` torch threads (None or 0: unchanged), restoring the previous count afterwards."""
    if not n:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(old)
