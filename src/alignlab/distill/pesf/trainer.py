"""A classification KD trainer on :func:`alignlab.train.loop.fit`: every method, one container, one task.

Methods (:data:`METHODS`). ``z_s``, ``z_t``, ``z_a`` are student, teacher and adapted-teacher logits,
``T`` the temperature, ``α`` the KD weight, ``β`` the adapter's KL weight; ``sg`` stops the gradient.

================================  ===========  ===============================================================
method                            teacher      loss terms
================================  ===========  ===============================================================
``ce``                            unused       ``CE(z_s, y)``
``label_smoothing``               unused       ``CE(z_s, (1-ε)·onehot + ε/K)``
``kd``                            frozen       ``(1-α)·CE(z_s, y) + α·T²·KL(p^T(z_t) ‖ p^T(z_s))``
``kd_learned_t``                  frozen       as ``pesf`` with ``z_a = z_t / τ``, one trainable ``τ``
``dml``                           trained      ``(1-α')·CE(z_s,y) + α'·T²·KL(p^T(sg z_t) ‖ p^T(z_s))`` and the
                                               same for the teacher with the roles swapped; both networks
                                               start from scratch (online); ``α' = dml_alpha`` (0.5)
``pesf``                          frozen       adapter: ``CE(z_a, y) + β·T²·KL(p^T(sg z_s) ‖ p^T(z_a))``;
                                               student: ``(1-α)·CE(z_s, y) + α·T²·KL(p^T(sg z_a) ‖ p^T(z_s))``
``pesf_adapter_unused``           frozen       adapter trained as in ``pesf``, but the student learns from
                                               ``z_t`` (the released CV code: adapted logits never reach it)
``pesf_adapter_ce``               frozen       as ``pesf`` but the adapter is trained on ``CE(z_a, y)`` only
``pesf_teacher_unfrozen``         trained      as ``pesf`` but the adapter's loss also trains the whole
                                               teacher (the released NLP code's ``required_grad`` typo)
================================  ===========  ===============================================================

The adapter's KL pulls the adapted teacher towards the (detached) student's distribution: the student
is the *target* of that term, as in ``KL(input=z_a, target=z_s)`` of the usual ``DistillKL(input,
target)`` code convention. That is what makes the soft labels "student-friendly": their sharpness
follows the student, while ``CE(z_a, y)`` keeps them correct.

The container :class:`KDModel` holds teacher, adapter (or temperature) and student, so ``fit`` trains
exactly the parameters that require grad. A teacher that a method keeps frozen stays in eval mode even
when ``fit`` calls ``model.train()`` (batch-norm statistics would otherwise drift), and after training
its state dict is compared bit for bit with a snapshot taken before.

Bad input is rejected before training starts (:func:`check_setup`): teacher/student/data class counts
that differ, an adapter whose input size is not the teacher's feature size, and a teacher with trainable
parameters when the method needs it frozen.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alignlab.core.errors import ConfigError, ModelError
from alignlab.core.io import write_json
from alignlab.core.manifest import make_result
from alignlab.core.progress import info
from alignlab.core.seed import derive_seed
from alignlab.distill.kd import LearnedTemperature, ce_loss, dml_loss, kd_kl, label_smoothing_loss
from alignlab.distill.pesf.adapter import LogitAdapter
from alignlab.distill.pesf.cost import PassCounter, training_memory
from alignlab.distill.pesf.data import ClassificationData
from alignlab.distill.pesf.diagnostics import diagnostics, plot_diagnostics
from alignlab.distill.pesf.models import ModelConfig, build_classifier, count_parameters
from alignlab.train.loop import TrainConfig, epoch_permutation, fit, load_best
from alignlab.train.runs import finish_run, start_run


@dataclass(frozen=True)
class MethodSpec:
    name: str
    description: str
    teacher: str  # "none" (no teacher), "frozen", "trained"
    head: str = "none"  # "none", "adapter", "temperature": what sits between teacher and student
    head_loss: str = "none"  # "none", "ce+kl", "ce"
    student_target: str = "none"  # "none" (labels only), "teacher", "adapted"
    student_loss: str = "kd"  # "ce", "ls" (label smoothing), "kd"
    teacher_init: str = "pretrained"  # "pretrained" or "scratch" (classic DML)


METHODS: dict[str, MethodSpec] = {
    m.name: m
    for m in (
        MethodSpec("ce", "student on the labels only (cross-entropy)", "none", student_loss="ce"),
        MethodSpec("label_smoothing", "student on smoothed labels, no teacher", "none", student_loss="ls"),
        MethodSpec(
            "kd", "vanilla KD from the frozen teacher at temperature T", "frozen", student_target="teacher"
        ),
        MethodSpec(
            "kd_learned_t",
            "KD from the frozen teacher rescaled by one learned temperature (trained like the PESF adapter)",
            "frozen",
            "temperature",
            "ce+kl",
            "adapted",
        ),
        MethodSpec(
            "dml",
            "deep mutual learning: wide and tiny network trained together from scratch (online)",
            "trained",
            student_target="teacher",
            teacher_init="scratch",
        ),
        MethodSpec(
            "pesf",
            "PESF-KD: frozen teacher + trained adapter whose logits the student learns from",
            "frozen",
            "adapter",
            "ce+kl",
            "adapted",
        ),
        MethodSpec(
            "pesf_adapter_unused",
            "released CV code: adapter trained, but the student learns from the raw teacher",
            "frozen",
            "adapter",
            "ce+kl",
            "teacher",
        ),
        MethodSpec(
            "pesf_adapter_ce",
            "PESF with the adapter trained on cross-entropy only (no KL to the student)",
            "frozen",
            "adapter",
            "ce",
            "adapted",
        ),
        MethodSpec(
            "pesf_teacher_unfrozen",
            "released NLP code's `required_grad` typo: the whole teacher trains with the adapter",
            "trained",
            "adapter",
            "ce+kl",
            "adapted",
        ),
    )
}


@dataclass
class DataConfig:
    name: str = "digits"  # digits | shapes
    split_seed: int = 0  # digits: the stratified split; shapes: the generated images
    n_train: int = 1500  # shapes only
    n_val: int = 500
    n_test: int = 1000
    image_size: int = 24
    n_colours: int = 4
    max_distractors: int = 1
    max_train: int | None = None  # keep only this many training examples (stratified); None: all

    def load(self) -> ClassificationData:
        from alignlab.distill.pesf.data import load_data

        if self.name == "shapes":
            data = load_data(
                "shapes",
                seed=self.split_seed,
                n_train=self.n_train,
                n_val=self.n_val,
                n_test=self.n_test,
                image_size=self.image_size,
                n_colours=self.n_colours,
                max_distractors=self.max_distractors,
            )
        else:
            data = load_data(self.name, seed=self.split_seed)
        if self.max_train is not None:
            data = data.subsample_train(self.max_train, seed=self.split_seed)
        return data


@dataclass
class TeacherConfig:
    """The over-confident teacher: a wide CNN trained long on CE with no weight decay."""

    width: int = 32
    epochs: int = 30
    lr: float = 3e-3
    batch_size: int = 64
    schedule: str = "cosine"  # cosine | constant ("constant" keeps pushing the logits up to the last step)

    def __post_init__(self) -> None:
        from alignlab.core.config import check_number

        for key in ("width", "epochs", "batch_size"):
            check_number(key, getattr(self, key), lo=1)
        check_number(
            "lr", self.lr, lo=0, lo_open=True, hi=10, fix="give a learning rate such as teacher.lr=0.003"
        )
        if self.schedule not in ("cosine", "constant"):
            raise ConfigError(
                f"schedule must be cosine or constant, got {self.schedule!r}",
                key="schedule",
                fix="choose cosine or constant",
            )


@dataclass
class KDConfig:
    method: str = "pesf"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student_width: int = 8
    epochs: int = 25
    batch_size: int = 64
    lr: float = 1e-2
    weight_decay: float = 1e-4
    temperature: float = 4.0  # T of every soft-label term
    alpha: float = 0.5  # weight of the KD term for the student; CE gets 1 - alpha (0.5: equal weights,
    # the ratio of the released PESF command, CE weight 1 and KD weight 1)
    dml_alpha: float = 0.5  # DML's KL weight for both networks (equal CE and KL weights, as in DML)
    label_smoothing: float = 0.1
    adapter_bottleneck: int = 16
    adapter_mode: str = "add"  # add | sub
    adapter_feature_dim: int | None = None  # None: the teacher's feature size (set it to pin a size)
    adapter_kl_weight: float = 1.0  # beta
    temperature_init: float = 1.0  # kd_learned_t: initial tau
    ece_bins: int = 15

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(
                f"unknown KD method {self.method!r}",
                key="method",
                fix=f"choose one of: {', '.join(METHODS)} (see `alignlab distill pesf methods`)",
            )
        from alignlab.core.config import check_number

        check_number("temperature", self.temperature, lo=0, lo_open=True)
        for name in ("alpha", "dml_alpha"):
            check_number(name, getattr(self, name), lo=0, hi=1)
        check_number("label_smoothing", self.label_smoothing, lo=0, hi=1, hi_open=True)
        for name in ("student_width", "epochs", "batch_size", "adapter_bottleneck", "ece_bins"):
            check_number(name, getattr(self, name), lo=1)
        check_number("lr", self.lr, lo=0, lo_open=True, hi=10, fix="give a learning rate such as lr=0.01")
        for name in ("weight_decay", "adapter_kl_weight"):
            check_number(name, getattr(self, name), lo=0)
        check_number("temperature_init", self.temperature_init, lo=0, lo_open=True)

    @property
    def spec(self) -> MethodSpec:
        return METHODS[self.method]

    def train_config(self) -> TrainConfig:
        # No gradient clipping: a global clip norm would couple the student's update to the adapter's
        # gradients, and the released-code ablation (adapter trained but unused) must leave the student
        # exactly as in vanilla KD.
        return TrainConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            weight_decay=self.weight_decay,
            select_metric="student_acc",
            select_mode="max",
            log_every=10,
            seed=self.seed,
            grad_clip=0.0,
        )


# --- the container ------------------------------------------------------------------------------------


class KDModel(nn.Module):
    """Teacher (optional), head (adapter, temperature or none) and student in one module.

    ``teacher_trainable`` says whether the method trains the teacher; when False the teacher stays in
    eval mode whatever ``train()`` is called with.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        head: nn.Module | None = None,
        teacher_trainable: bool = False,
    ):
        super().__init__()
        self.student = student
        self.teacher = teacher
        self.head = head
        self.teacher_trainable = teacher_trainable
        # A teacher pass ends at its head (the trainer calls features() and head() separately).
        self.counter = PassCounter(getattr(teacher, "head", teacher)) if teacher is not None else None

    def train(self, mode: bool = True) -> KDModel:
        super().train(mode)
        if self.teacher is not None and not self.teacher_trainable:
            self.teacher.eval()
        return self

    def _teacher_pass(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        t = self.teacher
        assert t is not None
        if hasattr(t, "features") and hasattr(t, "head"):
            h = t.features(x)
            return h, t.head(h)
        return None, t(x)  # a plain classifier: logits only (enough for every method but the adapter)

    def teacher_outputs(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(features or None, logits) of the teacher; without autograd when the teacher is frozen."""
        if self.teacher_trainable:
            return self._teacher_pass(x)
        with torch.no_grad():
            return self._teacher_pass(x)

    def adapted(self, h: torch.Tensor | None, zt: torch.Tensor) -> torch.Tensor:
        if isinstance(self.head, LogitAdapter):
            return self.head(h, zt)
        if isinstance(self.head, LearnedTemperature):
            return self.head(zt)
        return zt

    def trainable_report(self) -> dict[str, dict[str, int]]:
        """``{module: {"trainable": n, "total": n}}`` for teacher, head and student."""
        out = {}
        for name in ("teacher", "head", "student"):
            m = getattr(self, name)
            if m is not None:
                out[name] = {
                    "trainable": count_parameters(m, trainable_only=True),
                    "total": count_parameters(m),
                }
        return out


def freeze(module: nn.Module) -> nn.Module:
    """Turn off gradients of every parameter of ``module`` (and verify it), and put it in eval mode.

    Setting a misspelt attribute (``p.required_grad = False``) silently does nothing; this sets the real
    flag through ``requires_grad_`` and checks the result.
    """
    module.requires_grad_(False)
    module.eval()
    left = [n for n, p in module.named_parameters() if p.requires_grad]
    if left:  # pragma: no cover - requires_grad_ cannot fail on ordinary modules
        raise ModelError(f"could not freeze parameters: {', '.join(left[:5])}")
    return module


def _probe_shapes(model: nn.Module, x: torch.Tensor, role: str) -> tuple[int, int]:
    """(feature_dim, n_classes) of ``model`` found by a forward pass on two examples."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            if not hasattr(model, "features") or not hasattr(model, "head"):
                z = model(x)
                h = None
            else:
                h = model.features(x)
                z = model.head(h)
    except Exception as e:  # a shape error in a user's model: say which model and on what input
        raise ModelError(
            f"the {role} cannot run on the data's images {tuple(x.shape[1:])}: {e}",
            fix=f"build the {role} for {x.shape[1]}-channel {x.shape[-1]}×{x.shape[-1]} images",
        ) from None
    finally:
        model.train(was_training)
    if z.ndim != 2 or z.shape[0] != x.shape[0]:
        raise ModelError(f"the {role} must return logits [batch, classes], got {tuple(z.shape)}")
    return (int(h.shape[1]) if h is not None and h.ndim == 2 else -1), int(z.shape[1])


def check_setup(model: KDModel, spec: MethodSpec, data: ClassificationData) -> None:
    """Reject, before any training, a setup that cannot work; see the module docstring."""
    x = data.x_train[:2]
    _, k_student = _probe_shapes(model.student, x, "student")
    if k_student != data.n_classes:
        raise ModelError(
            f"the student predicts {k_student} classes but {data.name} has {data.n_classes}",
            fix="build the student with n_classes equal to the data's",
        )
    if spec.teacher == "none":
        return
    if model.teacher is None:
        raise ModelError(f"method {spec.name} needs a teacher", fix="pass a teacher model")
    f_teacher, k_teacher = _probe_shapes(model.teacher, x, "teacher")
    if k_teacher != k_student:
        raise ModelError(
            f"teacher predicts {k_teacher} classes but the student predicts {k_student}",
            where=f"method {spec.name}",
            fix="distil between models of the same label set",
        )
    if spec.head == "adapter":
        if f_teacher < 0:
            raise ModelError(
                "the teacher has no features()/head() pair for the adapter to read",
                fix="give the teacher features(x) -> [B, F] and head(h) -> logits",
            )
        adapter = model.head
        if not isinstance(adapter, LogitAdapter):
            raise ModelError(f"method {spec.name} needs a LogitAdapter head, got {type(adapter).__name__}")
        if adapter.feature_dim != f_teacher:
            raise ModelError(
                f"the adapter reads {adapter.feature_dim}-d features but the teacher's are {f_teacher}-d",
                where=f"method {spec.name}",
                fix=f"leave adapter_feature_dim unset (it follows the teacher) or set it to {f_teacher}",
            )
        if adapter.n_classes != k_teacher:
            raise ModelError(
                f"the adapter outputs {adapter.n_classes} classes but the teacher has {k_teacher}",
                fix="build the adapter with the teacher's class count",
            )
    trainable = [n for n, p in model.teacher.named_parameters() if p.requires_grad]
    if spec.teacher == "frozen" and trainable:
        raise ModelError(
            f"method {spec.name} needs a frozen teacher, but {len(trainable)} teacher parameter "
            f"tensors require grad (e.g. {trainable[0]})",
            fix="freeze it with alignlab.distill.pesf.trainer.freeze(teacher) — note that "
            "`p.required_grad = False` (a typo) freezes nothing",
        )
    if spec.teacher == "trained" and not trainable:
        raise ModelError(
            f"method {spec.name} trains the teacher, but none of its parameters require grad",
            fix="unfreeze it with teacher.requires_grad_(True)",
        )


# --- the task --------------------------------------------------------------------------------------


class KDTask:
    """The :func:`fit` task: batches of the training split, the method's loss terms, dev diagnostics."""

    def __init__(self, spec: MethodSpec, data: ClassificationData, cfg: KDConfig):
        self.spec, self.data, self.cfg = spec, data, cfg
        self.n = len(data.y_train)
        self.bs = cfg.batch_size
        self._epoch_start: float | None = None
        self._last_step: float | None = None
        self._steps_in_epoch = 0
        self._passes_at_epoch_start = (0, 0)
        self.epoch_train_s: list[float] = []

    def num_batches(self, epoch: int) -> int:
        full, rest = divmod(self.n, self.bs)
        return full + (1 if rest >= 2 else 0)  # a last batch of one would make batch-norm statistics useless

    def batch(self, epoch: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if index == 0 or self._epoch_start is None:
            self._epoch_start = time.perf_counter()
            self._steps_in_epoch = 0
        perm = epoch_permutation(self.n, derive_seed(self.cfg.seed, "kd-batches"), epoch)
        idx = torch.from_numpy(perm[index * self.bs : (index + 1) * self.bs])
        return self.data.x_train[idx], self.data.y_train[idx]

    def batch_size(self, batch: Any) -> int:
        return len(batch[1])

    def on_step(self, state: dict[str, Any]) -> None:
        """fit callback after every optimizer step (for the wall-clock of the training part of an epoch)."""
        self._last_step = time.perf_counter()
        self._steps_in_epoch += 1

    def loss(self, model: KDModel, batch: Any) -> dict[str, torch.Tensor]:
        x, y = batch
        spec, cfg = self.spec, self.cfg
        T, a = cfg.temperature, cfg.alpha
        if model.counter is not None:
            model.counter.active = True
        try:
            zs = model.student(x)
            if spec.student_loss == "ce":
                return {"ce_loss": ce_loss(zs, y)}
            if spec.student_loss == "ls":
                return {"ls_loss": label_smoothing_loss(zs, y, cfg.label_smoothing)}
            h, zt = model.teacher_outputs(x)
            if spec.name == "dml":
                return dml_loss(zs, zt, y, T=T, alpha=cfg.dml_alpha, names=("student", "teacher"))
            terms: dict[str, torch.Tensor] = {}
            za = model.adapted(h, zt)
            if spec.head_loss != "none":
                terms["adapter_ce_loss"] = ce_loss(za, y)
                if spec.head_loss == "ce+kl":
                    terms["adapter_kl_loss"] = cfg.adapter_kl_weight * kd_kl(za, zs.detach(), T).mean()
            target = za if spec.student_target == "adapted" else zt
            terms["ce_loss"] = (1.0 - a) * ce_loss(zs, y)
            terms["kd_loss"] = a * kd_kl(zs, target.detach(), T).mean()
            return terms
        finally:
            if model.counter is not None:
                model.counter.active = False

    def logits(self, model: KDModel, split: str) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        x, y = self.data.split(split)
        model.eval()
        out: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            chunks: dict[str, list[torch.Tensor]] = {}
            for i in range(0, len(x), 512):
                xb = x[i : i + 512]
                chunks.setdefault("student", []).append(model.student(xb))
                if model.teacher is not None:
                    h, zt = model._teacher_pass(xb)
                    chunks.setdefault("teacher", []).append(zt)
                    if model.head is not None:
                        chunks.setdefault("adapted", []).append(model.adapted(h, zt))
            out = {k: torch.cat(v) for k, v in chunks.items()}
        return out, y

    def metrics(self, model: KDModel, split: str) -> dict[str, float]:
        logits, y = self.logits(model, split)
        target = "adapted" if self.spec.student_target == "adapted" else "teacher"
        m = diagnostics(logits, y, self.cfg.temperature, self.cfg.ece_bins, target=target)
        if isinstance(model.head, LearnedTemperature):
            m["tau"] = model.head.tau
        return m

    def evaluate(self, model: KDModel) -> dict[str, float]:
        m = self.metrics(model, "val")
        if self._epoch_start is not None and self._last_step is not None:
            dt = self._last_step - self._epoch_start
            self.epoch_train_s.append(dt)
            m["train_s"] = dt
        if model.counter is not None and self._steps_in_epoch:
            f0, b0 = self._passes_at_epoch_start
            m["teacher_fwd_per_step"] = (model.counter.forward - f0) / self._steps_in_epoch
            m["teacher_bwd_per_step"] = (model.counter.backward - b0) / self._steps_in_epoch
            self._passes_at_epoch_start = (model.counter.forward, model.counter.backward)
        return m


# --- building and running ----------------------------------------------------------------------------


def build_kd_model(cfg: KDConfig, data: ClassificationData, teacher: nn.Module | None = None) -> KDModel:
    """Student (seeded), head and teacher wired for ``cfg.method``; freezes what the method freezes.

    Each module is initialised from its own derived seed, so e.g. ``kd`` and ``pesf_adapter_unused``
    start from the same student weights.
    """
    spec = cfg.spec
    torch.manual_seed(derive_seed(cfg.seed, "student-init"))
    student = build_classifier(ModelConfig("tiny", cfg.student_width), data.in_channels, data.n_classes)
    if spec.teacher == "none":
        return KDModel(student)
    if spec.teacher_init == "scratch":
        torch.manual_seed(derive_seed(cfg.seed, "online-teacher-init"))
        teacher = build_classifier(ModelConfig("wide", cfg.teacher.width), data.in_channels, data.n_classes)
    elif teacher is None:
        raise ModelError(f"method {spec.name} needs a trained teacher", fix="train one with train_teacher()")
    if spec.teacher == "frozen":
        freeze(teacher)
    else:
        teacher.requires_grad_(True)
    head: nn.Module | None = None
    if spec.head == "adapter":
        torch.manual_seed(derive_seed(cfg.seed, "adapter-init"))
        fdim = (
            cfg.adapter_feature_dim
            if cfg.adapter_feature_dim is not None
            else getattr(teacher, "feature_dim", 0)
        )
        if not fdim:
            raise ModelError(
                f"method {spec.name} puts an adapter on the teacher's features, but the teacher has "
                "no features()/head() pair (and no feature_dim)",
                fix="give the teacher features(x) -> [B, F], head(h) -> logits and feature_dim",
            )
        head = LogitAdapter(
            int(fdim),
            int(getattr(teacher, "n_classes", data.n_classes)),
            cfg.adapter_bottleneck,
            cfg.adapter_mode,
        )
    elif spec.head == "temperature":
        head = LearnedTemperature(cfg.temperature_init)
    return KDModel(student, teacher, head, teacher_trainable=spec.teacher == "trained")


def preflight(cfg: KDConfig, data: ClassificationData) -> None:
    """:func:`check_setup` on the configured models *before anything is trained*, the teacher included.

    A throwaway teacher of the configured architecture stands in for the one still to be trained, so a
    wrong adapter size or class count fails in a second instead of after the teacher's training. The
    global random state is left as it was.
    """
    spec = cfg.spec
    with torch.random.fork_rng(devices=[]):
        teacher = None
        if spec.teacher != "none" and spec.teacher_init == "pretrained":
            teacher = build_classifier(
                ModelConfig("wide", cfg.teacher.width), data.in_channels, data.n_classes
            )
        check_setup(build_kd_model(cfg, data, teacher), spec, data)


@dataclass
class RunResult:
    method: str
    seed: int
    metrics: dict[str, float]
    cost: dict[str, Any]
    trainable: dict[str, dict[str, int]]
    dev_curve: list[dict[str, Any]]
    teacher_unchanged: bool | None
    run_dir: Path


def _teacher_snapshot(model: KDModel) -> dict[str, torch.Tensor] | None:
    if model.teacher is None:
        return None
    return {k: v.detach().clone() for k, v in model.teacher.state_dict().items()}


def _same_state(model: KDModel, snapshot: dict[str, torch.Tensor] | None) -> bool | None:
    if snapshot is None or model.teacher is None:
        return None
    now = model.teacher.state_dict()
    return set(now) == set(snapshot) and all(torch.equal(now[k], snapshot[k]) for k in snapshot)


def run_kd(
    cfg: KDConfig,
    data: ClassificationData,
    run_dir: str | Path,
    teacher: nn.Module | None = None,
    *,
    model: KDModel | None = None,
    resume: bool = True,
    plot: bool = True,
) -> RunResult:
    """Train one student with ``cfg.method``; write ``results.json``, ``config.yaml``, ``plots/``.

    ``teacher`` is the pretrained teacher (not needed for ``ce``, ``label_smoothing``, ``dml``); a
    prebuilt ``model`` (a :class:`KDModel`) can be passed instead, e.g. to distil from your own models.
    The frozen teacher is deep-copied neither in nor out: it is used as given and verified unchanged.
    """
    started = time.time()
    run_dir = Path(run_dir)
    spec = cfg.spec
    if model is None:
        model = build_kd_model(cfg, data, teacher)
    check_setup(model, spec, data)
    trainable = model.trainable_report()
    info(
        f"{spec.name}: trainable parameters "
        + ", ".join(f"{k} {v['trainable']:,}/{v['total']:,}" for k, v in trainable.items())
    )
    task = KDTask(spec, data, cfg)
    tcfg = cfg.train_config()
    first = task.batch(0, 0)
    task._epoch_start = None
    memory = training_memory(model, task.loss, first)
    snapshot = _teacher_snapshot(model)
    start_run(run_dir, asdict(cfg))  # the run-folder sequence: alignlab.train.runs
    res = fit(
        model,
        task,
        tcfg,
        run_dir,
        resume=resume,
        config_for_hash=asdict(cfg),
        callbacks=[task.on_step],
        desc=f"{data.name} {spec.name} seed {cfg.seed}",
    )
    unchanged = _same_state(model, snapshot)
    if spec.teacher == "frozen" and unchanged is False:
        raise ModelError(
            f"the frozen teacher's weights or buffers changed during {spec.name} training",
            where=str(run_dir),
            fix="keep the teacher frozen and in eval mode (see KDModel.train)",
        )
    load_best(model, run_dir)
    test = task.metrics(model, "test")
    curve = res.dev_curve
    train_s = [r["train_s"] for r in curve if "train_s" in r]
    cost = {
        "trainable_params": sum(v["trainable"] for v in trainable.values()),
        "trainable_by_module": {k: v["trainable"] for k, v in trainable.items()},
        "teacher_fwd_per_step": _median(
            [r["teacher_fwd_per_step"] for r in curve if "teacher_fwd_per_step" in r]
        ),
        "teacher_bwd_per_step": _median(
            [r["teacher_bwd_per_step"] for r in curve if "teacher_bwd_per_step" in r]
        ),
        "train_s_per_epoch": _median(train_s),
        "memory": memory,
    }
    if plot and curve:
        plot_diagnostics(
            curve,
            run_dir / "plots" / "diagnostics.png",
            T=cfg.temperature,
            title=f"{data.name}: {spec.name} (seed {cfg.seed})",
        )
    metrics = {f"test_{k}": v for k, v in test.items()}
    metrics["best_epoch"] = (res.best or {}).get("epoch")
    from alignlab.core.io import to_jsonable

    result = make_result(
        task="kd-classification",
        model=f"{spec.name}",
        data=data.name,
        seed=cfg.seed,
        metrics=metrics,
        config=asdict(cfg),
        started=started,
        definitions={
            "test_student_acc": "student accuracy (fraction) on the test split, "
            "best epoch by dev student_acc",
            "gap": f"entropy(student) - entropy(soft-label source) at T={cfg.temperature}",
            "memory": "training-step memory accounting, see alignlab.distill.pesf.cost",
        },
        cost=cost,
        trainable=trainable,
        teacher_unchanged=unchanged,
        dev_curve=curve,
    )
    finish_run(run_dir, to_jsonable(result))
    return RunResult(spec.name, cfg.seed, metrics, cost, trainable, curve, unchanged, run_dir)


def _median(xs: list[float]) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    mid = len(s) // 2
    return float(s[mid]) if len(s) % 2 else float((s[mid - 1] + s[mid]) / 2)


# --- the teacher --------------------------------------------------------------------------------------


class TeacherTask:
    """Plain CE training of the teacher (no label smoothing, no weight decay: it is meant to be
    over-confident)."""

    def __init__(self, data: ClassificationData, batch_size: int, seed: int, T: float, n_bins: int = 15):
        self.data, self.bs, self.seed, self.T, self.n_bins = data, batch_size, seed, T, n_bins
        self.n = len(data.y_train)

    def num_batches(self, epoch: int) -> int:
        full, rest = divmod(self.n, self.bs)
        return full + (1 if rest >= 2 else 0)

    def batch(self, epoch: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        perm = epoch_permutation(self.n, derive_seed(self.seed, "teacher-batches"), epoch)
        idx = torch.from_numpy(perm[index * self.bs : (index + 1) * self.bs])
        return self.data.x_train[idx], self.data.y_train[idx]

    def loss(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        x, y = batch
        return {"ce_loss": ce_loss(model(x), y)}

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        x, y = self.data.x_val, self.data.y_val
        with torch.no_grad():
            z = torch.cat([model(x[i : i + 512]) for i in range(0, len(x), 512)])
        from alignlab.distill.pesf.diagnostics import sharpness_stats

        return sharpness_stats(z, y, self.T, self.n_bins)


def train_teacher(
    cfg: KDConfig, data: ClassificationData, run_dir: str | Path
) -> tuple[nn.Module, dict[str, Any]]:
    """Train (or, when ``run_dir`` holds a finished run, load) the wide CNN teacher for ``cfg.seed``.

    Returns the teacher in eval mode and a summary (accuracy, entropy and max probability at ``T``, ECE
    on the test split; parameters; wall time).
    """
    started = time.time()
    t = cfg.teacher
    torch.manual_seed(derive_seed(cfg.seed, "teacher-init"))
    teacher = build_classifier(ModelConfig("wide", t.width), data.in_channels, data.n_classes)
    tcfg = TrainConfig(
        epochs=t.epochs,
        batch_size=t.batch_size,
        lr=t.lr,
        weight_decay=0.0,
        grad_clip=0.0,
        log_every=20,
        seed=cfg.seed,
        schedule=t.schedule,
    )
    hash_cfg = {"teacher": asdict(t), "seed": cfg.seed, "data": asdict(cfg.data), "kind": "pesf-teacher"}
    res = fit(
        teacher,
        TeacherTask(data, t.batch_size, cfg.seed, cfg.temperature),
        tcfg,
        run_dir,
        config_for_hash=hash_cfg,
        desc=f"{data.name} teacher seed {cfg.seed}",
    )
    teacher.eval()
    x, y = data.x_test, data.y_test
    from alignlab.distill.pesf.diagnostics import sharpness_stats

    with torch.no_grad():
        z = torch.cat([teacher(x[i : i + 512]) for i in range(0, len(x), 512)])
    summary = {
        "test": sharpness_stats(z, y, cfg.temperature, cfg.ece_bins),
        "test_T1": sharpness_stats(z, y, 1.0, cfg.ece_bins),
        "params": count_parameters(teacher),
        "epochs": t.epochs,
        "steps": res.steps,
        "wall_s": res.wall_s if res.wall_s else round(time.time() - started, 3),
        "train_s_per_epoch": (res.wall_s / t.epochs) if res.wall_s else None,
    }
    write_json(Path(run_dir) / "teacher.json", summary)
    return teacher, summary


__all__ = [
    "METHODS",
    "MethodSpec",
    "KDConfig",
    "DataConfig",
    "TeacherConfig",
    "KDModel",
    "KDTask",
    "freeze",
    "check_setup",
    "preflight",
    "build_kd_model",
    "run_kd",
    "train_teacher",
    "RunResult",
]
