"""Run by tests/commonit/test_ddp.py under torchrun: CommonITTrainer on 2 CPU processes (gloo).

Each rank writes the example indices of every micro-batch it trained, keyed by optimizer step, to
``<out>/rank<r>.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch


def main(out: str) -> None:
    torch.set_num_threads(1)
    sys.path.insert(0, str(Path(__file__).parent))
    from test_hf import IndexCollator, StepRecordingTrainer, tiny

    from alignlab.commonit.hf import training_arguments

    ds, gids, model, _ = tiny(n=40)
    args = training_arguments(
        Path(out) / "trainer", batch_size=2, grad_accum=2, epochs=2, lr=1e-3, seed=4, ddp_backend="gloo"
    )
    trainer = StepRecordingTrainer(
        model=model, args=args, train_dataset=ds, data_collator=IndexCollator(0), group_ids=gids
    )
    trainer.train()
    rank = trainer.args.process_index
    payload = {
        "world_size": trainer.args.world_size,
        "len": len(trainer.commonit_sampler),
        "steps": {str(k): v for k, v in trainer.by_step.items()},
        "groups": gids,
    }
    (Path(out) / f"rank{rank}.json").write_text(json.dumps(payload))


if __name__ == "__main__":
    main(sys.argv[1])
