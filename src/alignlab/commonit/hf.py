"""Hugging Face integration: a ``Trainer`` whose training batches come from :class:`CommonITBatchSampler`.

:class:`CommonITTrainer` overrides ``get_train_dataloader``: it builds the sampler from the
``TrainingArguments`` (per-device batch size, world size, rank, gradient accumulation, ``data_seed`` or
``seed``) and hands the ``DataLoader`` to accelerate *without* re-sharding, because the sampler already
gives every rank its own disjoint micro-batches and keeps each optimizer step inside one group.
The Trainer calls ``set_epoch(epoch)`` on the loader every epoch, which accelerate forwards to the
sampler; resuming from a checkpoint replays the same (seed, epoch) plan and skips the batches already
trained.

>>> # trainer = CommonITTrainer(model=model, args=args, train_dataset=ds, data_collator=collate,
>>> #                           group_ids=[r["group_id"] for r in rows], commonit={"leftover": "partial"})
>>> # trainer.train()

The rest of the module is what ``alignlab commonit train`` and the experiment need to train a causal
LM on instruction records: a character tokenizer, a tiny GPT-2 built from a config (no download), an
instruction dataset with the loss on the response only, a padding collator and greedy exact-match
evaluation.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from alignlab.commonit.sampler import CommonITBatchSampler
from alignlab.core.errors import ConfigError, DataError, DependencyError

try:  # transformers is the `hf` extra; the sampler itself does not need it.
    from transformers import Trainer
except ImportError:  # pragma: no cover - exercised only without the extra
    Trainer = object  # type: ignore[assignment,misc]


class CommonITTrainer(Trainer):  # type: ignore[misc,valid-type]
    """``transformers.Trainer`` with CommonIT batching of the training set.

    Args (besides the Trainer's own):
        group_ids: one group label per training example (same order as ``train_dataset``).
        commonit: keyword options of :class:`CommonITBatchSampler` (``order``, ``leftover``,
            ``small_groups``, ``mix_ratio``, ``mode``, ...). Batch size, ranks, accumulation and seed
            come from the ``TrainingArguments``.
    """

    def __init__(
        self,
        *args: Any,
        group_ids: Sequence[Any] | None = None,
        commonit: dict[str, Any] | None = None,
        **kwargs: Any,
    ):
        if Trainer is object:
            raise DependencyError("transformers is not installed", fix="pip install 'alignlab[hf]'")
        if group_ids is None:
            raise ConfigError(
                "CommonITTrainer needs group_ids (one per training example)",
                fix="run `alignlab commonit group` and pass the group_id column",
            )
        super().__init__(*args, **kwargs)
        options = dict(commonit or {})
        for reserved in ("batch_size", "world_size", "rank", "grad_accum_steps", "seed"):
            if reserved in options:
                raise ConfigError(
                    f"commonit option {reserved!r} comes from TrainingArguments",
                    fix="set it through TrainingArguments instead",
                )
        self.commonit_group_ids = group_ids
        self.commonit_options = options
        self.commonit_sampler: CommonITBatchSampler | None = None

    def make_commonit_sampler(self) -> CommonITBatchSampler:
        args = self.args
        if len(self.commonit_group_ids) != len(self.train_dataset):
            raise DataError(
                f"{len(self.commonit_group_ids)} group ids for {len(self.train_dataset)} training examples",
                where="CommonITTrainer(group_ids=...)",
                fix="give exactly one group id per training example, in dataset order",
            )
        seed = args.data_seed if args.data_seed is not None else args.seed
        return CommonITBatchSampler(
            self.commonit_group_ids,
            self._train_batch_size,
            world_size=args.world_size,
            rank=args.process_index,
            grad_accum_steps=args.gradient_accumulation_steps,
            seed=seed,
            **self.commonit_options,
        )

    def get_train_dataloader(self) -> DataLoader:
        if self.train_dataset is None:
            raise ValueError("Trainer: training requires a train_dataset.")
        from accelerate.data_loader import prepare_data_loader

        dataset = self.train_dataset
        collator = self.data_collator
        try:
            import datasets

            is_hf_dataset = isinstance(dataset, datasets.Dataset)
        except ImportError:  # pragma: no cover
            is_hf_dataset = False
        if is_hf_dataset:
            dataset = self._remove_unused_columns(dataset, description="training")
        else:
            collator = self._get_collator_with_removed_columns(collator, description="training")
        sampler = self.make_commonit_sampler()
        self.commonit_sampler = sampler
        loader = DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
            persistent_workers=self.args.dataloader_persistent_workers
            and self.args.dataloader_num_workers > 0,
        )
        # num_processes=1: the sampler is already rank-aware. Letting accelerate wrap it in its
        # BatchSamplerShard would hand out every other *micro-batch* per rank (breaking step homogeneity)
        # and would silently skip micro-batches smaller than batch_size.
        acc = self.accelerator
        prepared = prepare_data_loader(
            loader,
            acc.device,
            num_processes=1,
            process_index=0,
            put_on_device=acc.device_placement,
            rng_types=None,
            dispatch_batches=False,
            non_blocking=acc.non_blocking,
        )
        acc._dataloaders.append(prepared)
        return prepared


# ---------------------------------------------------------------------- tiny causal-LM helpers


class CharTokenizer:
    """Characters -> ids with ``<pad>`` 0, ``<eos>`` 1, ``<unk>`` 2 (enough for the synthetic tasks)."""

    PAD, EOS, UNK = 0, 1, 2

    def __init__(self, chars: Sequence[str]):
        self.chars = list(chars)
        self.index = {c: i + 3 for i, c in enumerate(self.chars)}

    @classmethod
    def build(cls, texts: Sequence[str]) -> CharTokenizer:
        return cls(sorted({c for t in texts for c in t}))

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + 3

    def encode(self, text: str) -> list[int]:
        return [self.index.get(c, self.UNK) for c in text]

    def decode(self, ids: Sequence[int]) -> str:
        """Text up to the first EOS; a generated ``<pad>``/``<unk>`` becomes U+FFFD, so it never matches."""
        out = []
        for i in ids:
            if i == self.EOS:
                break
            out.append(self.chars[i - 3] if 3 <= i < self.vocab_size else "\ufffd")
        return "".join(out)

    def save(self, path: str | os.PathLike) -> None:
        from alignlab.core.io import write_json

        write_json(path, {"kind": "char", "chars": self.chars})

    @classmethod
    def load(cls, path: str | os.PathLike) -> CharTokenizer:
        from alignlab.core.io import read_json

        return cls(read_json(path)["chars"])


@dataclass
class TinyGPT2Config:
    n_layer: int = 2
    n_embd: int = 64
    n_head: int = 4
    n_positions: int = 96
    dropout: float = 0.0


def build_tiny_gpt2(vocab_size: int, cfg: TinyGPT2Config | None = None) -> torch.nn.Module:
    """A randomly initialised GPT-2 LM from a config (no download). Seed torch before calling."""
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = cfg or TinyGPT2Config()
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=cfg.n_positions,
        n_embd=cfg.n_embd,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        resid_pdrop=cfg.dropout,
        embd_pdrop=cfg.dropout,
        attn_pdrop=cfg.dropout,
        bos_token_id=CharTokenizer.EOS,
        eos_token_id=CharTokenizer.EOS,
        pad_token_id=CharTokenizer.PAD,
    )
    return GPT2LMHeadModel(config)


def prompt_of(instruction: str, inp: str) -> str:
    """The text the model is conditioned on; the response follows it."""
    return f"{instruction}\n{inp}\n=" if inp else f"{instruction}\n="


class InstructionLMDataset(Dataset):
    """Prompt + response + EOS as ``input_ids``; ``labels`` are ``-100`` on the prompt (loss on the response).

    Each item also carries its index under ``idx`` so a collator can record which examples were batched.
    """

    def __init__(
        self, prompts: Sequence[str], responses: Sequence[str], encode: Any, eos_id: int, max_length: int
    ):
        self.items = []
        for i, (p, r) in enumerate(zip(prompts, responses)):
            pi, ri = list(encode(p)), list(encode(r)) + [eos_id]
            if len(pi) + len(ri) > max_length:
                raise DataError(
                    f"example {i} has {len(pi) + len(ri)} tokens, more than max_length {max_length}",
                    where=f"example {i}",
                    fix="raise max_length or shorten the example",
                )
            self.items.append((pi, ri))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        pi, ri = self.items[i]
        return {"input_ids": pi + ri, "labels": [-100] * len(pi) + ri, "idx": i}


class PadCollator:
    """Right-pads a list of items into tensors; optionally records the example indices of every batch."""

    def __init__(self, pad_id: int, record: bool = False):
        self.pad_id = pad_id
        self.record = record
        self.batches: list[list[int]] = []

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if self.record:
            self.batches.append([int(it["idx"]) for it in items])
        n = max(len(it["input_ids"]) for it in items)
        ids = torch.full((len(items), n), self.pad_id, dtype=torch.long)
        labels = torch.full((len(items), n), -100, dtype=torch.long)
        mask = torch.zeros((len(items), n), dtype=torch.long)
        for j, it in enumerate(items):
            k = len(it["input_ids"])
            ids[j, :k] = torch.tensor(it["input_ids"])
            labels[j, :k] = torch.tensor(it["labels"])
            mask[j, :k] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@torch.no_grad()
def greedy_answers(
    model: torch.nn.Module,
    prompts: Sequence[str],
    encode: Any,
    decode: Any,
    *,
    max_new_tokens: int,
    eos_id: int,
    pad_id: int,
    batch_size: int = 256,
) -> list[str]:
    """Greedy decoding; prompts of equal token length are batched together, so no padding is needed."""
    model.eval()
    encoded = [list(encode(p)) for p in prompts]
    by_len: dict[int, list[int]] = {}
    for i, e in enumerate(encoded):
        by_len.setdefault(len(e), []).append(i)
    out: list[str] = [""] * len(prompts)
    device = next(model.parameters()).device
    for length, idx in sorted(by_len.items()):
        for s in range(0, len(idx), batch_size):
            chunk = idx[s : s + batch_size]
            x = torch.tensor([encoded[i] for i in chunk], dtype=torch.long, device=device)
            gen = model.generate(
                input_ids=x,
                attention_mask=torch.ones_like(x),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=eos_id,
                pad_token_id=pad_id,
            )
            for i, row in zip(chunk, gen[:, length:].tolist()):
                out[i] = decode(row)
    return out


@torch.no_grad()
def response_nll(model: torch.nn.Module, dataset: InstructionLMDataset, batch_size: int = 128) -> list[float]:
    """Mean negative log-likelihood per response token (teacher forcing) of every example, in nats."""
    model.eval()
    collate = PadCollator(pad_id=0)
    out: list[float] = []
    device = next(model.parameters()).device
    for s in range(0, len(dataset), batch_size):
        batch = collate([dataset[i] for i in range(s, min(len(dataset), s + batch_size))])
        logits = model(
            input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
        ).logits
        labels = batch["labels"].to(device)[:, 1:]
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        mask = labels != -100
        nll = -logp.gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1) * mask
        out += (nll.sum(1) / mask.sum(1).clamp_min(1)).tolist()
    return out


def training_arguments(
    out: str | os.PathLike,
    *,
    batch_size: int,
    grad_accum: int,
    epochs: float,
    lr: float,
    seed: int,
    warmup_ratio: float = 0.05,
    weight_decay: float = 0.01,
    quiet: bool = True,
    **extra: Any,
) -> Any:
    """``TrainingArguments`` for CPU runs of the tiny model, with no reporting and no checkpoints."""
    from transformers import TrainingArguments

    kwargs = dict(
        output_dir=str(out),
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=grad_accum,
        num_train_epochs=epochs,
        learning_rate=lr,
        lr_scheduler_type="linear",
        weight_decay=weight_decay,
        seed=seed,
        data_seed=seed,
        logging_strategy="steps",
        logging_steps=25,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=quiet,
        remove_unused_columns=False,
        dataloader_num_workers=0,
    )
    kwargs.update(extra)
    if "warmup_steps" not in kwargs:
        kwargs["warmup_steps"] = warmup_ratio  # transformers 5: a float in [0, 1) is a ratio of total steps
    return TrainingArguments(**kwargs)


# ---------------------------------------------------------------------- training on instruction records


@dataclass
class TrainConfig:
    model: str = "tiny-gpt2"  # tiny-gpt2 (from config, char tokenizer) or a local HF causal-LM folder
    n_layer: int = 2  # tiny-gpt2 only
    n_embd: int = 64
    n_head: int = 4
    batching: str = "commonit"  # commonit | random (same data, random steps)
    order: str = "proportional"
    temperature: float = 1.0
    homogeneity: str = "step"
    small_groups: str = "merge"
    min_group_size: int | None = None
    leftover: str = "partial"
    mix_ratio: float = 0.0
    batch_size: int = 16
    grad_accum: int = 1
    epochs: float = 3.0
    lr: float = 2e-3
    warmup_ratio: float = 0.05
    weight_decay: float = 0.01
    max_length: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        if self.batching not in ("commonit", "random"):
            raise ConfigError(
                f"unknown batching {self.batching!r}", key="batching", fix="choose commonit or random"
            )
        from alignlab.core.config import check_number

        # lr 0 is allowed: it trains nothing, which tests use to check loading a starting checkpoint
        check_number("lr", self.lr, lo=0, hi=10, fix="give a learning rate such as --lr 0.002")
        check_number("epochs", self.epochs, lo=0, lo_open=True)
        for key in ("n_layer", "n_embd", "n_head", "batch_size", "grad_accum", "max_length"):
            check_number(key, getattr(self, key), lo=1)
        check_number("warmup_ratio", self.warmup_ratio, lo=0, hi=1)
        check_number("weight_decay", self.weight_decay, lo=0)

    def sampler_options(self) -> dict[str, Any]:
        return {
            "order": self.order,
            "temperature": self.temperature,
            "homogeneity": self.homogeneity,
            "small_groups": self.small_groups,
            "min_group_size": self.min_group_size,
            "leftover": self.leftover,
            "mix_ratio": self.mix_ratio,
            "mode": "random" if self.batching == "random" else "commonit",
        }


@dataclass
class FittedLM:
    model: Any
    encode: Any
    decode: Any
    eos_id: int
    pad_id: int
    tokenizer: Any
    train_loss: float
    optimizer_steps: int
    micro_batches: list[list[int]]
    sampler_report: dict[str, Any]
    wall_s: float
    loss_history: list[tuple[int, float]]


def _tokenizer_for(cfg: TrainConfig, texts: Sequence[str]) -> tuple[Any, Any, Any, int, int]:
    """(tokenizer object, encode, decode, eos id, pad id)."""
    if cfg.model == "tiny-gpt2":
        tok = CharTokenizer.build(texts)
        return tok, tok.encode, tok.decode, tok.EOS, tok.PAD
    path = Path(cfg.model).expanduser()
    if not path.is_dir():
        raise DependencyError(
            f"model {cfg.model!r} is not a local folder",
            where="--model",
            fix="use tiny-gpt2 or the folder of a saved Hugging Face causal LM",
        )
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as e:  # noqa: BLE001
        raise DependencyError(
            f"cannot load the tokenizer of {path}: {str(e).splitlines()[0]}",
            where=str(path),
            fix="save the tokenizer next to the model (tokenizer.save_pretrained)",
        ) from None
    if tok.eos_token_id is None:
        raise DependencyError(
            "the tokenizer has no EOS token", where=str(path), fix="set tokenizer.eos_token"
        )
    eos = int(tok.eos_token_id)
    pad = int(tok.pad_token_id) if tok.pad_token_id is not None else eos

    def encode(text: str) -> list[int]:
        return tok(text, add_special_tokens=False)["input_ids"]

    def decode(ids: Sequence[int]) -> str:
        ids = list(ids)
        if eos in ids:
            ids = ids[: ids.index(eos)]
        return tok.decode(ids, skip_special_tokens=True)

    return tok, encode, decode, eos, pad


def fit_lm(
    records: Sequence[Any],
    group_ids: Sequence[Any],
    cfg: TrainConfig,
    workdir: str | os.PathLike,
    *,
    quiet: bool = True,
    extra_texts: Sequence[str] = (),
    init_state: dict[str, Any] | None = None,
) -> FittedLM:
    """Train a causal LM on instruction records with CommonIT (or random) batching; returns the model.

    ``records`` are :class:`~alignlab.commonit.grouping.InstructionRecord`; ``extra_texts`` are added to the
    character vocabulary (e.g. evaluation prompts) for the tiny model; ``init_state`` is a ``state_dict``
    to start from (continued training / fine-tuning) instead of the seeded random initialisation.
    """
    import time

    from alignlab.core.seed import set_seed

    t0 = time.time()
    prompts = [prompt_of(r.instruction, r.input) for r in records]
    responses = [r.response for r in records]
    tok, encode, decode, eos, pad = _tokenizer_for(cfg, [*prompts, *responses, *extra_texts])
    dataset = InstructionLMDataset(prompts, responses, encode, eos, cfg.max_length)
    set_seed(cfg.seed)  # the same seed gives the same initial weights for every batching method
    if cfg.model == "tiny-gpt2":
        model = build_tiny_gpt2(
            tok.vocab_size,
            TinyGPT2Config(
                n_layer=cfg.n_layer, n_embd=cfg.n_embd, n_head=cfg.n_head, n_positions=max(cfg.max_length, 32)
            ),
        )
    else:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(Path(cfg.model).expanduser(), local_files_only=True)
    if init_state is not None:
        model.load_state_dict(init_state)
    collator = PadCollator(pad, record=True)
    args = training_arguments(
        workdir,
        batch_size=cfg.batch_size,
        grad_accum=cfg.grad_accum,
        epochs=cfg.epochs,
        lr=cfg.lr,
        seed=cfg.seed,
        warmup_ratio=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay,
        quiet=quiet,
    )
    import transformers

    verbosity = transformers.logging.get_verbosity()
    if quiet:
        transformers.logging.set_verbosity_error()
    try:
        trainer = CommonITTrainer(
            model=model,
            args=args,
            train_dataset=dataset,
            data_collator=collator,
            group_ids=list(group_ids),
            commonit=cfg.sampler_options(),
        )
        if quiet:  # keep the loss history in trainer.state, but do not print it
            from transformers.trainer_callback import PrinterCallback

            trainer.remove_callback(PrinterCallback)
        out = trainer.train()
    finally:
        transformers.logging.set_verbosity(verbosity)
    sampler = trainer.commonit_sampler
    return FittedLM(
        model=model,
        encode=encode,
        decode=decode,
        eos_id=eos,
        pad_id=pad,
        tokenizer=tok,
        train_loss=float(out.training_loss),
        optimizer_steps=int(out.global_step),
        micro_batches=collator.batches,
        sampler_report=sampler.report if sampler else {},
        wall_s=time.time() - t0,
        loss_history=[(int(h["step"]), float(h["loss"])) for h in trainer.state.log_history if "loss" in h],
    )


def step_purity(micro_batches: Sequence[Sequence[int]], labels: Sequence[Any], grad_accum: int) -> float:
    """Share of optimizer steps (``grad_accum`` consecutive micro-batches) whose examples share one label."""
    steps = [micro_batches[i : i + grad_accum] for i in range(0, len(micro_batches), grad_accum)]
    if not steps:
        return float("nan")
    pure = sum(len({labels[j] for b in s for j in b}) == 1 for s in steps)
    return pure / len(steps)


def train_instruction_lm(
    records: Sequence[Any],
    group_ids: Sequence[Any],
    cfg: TrainConfig,
    out: str | os.PathLike,
    *,
    quiet: bool = True,
) -> dict[str, Any]:
    """``alignlab commonit train``: fit, save the model and tokenizer, write ``results.json``."""
    import time

    from alignlab.core.config import dump_yaml
    from alignlab.core.manifest import write_result

    t0 = time.time()
    out = Path(out)
    fitted = fit_lm(records, group_ids, cfg, out / "trainer", quiet=quiet)
    model_dir = out / "model"
    fitted.model.save_pretrained(model_dir)
    if isinstance(fitted.tokenizer, CharTokenizer):
        fitted.tokenizer.save(model_dir / "char_tokenizer.json")
    else:
        fitted.tokenizer.save_pretrained(model_dir)
    dump_yaml(out / "config.yaml", cfg)
    metrics = {
        "train_loss": fitted.train_loss,
        "optimizer_steps": fitted.optimizer_steps,
        "micro_batches": len(fitted.micro_batches),
        "group_pure_steps": step_purity(fitted.micro_batches, [str(g) for g in group_ids], cfg.grad_accum),
    }
    tasks = [r.task for r in records]
    if all(t is not None for t in tasks):
        metrics["task_pure_steps"] = step_purity(fitted.micro_batches, tasks, cfg.grad_accum)
    return write_result(
        out / "results.json",
        task="commonit-train",
        model=cfg.model,
        data=f"{len(records)} records",
        seed=cfg.seed,
        metrics=metrics,
        config=cfg,
        started=t0,
        definitions={
            "group_pure_steps": "share of optimizer steps whose examples share one group",
            "task_pure_steps": "share of optimizer steps whose examples share one task",
        },
        sampler=fitted.sampler_report,
    )
