"""CommonITTrainer on a tiny GPT-2 built from a config: epochs, gradient accumulation, resuming."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

from alignlab.commonit import CommonITBatchSampler, tasks  # noqa: E402
from alignlab.commonit.hf import (  # noqa: E402
    CharTokenizer,
    CommonITTrainer,
    InstructionLMDataset,
    PadCollator,
    TinyGPT2Config,
    build_tiny_gpt2,
    prompt_of,
    training_arguments,
)
from alignlab.core.errors import DataError  # noqa: E402
from alignlab.core.seed import set_seed  # noqa: E402


def tiny(n=30, task_set=("add", "copy", "date")):
    rows = tasks.generate(n, seed=0, tasks=task_set, weights=[3, 2, 1])
    prompts = [prompt_of(r["instruction"], r["input"]) for r in rows]
    tok = CharTokenizer.build(prompts + [r["output"] for r in rows])
    ds = InstructionLMDataset(prompts, [r["output"] for r in rows], tok.encode, tok.EOS, 64)
    set_seed(0)
    model = build_tiny_gpt2(tok.vocab_size, TinyGPT2Config(n_layer=1, n_embd=16, n_head=2, n_positions=64))
    return ds, [r["task"] for r in rows], model, PadCollator(tok.PAD, record=True)


class IndexCollator(PadCollator):
    """Also passes each batch's example indices to the trainer (accelerate collates one batch ahead, so the
    collator's own record cannot tell which optimizer step a batch went into)."""

    def __call__(self, items):
        out = super().__call__(items)
        out["example_idx"] = [int(it["idx"]) for it in items]
        return out


class StepRecordingTrainer(CommonITTrainer):
    """Records, for every micro-batch trained, the optimizer step it contributes to."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.by_step = {}

    def training_step(self, model, inputs, num_items_in_batch=None):
        idx = inputs.pop("example_idx")
        self.by_step.setdefault(self.state.global_step, []).append(idx)
        return super().training_step(model, inputs, num_items_in_batch)


def test_set_epoch_reaches_the_sampler_through_accelerate(tmp_path):
    ds, gids, model, coll = tiny()
    args = training_arguments(tmp_path, batch_size=4, grad_accum=1, epochs=3, lr=1e-3, seed=5)
    trainer = CommonITTrainer(model=model, args=args, train_dataset=ds, data_collator=coll, group_ids=gids)
    trainer.train()
    sampler = trainer.commonit_sampler
    assert sampler.epoch == 2
    ref = CommonITBatchSampler(gids, 4, seed=5, warn=False)
    expected = []
    for epoch in range(3):
        ref.set_epoch(epoch)
        expected.append(list(ref))
    n = len(ref)
    seen = [coll.batches[i * n : (i + 1) * n] for i in range(3)]
    assert seen == expected  # each epoch trained on that epoch's plan...
    assert seen[0] != seen[1] != seen[2]  # ...and the plans differ, so set_epoch arrived


def accumulated_steps(tmp_path, **commonit):
    ds, gids, model, _ = tiny()
    coll = IndexCollator(0)
    args = training_arguments(tmp_path, batch_size=2, grad_accum=3, epochs=2, lr=1e-3, seed=1)
    trainer = StepRecordingTrainer(
        model=model, args=args, train_dataset=ds, data_collator=coll, group_ids=gids, commonit=commonit
    )
    trainer.train()
    steps = [trainer.by_step[k] for k in sorted(trainer.by_step)]
    return steps, gids, trainer


def test_gradient_accumulation_keeps_every_optimizer_step_in_one_group(tmp_path):
    steps, gids, trainer = accumulated_steps(tmp_path)
    assert len(steps) == trainer.state.global_step == 2 * trainer.commonit_sampler.steps_per_epoch
    assert all(len(s) == 3 for s in steps)
    assert all(len({gids[i] for b in s for i in b}) == 1 for s in steps)


def test_per_device_homogeneity_alone_lets_accumulated_steps_mix_groups(tmp_path):
    # The same check catches mixed steps when only each device batch is homogeneous, which is what a
    # per-batch sampler gives under gradient accumulation (a defect of the released CommonIT code).
    steps, gids, _ = accumulated_steps(tmp_path, homogeneity="batch")
    assert all(len({gids[i] for i in b}) == 1 for s in steps for b in s)
    assert any(len({gids[i] for b in s for i in b}) > 1 for s in steps)


def test_resuming_from_a_mid_epoch_checkpoint_trains_the_same_remaining_batches(tmp_path):
    ds, gids, model, coll = tiny()
    args = training_arguments(
        tmp_path / "a",
        batch_size=2,
        grad_accum=2,
        epochs=2,
        lr=1e-3,
        seed=3,
        save_strategy="steps",
        save_steps=3,
    )
    CommonITTrainer(model=model, args=args, train_dataset=ds, data_collator=coll, group_ids=gids).train()
    full = coll.batches
    ds2, _, model2, coll2 = tiny()
    args2 = training_arguments(
        tmp_path / "a", batch_size=2, grad_accum=2, epochs=2, lr=1e-3, seed=3, save_strategy="no"
    )
    CommonITTrainer(model=model2, args=args2, train_dataset=ds2, data_collator=coll2, group_ids=gids).train(
        resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-3")
    )
    assert coll2.batches == full[3 * 2 :]


def test_group_ids_must_match_the_training_set(tmp_path):
    ds, gids, model, coll = tiny()
    args = training_arguments(tmp_path, batch_size=2, grad_accum=1, epochs=1, lr=1e-3, seed=0)
    trainer = CommonITTrainer(
        model=model, args=args, train_dataset=ds, data_collator=coll, group_ids=gids[:-1]
    )
    with pytest.raises(DataError, match="29 group ids for 30 training examples"):
        trainer.train()


def test_response_nll_matches_the_models_own_loss_on_each_example():
    import torch

    from alignlab.commonit.hf import response_nll

    ds, _, model, coll = tiny(n=6)
    per_example = response_nll(model, ds, batch_size=4)
    for i in range(len(ds)):
        with torch.no_grad():
            loss = model(**coll([ds[i]])).loss.item()
        assert per_example[i] == pytest.approx(loss, rel=1e-5)


def test_char_tokenizer_never_decodes_padding_into_a_right_answer():
    tok = CharTokenizer.build(["12"])
    ids = tok.encode("12")
    assert tok.decode(ids + [tok.EOS, *tok.encode("9")]) == "12"
    assert tok.decode([ids[0], tok.PAD, ids[1]]) != "12"


def test_fit_lm_starts_from_a_given_checkpoint(tmp_path):
    import torch

    from alignlab.commonit.grouping import normalize_record
    from alignlab.commonit.hf import TrainConfig, fit_lm

    rows = [normalize_record(r, f"x:{i}") for i, r in enumerate(tasks.generate(12, seed=0))]
    cfg = TrainConfig(n_layer=1, n_embd=16, n_head=2, batch_size=4, epochs=1, lr=1e-3, max_length=64, seed=0)
    first = fit_lm(rows, ["all"] * len(rows), cfg, tmp_path / "a")
    state = {k: v.clone() for k, v in first.model.state_dict().items()}
    frozen = TrainConfig(**{**cfg.__dict__, "lr": 0.0, "weight_decay": 0.0, "seed": 1})
    second = fit_lm(rows, ["all"] * len(rows), frozen, tmp_path / "b", init_state=state)
    assert all(torch.equal(v, state[k]) for k, v in second.model.state_dict().items())
