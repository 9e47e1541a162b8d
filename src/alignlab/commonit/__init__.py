"""CommonIT: commonality-aware batching for instruction tuning (Rao et al., EMNLP 2024).

* :mod:`~alignlab.commonit.grouping` — give each instruction record a group (task, embedding cluster,
  length bin) and a manifest; ``alignlab commonit group``.
* :class:`CommonITBatchSampler` — every optimizer step from one group, across ranks and gradient
  accumulation; seedable, resumable, exact ``len``.
* :class:`~alignlab.commonit.hf.CommonITTrainer` — the sampler inside a Hugging Face ``Trainer``.

>>> from alignlab.commonit import CommonITBatchSampler
>>> len(CommonITBatchSampler([0, 0, 1, 1], batch_size=2))
2
"""

from __future__ import annotations

from typing import Any

from alignlab.commonit.sampler import CommonITBatchSampler, CommonITWarning, EpochPlan

__all__ = ["CommonITBatchSampler", "CommonITWarning", "EpochPlan", "CommonITTrainer"]


def __getattr__(name: str) -> Any:
    # The Trainer subclass imports transformers; load it only when asked for.
    if name == "CommonITTrainer":
        from alignlab.commonit.hf import CommonITTrainer

        return CommonITTrainer
    raise AttributeError(name)
