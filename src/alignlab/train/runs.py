"""The run-folder sequence every trainer follows: config -> fit -> best -> test -> results.

A trainer builds its data and model first (a bad setting then fails before anything is written), and
then:

1. :func:`start_run` creates the folder and writes ``config.yaml`` (the whole resolved config);
2. :func:`fit_best` trains with :func:`~alignlab.train.loop.fit` (resumable) and loads the checkpoint
   the dev metric chose (``train.select_metric``; the last epoch when there is none);
3. the trainer evaluates that model on its test split, in its own terms;
4. :func:`finish_run` writes ``per_query.json`` (when the trainer has per-query results) and then
   ``results.json``, last: its presence marks the run as finished (``core.config.finished_run``).

Under torchrun only rank 0 writes; every rank trains and evaluates.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp()) / "run"
>>> start_run(d, {"seed": 0}).name, sorted(p.name for p in d.iterdir())
('run', ['config.yaml'])
>>> _ = finish_run(d, {"metrics": {"acc": 1.0}}); sorted(p.name for p in d.iterdir())
['config.yaml', 'results.json']
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from alignlab.core.config import dump_yaml
from alignlab.core.io import write_json
from alignlab.train import distributed as ddp_
from alignlab.train.loop import FitResult, TrainConfig, TrainTask, fit, load_best


def start_run(run_dir: str | os.PathLike, config: Mapping[str, Any]) -> Path:
    """Create ``run_dir`` and write ``config.yaml`` (rank 0); call once the data and model exist."""
    path = Path(run_dir)
    path.mkdir(parents=True, exist_ok=True)
    if ddp_.is_main():
        dump_yaml(path / "config.yaml", dict(config))
    return path


def fit_best(
    model: nn.Module, task: TrainTask, cfg: TrainConfig, run_dir: str | os.PathLike, **fit_kwargs: Any
) -> tuple[FitResult, dict[str, Any] | None]:
    """:func:`fit`, then the weights the dev metric chose: ``(fit result, best entry)``.

    With ``cfg.select_metric`` the best checkpoint is loaded into ``model`` and its entry (epoch,
    metric, value) returned; without one the model keeps its last weights and the entry is the fit's.
    """
    result = fit(model, task, cfg, run_dir, **fit_kwargs)
    best = load_best(model, run_dir) if cfg.select_metric else result.best
    return result, best


def finish_run(
    run_dir: str | os.PathLike, result: Mapping[str, Any], per_query: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Write ``per_query.json`` (if given) and then ``results.json`` (rank 0); all ranks wait for it.

    Returns ``result`` as a plain dict (the values as given, not their JSON form)."""
    path = Path(run_dir)
    if ddp_.is_main():
        if per_query is not None:
            write_json(path / "per_query.json", per_query)
        write_json(path / "results.json", result)  # write_json converts NumPy/torch values itself
    ddp_.barrier()
    return dict(result)
