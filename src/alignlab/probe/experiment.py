"""``alignlab experiment snare``: do structured hard negatives teach structure, and do SNARE's findings hold?

The claims (SNARE, Wang et al. 2023; NegCLIP-style training): vision–language models ignore word order,
handle negation and spatial relations poorly, and training with linguistically structured hard negatives
teaches structure. Tested on ShapesWorld, where every probe option is labelled by the truth evaluator.

Design (every trained arm is a tiny dual encoder trained with every seed, same budget, same code path):

* **Trained arms.** ``base`` (in-batch negatives; training data with ``negation_rate`` true negated
  captions), ``hardneg`` (the same plus one compositional hard negative per caption:
  :mod:`alignlab.probe.negatives`), and one ``negrate-<r>`` arm per value of ``negation_sweep`` (``base``
  trained on data with that share of negated captions): the negation-rate sweep.
* **Controls.** ``order-blind`` — each ``base`` model reading every caption as its words in alphabetical
  order: blind to word order by construction (the negative control); ``scene-oracle`` — parses the
  caption and evaluates it on the image's scene graph: it truly depends on word order (the positive
  control: the probe can see order when a scorer uses it; also the ceiling); ``bow-oracle`` — knows the
  objects but reads a bag of words (the floor a scorer that sees the image but not structure reaches);
  ``best-blind`` — per seed, the best of the blind baselines of the ``base`` model (its text side with a
  null, mean or shuffled image; never-pick-*not*, shorter, unigram LM).
* **Defect arms** (:mod:`alignlab.probe.defects`): the ``base`` models scored with one of the released
  SNARE code's defects put back — ``base:ties-correct`` (a tie with the gold caption counts as right),
  ``base:affirmative-key`` (the negation answer is always the affirmative sentence),
  ``base:substring-shuffles`` (word-order distractors written back by substring replacement); and
  ``order-blind:ties-correct``. Each defect arm is paired with its fixed arm by seed, so the claim
  measures how much the defect changes the result.

Metrics (per training run = per seed; the unit of the analysis, :mod:`alignlab.core.analysis`):
:data:`METRICS`. "Ignores word order" is an equivalence claim on ``order_content_pct`` (gold vs its
content-word shuffle, ties ½): a scorer blind to order sits at exactly 50 there, whatever else it does.
SNARE's own 4-way accuracy is not used for that claim: a model can sit *below* its 25% chance without
preferring any order — for instance when the shuffles' scores spread more widely than the gold caption's,
so that one of three shuffles often tops the gold even when each comparison alone is a coin flip (the
report measures both spreads) — which makes "equal to chance" the wrong test of "ignores order" there.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alignlab.core.config import experiment_config as _experiment_config
from alignlab.core.errors import ConfigError
from alignlab.core.io import read_json, write_json
from alignlab.core.manifest import build_manifest, cache_key
from alignlab.core.progress import info

DESCRIPTION = (
    "SNARE: tiny dual encoders with vs without structured hard negatives, a negation-rate sweep, "
    "the released code's three defects as arms, an order-blind and a scene-oracle control"
)

SUMMARY = {
    "paper": "SNARE (Wang et al. 2023)",
    "claim": "structured hard negatives teach structure; VLMs ignore word order, negation, relations; "
    "the released code's defects change the scores",
}

EVAL_VERSION = "snare-eval-2"  # bump when the per-run record's contents change

METRICS: dict[str, str] = {
    "order_content_pct": "word order: share of word-order items where the gold caption scores above the same "
    "content words in another order (its content-word shuffle); a tie counts ½",
    "order_function_pct": "the same against the function-word shuffle",
    "order_all_pct": "the same against the all-word shuffle",
    "word_order_acc_pct": (
        "SNARE semantic structure: 4-way accuracy (gold vs three shuffles; ties count as wrong)"
    ),
    "negation_acc_pct": "negation: accuracy on the balanced 2×2 (affirmative vs negated sentence, one true)",
    "negation_affirmative_true_pct": "negation items where the affirmative sentence is the true one",
    "negation_negated_true_pct": "negation items where the negated sentence is the true one",
    "ownership_acc_pct": "attribute ownership: accuracy (attributes or values swapped)",
    "relation_acc_pct": "relationship composition: accuracy (subject/object swap, 4-way relation choice)",
}
CLAIMED_METRICS = ("order_content_pct", "word_order_acc_pct", "negation_acc_pct", "relation_acc_pct")

DEFECT_ARMS = ("base:ties-correct", "base:affirmative-key", "base:substring-shuffles")
CONTROL_ARMS = ("order-blind", "order-blind:ties-correct", "best-blind", "bow-oracle", "scene-oracle")


def sweep_arm(rate: float) -> str:
    return f"negrate-{rate:g}"


def _claim(
    name: str, treatment: str, control: str, metric: str, direction: str, margin: float
) -> dict[str, Any]:
    return {
        "name": name,
        "treatment": treatment,
        "control": control,
        "metric": metric,
        "direction": direction,
        "margin": margin,
    }


def default_claims() -> list[dict[str, Any]]:
    """The pre-registered plan (margins in percentage points, fixed before the full run).

    5 points is the smallest change that matters on these 50–100-item tasks (a tenth of the 50% chance of
    a two-way choice); 1 point for the claim that ties do not occur for a trained model with real-valued
    scores (a mechanism, not an effect size).
    """
    return [
        _claim(
            "positive control: the probe sees word order",
            "scene-oracle",
            "order-blind",
            "order_content_pct",
            "improves",
            5,
        ),
        _claim(
            "SNARE: the base model ignores content-word order",
            "base",
            "order-blind",
            "order_content_pct",
            "equivalent",
            5,
        ),
        _claim(
            "NegCLIP: hard negatives teach content-word order",
            "hardneg",
            "base",
            "order_content_pct",
            "improves",
            5,
        ),
        _claim(
            "NegCLIP: hard negatives raise SNARE word-order accuracy",
            "hardneg",
            "base",
            "word_order_acc_pct",
            "improves",
            5,
        ),
        _claim(
            "SNARE: weak negation (base no better than its best blind baseline)",
            "base",
            "best-blind",
            "negation_acc_pct",
            "equivalent",
            5,
        ),
        _claim(
            "SNARE: weak relations (base no better than its best blind baseline)",
            "base",
            "best-blind",
            "relation_acc_pct",
            "equivalent",
            5,
        ),
        _claim(
            "negated training captions teach negation", "base", "negrate-0", "negation_acc_pct", "improves", 5
        ),
        _claim(
            "defect: ties counted correct make an order-blind model score high",
            "order-blind:ties-correct",
            "order-blind",
            "word_order_acc_pct",
            "improves",
            5,
        ),
        _claim(
            "defect: ties counted correct leave a trained model unchanged",
            "base:ties-correct",
            "base",
            "word_order_acc_pct",
            "equivalent",
            1,
        ),
        _claim(
            "defect: an always-affirmative answer key inflates negation accuracy",
            "base:affirmative-key",
            "base",
            "negation_acc_pct",
            "improves",
            5,
        ),
        _claim(
            "defect: substring-corrupted shuffles inflate word-order accuracy",
            "base:substring-shuffles",
            "base",
            "word_order_acc_pct",
            "improves",
            5,
        ),
    ]


@dataclass
class SnareExperimentConfig:
    seeds: list[int] = field(default_factory=lambda: list(range(10)))
    train_images: int = 2000
    retrieval_images: int = 100  # held-out test images for the R@1 training-health check
    data_seed: int = 0
    negation_rate: float = (
        0.4  # ShapesWorld weight of true negated captions for base/hardneg (~7% of captions)
    )
    negation_sweep: list[float] = field(default_factory=lambda: [0.0, 1.6])  # extra base arms (0%, ~24%)
    epochs: int = 10
    batch_size: int = 64
    lr: float = 3e-3
    warmup_steps: int = 10
    dual_model: dict[str, Any] = field(
        default_factory=lambda: {
            "image_size": 32,
            "width": 64,
            "embed_dim": 64,
            "image_channels": [16, 32],
            "text_layers": 1,
            "heads": 2,
            "image_stem": 0,
            "image_stage_depth": 1,
        }
    )
    negative_kinds: list[str] = field(default_factory=lambda: ["swap_attribute", "swap_relation", "shuffle"])
    probe_items_per_category: int = 50
    probe_seed: int = 1000
    threads: int = 1  # torch threads, pinned for the whole run
    analysis_resamples: int = 2000
    claims: list[dict[str, Any]] = field(default_factory=default_claims)


QUICK = dict(
    seeds=[0, 1],
    train_images=40,
    retrieval_images=10,
    epochs=1,
    batch_size=16,
    warmup_steps=1,
    probe_items_per_category=3,
    analysis_resamples=200,
    dual_model={
        "image_size": 32,
        "width": 32,
        "embed_dim": 32,
        "image_channels": [8, 16],
        "text_layers": 1,
        "heads": 2,
        "image_stem": 0,
        "image_stage_depth": 1,
    },
)


def experiment_config(
    *, quick: bool, seeds: list[int] | None = None, overrides: dict[str, Any] | None = None
) -> SnareExperimentConfig:
    """Quick (or full) settings with ``--set`` overrides merged deeply
    (:func:`alignlab.core.config.experiment_config`)."""
    return _experiment_config(SnareExperimentConfig, QUICK, quick=quick, seeds=seeds, overrides=overrides)


def trained_arms(exp: SnareExperimentConfig) -> list[str]:
    return ["base", "hardneg", *(sweep_arm(r) for r in exp.negation_sweep)]


def arms(exp: SnareExperimentConfig) -> list[str]:
    """Every arm the experiment runs (what a claim may compare)."""
    return [*trained_arms(exp), *DEFECT_ARMS, *CONTROL_ARMS]


def _rate(exp: SnareExperimentConfig, arm: str) -> float:
    if arm.startswith("negrate-"):
        return next(r for r in exp.negation_sweep if sweep_arm(r) == arm)
    return exp.negation_rate


def _check(exp: SnareExperimentConfig) -> list[Any]:
    """Validate the config and the declared claims before any data or training."""
    from alignlab.core.analysis import claims_from_config

    if not exp.seeds:
        raise ConfigError("no seeds", where="config key seeds", fix="give at least one seed")
    names = [sweep_arm(r) for r in exp.negation_sweep]
    if len(set(names)) != len(names) or any(r == exp.negation_rate for r in exp.negation_sweep):
        raise ConfigError(
            f"negation_sweep {exp.negation_sweep} repeats a rate (base uses {exp.negation_rate:g})",
            where="config key negation_sweep",
            fix="list distinct rates other than negation_rate",
        )
    return claims_from_config(exp.claims, arms=arms(exp), metrics=list(METRICS))


# --- data, probe set, models -------------------------------------------------------------------------------


def _train_data(exp: SnareExperimentConfig, rate: float) -> Any:
    from alignlab.data.pairs import from_shapes
    from alignlab.data.shapes import ShapesConfig, ShapesWorld

    world = ShapesWorld(ShapesConfig(negation_rate=rate))
    return from_shapes(
        world.generate(exp.train_images, exp.data_seed, "train", desc=f"ShapesWorld train ({rate:g})"),
        name=f"shapes-train-neg{rate:g}",
    )


def _test_data(exp: SnareExperimentConfig) -> Any:
    from alignlab.data.pairs import from_shapes
    from alignlab.data.shapes import ShapesConfig, ShapesWorld

    world = ShapesWorld(ShapesConfig(negation_rate=exp.negation_rate))
    return from_shapes(
        world.generate(exp.retrieval_images, exp.data_seed, "test", desc="ShapesWorld test"),
        name="shapes-test",
    )


def _probe(exp: SnareExperimentConfig, out: Path) -> Any:
    from alignlab.probe.build_shapes import ShapesProbeConfig, build_shapes_probe
    from alignlab.probe.items import load_probe

    cfg = ShapesProbeConfig(items_per_category=exp.probe_items_per_category, seed=exp.probe_seed)
    folder = out / "probe"
    manifest = folder / "probe.json"
    if not manifest.exists() or read_json(manifest).get("config") != asdict(cfg):
        build_shapes_probe(cfg, folder)
    return load_probe(folder)


def _retrieval(model: Any, test: Any) -> dict[str, float]:
    """R@1 both ways on held-out images with truth relevance (a training-health check; ties count against)."""
    import torch

    with torch.no_grad():
        s = model.score(test.load_images(), test.captions).double().cpu()  # [images, captions]
    rel = torch.zeros_like(s, dtype=torch.bool)
    for i, caps in enumerate(test.relevance):
        rel[i, caps] = True
    neg_inf = torch.tensor(float("-inf"), dtype=s.dtype)
    best_rel = torch.where(rel, s, neg_inf).max(dim=1).values
    best_irr = torch.where(rel, neg_inf, s).max(dim=1).values
    own = torch.where(rel, s, neg_inf).max(dim=0).values
    other = torch.where(rel, neg_inf, s).max(dim=0).values
    return {
        "i2t_R@1": 100 * (best_rel > best_irr).double().mean().item(),
        "t2i_R@1": 100 * (own > other).double().mean().item(),
    }


class OrderBlind:
    """A model reading every caption as its words in alphabetical order: blind to word order by
    construction."""

    score_semantics = "logit"

    def __init__(self, model: Any):
        self.model = model
        self.is_dual = bool(getattr(model, "is_dual", False))
        self.name = f"order-blind {getattr(model, 'name', type(model).__name__)}"

    @staticmethod
    def canonical(text: str) -> str:
        from alignlab.probe.perturb import is_word, tokenize

        return " ".join(sorted(t.lower() for t in tokenize(text) if is_word(t)))

    def eval(self) -> OrderBlind:
        if hasattr(self.model, "eval"):
            self.model.eval()
        return self

    def score(self, images: Any, texts: list[str]) -> Any:
        return self.model.score(images, [self.canonical(t) for t in texts])

    def score_pairs(self, images: Any, texts: list[str]) -> Any:
        return self.model.score_pairs(images, [self.canonical(t) for t in texts])


def _subset(ps: Any, items: list[Any]) -> Any:
    from alignlab.probe.items import ProbeSet

    return ProbeSet(items=items, path=ps.path, root=ps.root, sha256=ps.sha256, manifest=ps.manifest)


def _scores(model: Any, ps: Any, images: Any) -> list[list[list[float]]]:
    from alignlab.probe.evaluate import score_items

    return [np.asarray(s, dtype=float).tolist() for s in score_items(model, ps, images)]


def _train_cfg(exp: SnareExperimentConfig, arm: str, seed: int) -> Any:
    from alignlab.probe.negatives import ProbeTrainConfig
    from alignlab.train.loop import TrainConfig

    return ProbeTrainConfig(
        arch="tiny-dual",
        model_config=dict(exp.dual_model),
        hard_negatives=arm == "hardneg",
        negative_kinds=list(exp.negative_kinds),
        seed=seed,
        train=TrainConfig(
            epochs=exp.epochs,
            batch_size=exp.batch_size,
            lr=exp.lr,
            warmup_steps=exp.warmup_steps,
            log_every=50,
        ),
    )


def _one_run(
    exp: SnareExperimentConfig,
    arm: str,
    seed: int,
    train: Any,
    test: Any,
    ps: Any,
    images: Any,
    sub_ps: Any,
    sub_images: Any,
    run_dir: Path,
) -> dict[str, Any]:
    """Train (or load) one model and score the probe items with it; cached in ``run_dir/record.json``.

    The record holds the raw scores (the model, its three image-blind versions, its order-blind version,
    and the substring-shuffle items), from which every arm's metrics are computed.
    """
    from alignlab.probe.baselines import IMAGE_BLINDS
    from alignlab.probe.evaluate import blind_images
    from alignlab.probe.negatives import train_probe_model

    cfg = _train_cfg(exp, arm, seed)
    key = cache_key(
        {
            "train": asdict(cfg),
            "negation_rate": _rate(exp, arm),
            "train_images": exp.train_images,
            "data_seed": exp.data_seed,
            "retrieval_images": exp.retrieval_images,
            "items": ps.sha256,
            "substring_items": sub_ps.sha256,
            "eval": EVAL_VERSION,
        }
    )
    cached = run_dir / "record.json"
    if cached.exists():
        rec = read_json(cached)
        if rec.get("cache_key") == key:
            return rec
    if run_dir.exists():  # another config or older code: never reuse its checkpoints
        shutil.rmtree(run_dir)
    model, train_info = train_probe_model(cfg, train, run_dir)
    scores = {"model": _scores(model, ps, images)}
    for b in IMAGE_BLINDS:
        scores[b] = _scores(model, ps, blind_images(b, images, seed))
    scores["order_blind"] = _scores(OrderBlind(model), ps, images)
    scores["substring"] = _scores(model, sub_ps, sub_images)
    rec = {
        "arm": arm,
        "seed": seed,
        "cache_key": key,
        "items_sha256": ps.sha256,
        "train": train_info,
        "retrieval": _retrieval(model, test),
        "scores": scores,
    }
    write_json(cached, rec)
    return rec


# --- per-item values ---------------------------------------------------------------------------------------


def _acc(row: np.ndarray, c: int, ties: str) -> float:
    top = row.max()
    if row[c] < top:
        return 0.0
    k = int((row == top).sum())
    if k == 1:
        return 1.0
    return {"strict": 0.0, "expected": 1.0 / k, "correct": 1.0}[ties]


def _pairwise(row: np.ndarray, c: int, j: int, ties: str) -> float:
    if row[c] > row[j]:
        return 1.0
    if row[c] < row[j]:
        return 0.0
    return 1.0 if ties == "correct" else 0.5


def item_values(
    items: list[Any], scores: list[Any], *, ties: str = "strict", affirmative_key: bool = False
) -> dict[str, list[float]]:
    """Per-item values of every metric (:data:`METRICS`, as 0–1 per item), in item order.

    ``ties``: ``strict`` (alignlab: a tie is wrong), ``expected`` (a k-way tie earns 1/k: blind heuristics
    and the bag-of-words oracle) or ``correct`` (the released defect: a tie with the gold counts as right).
    ``affirmative_key``: negation items keyed to their affirmative option (the released defect).
    """
    from alignlab.probe.defects import affirmative_key as rekey

    out: dict[str, list[float]] = {m: [] for m in METRICS}
    for it, s in zip(items, scores, strict=True):
        if it.format != "choice" or it.scoring != "accuracy":
            continue
        if affirmative_key and it.task == "negation":
            it = rekey(it)
        row = np.asarray(s, dtype=float)[0]
        c = int(it.correct)
        acc = _acc(row, c, ties)
        for name in _accuracy_metrics(it):
            out[name].append(acc)
        if it.task == "semantic_structure":
            for kind in ("content", "function", "all"):
                j = it.option_kinds.index(f"shuffle_{kind}") if f"shuffle_{kind}" in it.option_kinds else None
                if j is not None:
                    out[f"order_{kind}_pct"].append(_pairwise(row, c, j, ties))
    return out


def _accuracy_metrics(it: Any) -> list[str]:
    """The accuracy metrics an item counts towards (its task's, and negation's per-category one)."""
    return {
        "semantic_structure": ["word_order_acc_pct"],
        "negation": ["negation_acc_pct", f"negation_{it.category}_pct"],
        "attribute_ownership": ["ownership_acc_pct"],
        "relationship_composition": ["relation_acc_pct"],
    }.get(it.task, [])


def _spread(items: list[Any], scores: list[Any]) -> dict[str, float]:
    """On word-order items: how far the gold caption's score and the shuffles' scores lie from the item's
    mean score (mean absolute deviation, averaged over items), and how often the gold scores lowest (%)."""
    gold, shuf, lowest = [], [], []
    for it, sc in zip(items, scores, strict=True):
        if it.task != "semantic_structure" or it.format != "choice":
            continue
        row = np.asarray(sc, dtype=float)[0]
        z = np.abs(row - row.mean())
        c = int(it.correct)
        gold.append(z[c])
        shuf.append(float(np.mean(np.delete(z, c))))
        lowest.append(float(row[c] < np.delete(row, c).min()))
    if not gold:
        return {}
    return {
        "gold_dev": float(np.mean(gold)),
        "shuffle_dev": float(np.mean(shuf)),
        "gold_lowest_pct": 100.0 * float(np.mean(lowest)),
    }


def _pct(values: dict[str, list[float]]) -> dict[str, float]:
    return {m: 100.0 * float(np.mean(v)) for m, v in values.items() if v}


def _chance(ps: Any) -> dict[str, float]:
    """Expected value of uniform random scores for each metric (mean of 1/#options; 50 for a comparison)."""
    by: dict[str, list[float]] = {m: [] for m in METRICS}
    for it in ps.items:
        if it.format != "choice" or it.scoring != "accuracy":
            continue
        c = 1.0 / len(it.options)
        for name in _accuracy_metrics(it):
            by[name].append(c)
        if it.task == "semantic_structure":
            for kind in ("content", "function", "all"):
                by[f"order_{kind}_pct"].append(0.5)
    return _pct(by)


# --- run ---------------------------------------------------------------------------------------------------


def run(
    out: Path, *, quick: bool = False, seeds: list[int] | None = None, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Run the experiment; after every seed the results so far go to ``out/partial/`` (results.json and
    report.md, the same analysis on the finished seeds), and at the end to ``out/results.json``."""
    from alignlab.core.results import write_results
    from alignlab.core.threads import torch_threads

    started, cpu0 = time.time(), time.process_time()
    exp = experiment_config(quick=quick, seeds=seeds, overrides=overrides)
    claims = _check(exp)  # a plan that cannot be analysed fails here, before any data or training
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    def emit(result: dict[str, Any], final: bool) -> dict[str, Any]:
        result["manifest"] = build_manifest(
            config=asdict(exp), started=started, cpu_s=round(time.process_time() - cpu0, 1)
        )
        return write_results(out if final else out / "partial", result, render_report)

    with torch_threads(exp.threads):
        return _run(exp, claims, out, quick, emit)


def _run(exp: SnareExperimentConfig, claims: list[Any], out: Path, quick: bool, emit: Any) -> dict[str, Any]:
    from alignlab.probe.baselines import HEURISTICS, BagOfWordsOracle, SceneGraphOracle, heuristic_scorer
    from alignlab.probe.defects import substring_items
    from alignlab.probe.evaluate import load_all_images
    from alignlab.probe.items import items_hash

    ps = _probe(exp, out)
    images = load_all_images(ps)
    sub_items, sub_stats = substring_items(ps.items, seed=exp.probe_seed)
    # The probe set with its word-order items rebuilt by substring replacement (same ids, same order).
    by_id = {it.id: it for it in sub_items}
    sub_all = [by_id.get(it.id, it) for it in ps.items]
    sub_ps = _subset(ps, sub_all)
    sub_ps.sha256 = items_hash(sub_all)
    test = _test_data(exp)
    items = ps.items
    # Oracles (deterministic: the same value for every seed).
    scene = SceneGraphOracle.from_probe(ps)
    bow = BagOfWordsOracle.from_probe(ps, tie_break=False)
    oracle_vals = {
        "scene-oracle": item_values(items, _scores(scene, ps, images)),
        "bow-oracle": item_values(items, _scores(bow, ps, images), ties="expected"),
    }
    trains, heur = {}, {}
    for arm in trained_arms(exp):
        rate = _rate(exp, arm)
        trains[arm] = _train_data(exp, rate)
        heur[arm] = {
            h: item_values(
                items, _scores(heuristic_scorer(h, trains[arm].captions, 0), ps, images), ties="expected"
            )
            for h in HEURISTICS
        }

    st = _State(values={a: {} for a in arms(exp)})
    done: list[int] = []
    stored: dict[str, Any] = {}
    for s in exp.seeds:  # seeds outermost: a run stopped early still has whole seeds
        for arm in trained_arms(exp):
            info(f"== snare experiment: seed {s}, {arm} (negation_rate {_rate(exp, arm):g})")
            rec = _one_run(
                exp, arm, s, trains[arm], test, ps, images, sub_ps, images, out / "runs" / arm / f"seed-{s}"
            )
            _collect(st, arm, s, rec, items, sub_all, heur[arm], oracle_vals)
        done.append(s)
        final = len(done) == len(exp.seeds)
        stored = emit(_assemble(exp, claims, st, done, ps, sub_stats, quick), final)
    return stored


@dataclass
class _State:
    values: dict[str, dict[int, dict[str, list[float]]]]
    blinds_of: dict[str, dict[int, dict[str, dict[str, float]]]] = field(default_factory=dict)
    best_blind_of: dict[str, dict[int, dict[str, str]]] = field(default_factory=dict)
    health: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)


def _collect(
    st: _State,
    arm: str,
    s: int,
    rec: dict[str, Any],
    items: list[Any],
    sub_all: list[Any],
    heur: dict[str, dict[str, list[float]]],
    oracle_vals: dict[str, dict[str, list[float]]],
) -> None:
    """Every arm's per-item values that one trained run gives."""
    from alignlab.probe.baselines import IMAGE_BLINDS

    values = st.values
    sc = rec["scores"]
    values[arm][s] = item_values(items, sc["model"])
    per_blind = {b: item_values(items, sc[b]) for b in IMAGE_BLINDS} | heur
    st.blinds_of.setdefault(arm, {})[s] = {b: _pct(v) for b, v in per_blind.items()}
    best_vals: dict[str, list[float]] = {}
    best_name: dict[str, str] = {}
    for m in METRICS:
        cands = {b: v[m] for b, v in per_blind.items() if v[m]}
        if cands:
            b = max(cands, key=lambda k: (float(np.mean(cands[k])), k))
            best_vals[m], best_name[m] = cands[b], b
    st.best_blind_of.setdefault(arm, {})[s] = best_name
    st.health.setdefault(arm, {})[s] = {
        "retrieval": rec["retrieval"],
        "train": rec["train"],
        "spread": _spread(items, sc["model"]),
    }
    defects = {
        "ties-correct": item_values(items, sc["model"], ties="correct"),
        "affirmative-key": item_values(items, sc["model"], affirmative_key=True),
        "substring-shuffles": item_values(sub_all, sc["substring"]),
    }
    if arm == "base":
        values["best-blind"][s] = best_vals
        values["order-blind"][s] = item_values(items, sc["order_blind"])
        values["order-blind:ties-correct"][s] = item_values(items, sc["order_blind"], ties="correct")
        for d, v in defects.items():
            values[f"base:{d}"][s] = v
        for name, v in oracle_vals.items():
            values[name][s] = v
    # Exploratory: every defect (and the order-blind reading, and the best blind) on every trained arm.
    values.setdefault(f"{arm}:order-blind", {})[s] = item_values(items, sc["order_blind"])
    for d, v in defects.items():
        values.setdefault(f"{arm}:{d}", {})[s] = v
    values.setdefault(f"{arm}:best-blind", {})[s] = best_vals


def _assemble(
    exp: SnareExperimentConfig,
    claims: list[Any],
    st: _State,
    seeds: list[int],
    ps: Any,
    sub_stats: dict[str, int],
    quick: bool,
) -> dict[str, Any]:
    """The results dict of the finished ``seeds``: per-seed numbers, the analysed claims, supporting
    numbers."""
    from alignlab.core.analysis import analyse_metrics

    values, health = st.values, st.health
    # One number per run and metric, aligned with the seeds; the per-item vectors make the CI hierarchical.
    runs = {
        m: {
            a: {s: 100.0 * float(np.mean(v[s][m])) for s in seeds if v.get(s, {}).get(m)}
            for a, v in values.items()
        }
        for m in METRICS
    }
    items_by = {
        m: {
            a: {s: [100.0 * x for x in v[s][m]] for s in seeds if v.get(s, {}).get(m)}
            for a, v in values.items()
        }
        for m in CLAIMED_METRICS
    }
    rows = analyse_metrics(
        claims,
        {m: {a: r for a, r in runs[m].items() if r} for m in CLAIMED_METRICS},
        {m: {a: r for a, r in items_by[m].items() if r} for m in CLAIMED_METRICS},
        n_resamples=exp.analysis_resamples,
        seed=0,
    )
    n_items = {m: len(values["base"][seeds[0]][m]) for m in METRICS}
    return {
        "experiment": "snare",
        "quick": quick,
        "config": asdict(exp),
        "partial": len(seeds) < len(exp.seeds),
        "arms": {
            "trained": trained_arms(exp),
            "defects": list(DEFECT_ARMS),
            "controls": list(CONTROL_ARMS),
            "claimed": arms(exp),
        },
        "metrics": METRICS,
        "claimed_metrics": list(CLAIMED_METRICS),
        "n_items": n_items,
        "probe": {
            "sha256": ps.sha256,
            "n_items": len(ps.items),
            "counts": ps.manifest.get("counts"),
            "build_stats": ps.manifest.get("build_stats"),
            "substring_build": sub_stats,
        },
        "seeds": list(seeds),
        "runs": {
            m: {a: [r.get(s) for s in seeds] for a, r in by_arm.items() if r} for m, by_arm in runs.items()
        },
        "chance": _chance(ps),
        "best_blind_names": {
            arm: {m: sorted({bb[s].get(m, "") for s in seeds} - {""}) for m in METRICS}
            for arm, bb in st.best_blind_of.items()
        },
        "blinds": {
            arm: {
                b: {m: float(np.mean([bo[s][b][m] for s in seeds])) for m in bo[seeds[0]][b]}
                for b in bo[seeds[0]]
            }
            for arm, bo in st.blinds_of.items()
        },
        "health": {
            arm: {
                "i2t_R@1": [h[s]["retrieval"]["i2t_R@1"] for s in seeds],
                "t2i_R@1": [h[s]["retrieval"]["t2i_R@1"] for s in seeds],
                "steps": h[seeds[0]]["train"]["steps"],
                "negatives": h[seeds[0]]["train"].get("negatives", {}),
                "train_wall_s": [h[s]["train"]["wall_s"] for s in seeds],
                **{
                    k: [h[s]["spread"].get(k) for s in seeds]
                    for k in ("gold_dev", "shuffle_dev", "gold_lowest_pct")
                },
            }
            for arm, h in health.items()
        },
        "claims": rows,
    }


# --- the report --------------------------------------------------------------------------------------------


def _mean_sd(xs: list[float | None]) -> tuple[float, float, int]:
    v = np.array([x for x in xs if x is not None], dtype=float)
    if v.size == 0:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, int(v.size)


def _ms(xs: list[float | None] | None) -> str:
    if not xs:
        return "—"
    m, sd, n = _mean_sd(xs)
    if n == 0:
        return "—"
    return f"{m:.1f} ± {sd:.1f}" if n > 1 else f"{m:.1f}"


def _m(xs: list[float | None] | None) -> float | None:
    if not xs:
        return None
    m, _, n = _mean_sd(xs)
    return m if n else None


def _f(x: float | None, digits: int = 1) -> str:
    return "—" if x is None or x != x else f"{x:.{digits}f}"


ARM_NOTES = {
    "base": "tiny dual encoder, in-batch negatives",
    "hardneg": "base + one structured hard negative per caption (NegCLIP-style)",
    "base:ties-correct": "base, scored with ties counted correct (released defect 1)",
    "base:affirmative-key": "base, negation answer always the affirmative (released defect 2)",
    "base:substring-shuffles": (
        "base, word-order distractors built by substring replacement (released defect 3)"
    ),
    "order-blind": "base reading each caption as its sorted words (negative control: blind to order)",
    "order-blind:ties-correct": "order-blind, scored with ties counted correct",
    "best-blind": (
        "per seed, the best blind baseline of base (text side with null/mean/shuffled image; heuristics)"
    ),
    "bow-oracle": "knows the objects, reads a bag of words; ties earn 1/k (floor)",
    "scene-oracle": "parses and evaluates the caption on the scene graph (positive control, ceiling)",
}


def _arm_note(arm: str) -> str:
    if arm in ARM_NOTES:
        return ARM_NOTES[arm]
    return (
        f"base trained on data with negation_rate {arm.split('-', 1)[1]}"
        if arm.startswith("negrate-")
        else arm
    )


def render_report(r: dict[str, Any]) -> str:
    """The report: a pure function of the results dict (see :mod:`alignlab.core.results`)."""
    from alignlab.core.analysis import (
        analysis_markdown,
        claims_from_config,
        plan_markdown,
        seeds_note,
        verdict_line,
    )
    from alignlab.core.tables import markdown_table

    cfg = r["config"]
    claims = claims_from_config(cfg["claims"])
    seeds = r["seeds"]
    runs = r["runs"]
    trained = r["arms"]["trained"]
    dm = cfg["dual_model"]
    lines = [
        "# SNARE: structured hard negatives, SNARE's findings and the released code's defects, "
        "on ShapesWorld",
        "",
    ]
    if r["quick"]:
        lines += [
            "**Quick settings: supports no verdict.** (A smoke test of the code path: tiny data, one epoch.)",
            "",
        ]
    if r.get("partial"):
        lines += [
            f"**Partial run: {len(r['seeds'])} of {len(cfg['seeds'])} seeds finished** (the analysis below "
            "uses the finished seeds only).",
            "",
        ]
    sweep = ", ".join(f"{x:g}" for x in cfg["negation_sweep"])
    lines += [
        f"Tiny dual encoders (width {dm.get('width')}, embedding {dm.get('embed_dim')}, "
        f"{dm.get('image_size')}-pixel input, {dm.get('text_layers')} text layer(s)) trained for "
        f"{cfg['epochs']} epochs (batch {cfg['batch_size']}, "
        f"lr {cfg['lr']:g}) on {cfg['train_images']} ShapesWorld images with 5 captions each, seeds {seeds}. "
        f"`base` and `hardneg` train on data with negation_rate {cfg['negation_rate']:g}; the sweep arms on "
        f"negation_rate {sweep}. Every model is probed on one frozen set of {r['probe']['n_items']} "
        f"ShapesWorld items ({cfg['probe_items_per_category']} per category, seed {cfg['probe_seed']}, "
        f"SHA-256 `{r['probe']['sha256'][:12]}…`), every option labelled by the truth evaluator. "
        "All numbers are percentages; "
        "the unit of analysis is the training run (one per seed), arms are paired by seed.",
        "",
    ]
    # --- plan
    lines += [plan_markdown(claims)]
    lines += [seeds_note(len(seeds), claims[0].test, claims[0].alpha, len(claims)), ""]
    lines += ["Metrics:", ""]
    lines += [f"* `{m}` — {d}" for m, d in r["metrics"].items() if m in r["claimed_metrics"]]
    lines += ["", "Arms:", ""]
    lines += [f"* `{a}` — {_arm_note(a)}" for a in r["arms"]["claimed"]]
    lines += [
        "",
        "Why these tests. *Ignores word order* is an equivalence claim: `base` against `order-blind`, the "
        "same model made blind to order, on the content-word comparison, where any order-blind scorer "
        "sits at exactly 50 — not SNARE's 4-way accuracy, which a model can push below its chance level "
        "without preferring any order (see Exploratory). The weak-negation and weak-relation findings are "
        "equivalence claims against the model's own best blind baseline: \"no better than reading the text "
        'alone". The claims and margins were written into the config before the full run (one-seed pilot '
        "runs were used only to size it). Margins are in percentage points: 5 points for an effect "
        "(a tenth of a two-way choice's chance), 1 point for the claim that a trained model with real-valued "
        "scores has no ties for the tie defect to change.",
        "",
    ]
    # --- results
    rows = r["claims"]
    lines += [analysis_markdown(claims, rows)]
    lines += [f"* {verdict_line(row)}" for row in rows]
    lines += [""]
    # --- arms table
    lines += ["## Every arm, every metric (mean ± sd over seeds)", ""]
    metrics = list(r["metrics"])
    short = {
        "order_content_pct": "order: content",
        "order_function_pct": "order: function",
        "order_all_pct": "order: all",
        "word_order_acc_pct": "word order 4-way",
        "negation_acc_pct": "negation",
        "negation_affirmative_true_pct": "neg: affirm. true",
        "negation_negated_true_pct": "neg: negated true",
        "ownership_acc_pct": "ownership",
        "relation_acc_pct": "relations",
    }
    body = [["chance", *[_f(r["chance"].get(m)) for m in metrics]]]
    for a in r["arms"]["claimed"]:
        body.append([f"`{a}`", *[_ms(runs.get(m, {}).get(a)) for m in metrics]])
    lines += [
        markdown_table(["arm", *[short.get(m, m) for m in metrics]], body, align="l" + "r" * len(metrics)),
        "",
    ]
    lines += [
        "Items per metric: " + ", ".join(f"{short.get(m, m)} {n}" for m, n in r["n_items"].items()) + ".",
        "",
    ]
    # --- floors and ceilings
    lines += [
        "## Floors and ceilings per task: where the models sit",
        "",
        "Position = (arm − floor) / (ceiling − floor), with the bag-of-words oracle as the floor "
        "(it sees the objects but not the structure) and the scene-graph oracle as the ceiling.",
        "",
    ]
    body = []
    for m in CLAIMED_METRICS + ("ownership_acc_pct",):
        floor, ceil = _m(runs[m].get("bow-oracle")), _m(runs[m].get("scene-oracle"))
        cells = [short[m], _f(r["chance"].get(m)), _f(floor), _f(_m(runs[m].get("best-blind"))), _f(ceil)]
        for a in trained[:2]:
            v = _m(runs[m].get(a))
            pos = (
                None
                if v is None or floor is None or ceil is None or ceil == floor
                else (v - floor) / (ceil - floor)
            )
            cells += [_f(v), _f(pos, 2)]
        body.append(cells)
    head = ["metric", "chance", "floor: bow-oracle", "best blind (base)", "ceiling: scene-oracle"]
    for a in trained[:2]:
        head += [f"`{a}`", "position"]
    lines += [markdown_table(head, body, align="l" + "r" * (len(head) - 1)), ""]
    # --- per-seed values
    lines += ["## Per-seed values of the claimed metrics", ""]
    for m in CLAIMED_METRICS:
        arms_m = [a for a in r["arms"]["claimed"] if runs[m].get(a)]
        body = [[f"`{a}`", *[_f(x) for x in runs[m][a]]] for a in arms_m]
        lines += [
            f"`{m}`:",
            "",
            markdown_table(["arm", *[f"seed {s}" for s in seeds]], body, align="l" + "r" * len(seeds)),
            "",
        ]
    # --- exploratory
    lines += ["## Exploratory", "", "Not pre-registered: read as descriptions, not as tested claims.", ""]
    lines += [
        "**Negation-rate sweep** (base trained on data with that weight of true negated captions; gap = "
        "model − its own best blind baseline, same seeds):",
        "",
    ]
    rates = sorted([(cfg["negation_rate"], "base"), *[(x, f"negrate-{x:g}") for x in cfg["negation_sweep"]]])
    body = []
    for rate, a in rates:
        acc = runs["negation_acc_pct"].get(a)
        bb = runs["negation_acc_pct"].get(f"{a}:best-blind")
        gap = [x - y for x, y in zip(acc, bb, strict=True)] if acc and bb else None
        body.append(
            [
                f"{rate:g}",
                f"`{a}`",
                _ms(acc),
                _ms(runs["negation_affirmative_true_pct"].get(a)),
                _ms(runs["negation_negated_true_pct"].get(a)),
                _ms(bb),
                _ms(gap),
                _ms(runs["negation_acc_pct"].get(f"{a}:affirmative-key")),
            ]
        )
    lines += [
        markdown_table(
            [
                "negation_rate",
                "arm",
                "negation acc",
                "affirmative true",
                "negated true",
                "best blind",
                "gap",
                "under the affirmative key",
            ],
            body,
            align="rlrrrrrr",
        ),
        "",
    ]
    lines += [
        "**Each released defect on every trained arm** (mean over seeds; Δ = with the defect − without):",
        "",
    ]
    body = []
    for a in trained:
        base_wo = _m(runs["word_order_acc_pct"].get(a))
        base_neg = _m(runs["negation_acc_pct"].get(a))
        ob = _m(runs["word_order_acc_pct"].get(f"{a}:order-blind"))
        vals = [
            ("word_order_acc_pct", "ties-correct", base_wo),
            ("negation_acc_pct", "affirmative-key", base_neg),
            ("word_order_acc_pct", "substring-shuffles", base_wo),
        ]
        cells = [f"`{a}`", _f(base_wo), _f(base_neg)]
        for m, d, ref in vals:
            v = _m(runs[m].get(f"{a}:{d}"))
            cells.append(f"{_f(v)} ({'—' if v is None or ref is None else f'{v - ref:+.1f}'})")
        cells.append(_f(ob))
        body.append(cells)
    lines += [
        markdown_table(
            [
                "arm",
                "word order 4-way",
                "negation",
                "ties correct: word order (Δ)",
                "affirmative key: negation (Δ)",
                "substring shuffles: word order (Δ)",
                "order-blind reading: word order",
            ],
            body,
            align="lrrrrrr",
        ),
        "",
    ]
    sb = r["probe"]["substring_build"]
    lines += [
        f"Substring-replacement shuffles: {sb['distractors']} distractors rebuilt on {sb['items']} "
        f"word-order items; {sb['corrupted']} hold a non-word (a word of no original option, e.g. a word "
        f"with a short word replaced inside it); {sb['true_of_image']} turned out true of the image (the "
        f"released code would still have labelled them wrong); {sb['kept_token_shuffle']} kept the token "
        "shuffle.",
        "",
    ]
    lines += [
        "**SNARE's 4-way word-order accuracy against its pairwise parts** (mean over seeds): a model that "
        "ignores order has each comparison at 50 but can sit anywhere on the 4-way accuracy; a model that "
        "ties (order-blind) scores 0 on it, and 100 under the released tie rule.",
        "",
    ]
    body = []
    for a in [*trained, "order-blind", "bow-oracle", "scene-oracle"]:
        wo = _m(runs["word_order_acc_pct"].get(a))
        h = r["health"].get(a, {})
        body.append(
            [
                f"`{a}`",
                _f(wo),
                _f(r["chance"].get("word_order_acc_pct")),
                "below" if wo is not None and wo < r["chance"]["word_order_acc_pct"] else "not below",
                *[_f(_m(runs[f"order_{k}_pct"].get(a))) for k in ("content", "function", "all")],
                _f(_m(h.get("gold_lowest_pct"))),
                _f(_m(h.get("gold_dev")), 3),
                _f(_m(h.get("shuffle_dev")), 3),
            ]
        )
    lines += [
        markdown_table(
            [
                "arm",
                "4-way accuracy",
                "chance",
                "mean vs chance (no test)",
                "beats content shuffle",
                "beats function shuffle",
                "beats all-word shuffle",
                "gold lowest of 4",
                "gold score: distance from item mean",
                "shuffles: distance from item mean",
            ],
            body,
            align="lrrlrrrrrr",
        ),
        "",
        "Distances are mean absolute deviations of an option's score from the mean score of its item's four "
        "options (trained arms only). When the shuffles' scores lie farther from the item mean than the gold "
        "caption's, the gold caption sits in the middle: it beats each shuffle about half the time yet is "
        "rarely the top of four, which puts the 4-way accuracy below its chance level without any preference "
        "for an order.",
        "",
    ]
    lines += [
        "**Blind baselines of base** (mean over seeds; the best of them per seed is the `best-blind` arm):",
        "",
    ]
    bl = r["blinds"].get("base", {})
    body = [[f"`{b}`", *[_f(v.get(m)) for m in CLAIMED_METRICS]] for b, v in bl.items()]
    lines += [
        markdown_table(["blind baseline", *[short[m] for m in CLAIMED_METRICS]], body, align="lrrrr"),
        "",
    ]
    lines += ["**Training health** (R@1 with truth relevance on held-out images, mean ± sd over seeds):", ""]
    body = []
    for a, h in r["health"].items():
        negs = ", ".join(f"{k} {v}" for k, v in sorted(h["negatives"].items())) or "—"
        body.append([f"`{a}`", _ms(h["i2t_R@1"]), _ms(h["t2i_R@1"]), str(h["steps"]), negs])
    lines += [
        markdown_table(
            ["arm", "i2t R@1", "t2i R@1", "steps", "hard negatives made (seed 0)"], body, align="lrrrl"
        ),
        "",
    ]
    # --- caveats and provenance
    lines += [
        "## Caveats",
        "",
        "* Tiny models trained for about a minute each on synthetic scenes (see the training-health table: "
        "they learn, but far from the ceiling); the oracles are deterministic (the same value for every "
        "seed), so a claim against them tests the trained arm's spread only.",
        "* `best-blind` takes, per seed and metric, the best of six blind baselines, which biases it upwards "
        "a little: a gain over it is conservative, while an equivalence with it is slightly easier to "
        "reach than with one fixed baseline.",
        "* The hard negatives are built like the probe's distractors (swaps and shuffles, as in NegCLIP): an "
        "in-distribution test.",
        "* The defect arms emulate the released code's behaviour on alignlab's items (ties counted right, an "
        "answer key that always names the affirmative sentence, substring write-back of shuffles); they "
        "measure what each defect does to a score, not the released benchmark's own numbers.",
        "* The negation results depend on the training data containing negations (`negation_rate`); SNARE's "
        "pretrained models saw few. A cross encoder is not run here (CPU budget).",
        "",
    ]
    man = r.get("manifest", {})
    lines += [
        "## Reproduce",
        "",
        "```bash",
        "alignlab experiment snare --out runs/experiment-snare",
        "```",
        "",
        f"Wall time {_f((man.get('wall_s') or 0) / 60)} min, CPU time of the process "
        f"{_f((man.get('cpu_s') or 0) / 60)} min "
        f"(torch threads {cfg['threads']}); alignlab {man.get('alignlab', '?')}, torch "
        f"{man.get('torch', '?')}.",
        "",
    ]
    return "\n".join(lines)
