"""Evaluation of translation models: BLEU/chrF, sense accuracy, congruent vs incongruent images, contrastive
score.

* **BLEU and chrF** with sacrebleu on detokenised Chinese: BLEU with its ``zh`` tokenizer (every CJK
  character a token), chrF on characters; both signatures are stored with the scores.
* **Sense accuracy.** For each polysemous English noun of a test caption (ShapesWorld captions know the
  sense: :meth:`Caption.sense_words`), the translation is right when it contains the Chinese word of the
  intended sense (蝙蝠 for the animal, 球棒 for the club). Per caption with ``k`` sense words
  ``w_1..w_k`` (counted with multiplicity), ``correct = Σ_w min(#w in hypothesis, #w in reference)``; the
  accuracy is ``Σ correct / Σ k`` over captions. ``sense_wrong_rate``: share of sense words for which the
  *other* sense's word appears instead (a confident mistake rather than an omission).
* **Congruent vs incongruent decoding.** The same model translates each caption with its own image and
  with the image of another test caption (a seeded derangement of the images); the drop in sense
  accuracy (and BLEU) is how much the model uses the image. Text-only models have no drop by design.
  Significance: paired randomization test over captions of the per-caption sense accuracy.
* **Contrastive score** (as in CoMMuTE, Futeral et al. 2023). For a caption whose polysemous objects
  share one sense per kind, a counterfactual scene flips every polysemous object to its other sense
  (same place, colour and size) and the caption's translation flips with it. With images ``I_a`` (true)
  and ``I_b`` (flipped) and translations ``y_a``, ``y_b``, the model is right for ``I_a`` when
  ``log p(y_a | x, I_a) > log p(y_b | x, I_a)``, and for ``I_b`` when ``log p(y_b | x, I_b) >
  log p(y_a | x, I_b)``. The score is the share of right decisions; a model ignoring the image scores
  exactly 0.5 (it prefers the same translation under both images).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from alignlab.core.stats import paired_randomization_test
from alignlab.data.shapes import (
    NP,
    POLYSEMOUS,
    SENSES,
    And,
    Count,
    Exists,
    Property,
    Relation,
    Respectively,
    Scene,
    chinese,
    render_array,
)
from alignlab.mmt.model import MMTModel, VisualEncoder
from alignlab.mmt.train import MMTPair

SENSE_DEFINITION = (
    "share of polysemous source nouns whose intended sense's Chinese word appears in the "
    "translation (counts clipped by the reference)"
)


def other_sense(synset: str) -> str:
    """The other sense of a two-sense ShapesWorld kind (``bat.n.01`` <-> ``bat.n.05``)."""
    kind = synset.split(".")[0]
    senses = [s.synset for s in POLYSEMOUS[kind][1]]
    return senses[1 - senses.index(synset)]


# --- translation ------------------------------------------------------------------------------------------


@torch.no_grad()
def translate(
    model: MMTModel, sources: Sequence[str], visual: torch.Tensor | None = None, batch_size: int = 128
) -> list[str]:
    """Greedy translations of ``sources``; ``visual`` holds one ``[K, d_v]`` token set per source."""
    model.eval()
    out: list[str] = []
    for i in range(0, len(sources), batch_size):
        ids, mask = model.encode_source(sources[i : i + batch_size])
        v = visual[i : i + batch_size] if (model.uses_image and visual is not None) else None
        out += model.greedy_decode(ids, mask, v)
    return out


def bleu_chrf(hyps: Sequence[str], refs: Sequence[str]) -> dict[str, Any]:
    """Corpus BLEU (sacrebleu, ``tokenize="zh"``) and chrF, with their signatures."""
    from sacrebleu.metrics import BLEU, CHRF

    bleu = BLEU(tokenize="zh")
    chrf = CHRF()
    b = bleu.corpus_score(list(hyps), [list(refs)])
    c = chrf.corpus_score(list(hyps), [list(refs)])
    return {
        "bleu": float(b.score),
        "chrf": float(c.score),
        "bleu_signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
    }


def sense_correct(hyp: str, pair: MMTPair) -> tuple[int, int, int]:
    """(correct, wrong, total) sense words of one translation (see the module docstring)."""
    if not pair.senses:
        return 0, 0, 0
    want: dict[str, int] = {}
    for _, syn, _zh in pair.senses:
        want[syn] = want.get(syn, 0) + 1
    correct = wrong = total = 0
    for syn, k in want.items():
        zh = SENSES[syn].zh
        other = SENSES[other_sense(syn)].zh
        got = min(hyp.count(zh), k)
        correct += got
        wrong += min(hyp.count(other), k - got)
        total += k
    return correct, wrong, total


def sense_scores(hyps: Sequence[str], pairs: Sequence[MMTPair]) -> dict[str, Any]:
    c = w = t = 0
    per = []
    for h, p in zip(hyps, pairs):
        ci, wi, ti = sense_correct(h, p)
        c, w, t = c + ci, w + wi, t + ti
        if ti:
            per.append(ci / ti)
    return {
        "sense_acc": c / t if t else float("nan"),
        "sense_wrong_rate": w / t if t else float("nan"),
        "sense_words": t,
        "sense_captions": len(per),
        "per_caption": per,
    }


def derangement(n: int, seed: int) -> np.ndarray:
    """A seeded permutation of ``range(n)`` without fixed points (n >= 2)."""
    rng = np.random.default_rng(seed)
    if n < 2:
        return np.arange(n)
    perm = rng.permutation(n)
    while True:  # swapping a fixed point with its neighbour leaves neither fixed
        fixed = np.flatnonzero(perm == np.arange(n))
        if fixed.size == 0:
            return perm
        i = int(fixed[0])
        j = (i + 1) % n
        perm[i], perm[j] = perm[j], perm[i]


# --- counterfactuals for the contrastive score ----------------------------------------------------------


def _flip_np(np_: NP) -> NP:
    return replace(np_, sense=other_sense(np_.sense)) if np_.kind in POLYSEMOUS and np_.sense else np_


def flip_form(form: Any) -> Any:
    """The logical form with every polysemous NP's sense flipped."""
    if isinstance(form, (Exists, Count)):
        return replace(form, np=_flip_np(form.np))
    if isinstance(form, Property):
        return replace(form, np=_flip_np(form.np))
    if isinstance(form, (Relation, Respectively)):
        return replace(form, a=_flip_np(form.a), b=_flip_np(form.b))
    if isinstance(form, And):
        return And(tuple(flip_form(p) for p in form.parts))
    raise TypeError(f"not a ShapesWorld form: {form!r}")


def flip_scene(scene: Scene) -> Scene | None:
    """Every polysemous object switched to its other sense; None when a kind appears with both senses
    (the flipped caption would not say which object it means)."""
    by_kind: dict[str, set[str]] = {}
    for o in scene.objects:
        if o.sense:
            by_kind.setdefault(o.kind, set()).add(o.sense)
    if not by_kind or any(len(s) > 1 for s in by_kind.values()):
        return None
    return Scene(tuple(o.replace(sense=other_sense(o.sense)) if o.sense else o for o in scene.objects))


def contrastive_items(examples: Sequence[Any], max_items: int | None = None) -> list[dict[str, Any]]:
    """CoMMuTE-style items from ShapesWorld test examples: en, zh_a, zh_b, image_a, image_b (uint8 HWC)."""
    items = []
    for ex in examples:
        flipped = flip_scene(ex.scene)
        if flipped is None:
            continue
        image_b = None
        for c in ex.captions:
            if not c.sense_words():
                continue
            if image_b is None:
                image_b = render_array(flipped, ex.image.shape[0])
            items.append(
                {
                    "en": c.en,
                    "zh_a": c.zh,
                    "zh_b": chinese(flip_form(c.form)),
                    "image_a": ex.image,
                    "image_b": image_b,
                    "image_id": ex.image_id,
                }
            )
            if max_items is not None and len(items) >= max_items:
                return items
    return items


@torch.no_grad()
def contrastive_score(
    model: MMTModel, encoder: VisualEncoder | None, items: Sequence[dict[str, Any]], batch_size: int = 128
) -> dict[str, Any]:
    """Share of right decisions over both images of every item (0.5 = the image makes no difference)."""
    if not items:
        return {"contrastive_acc": float("nan"), "contrastive_items": 0, "per_item": []}
    right = []
    for i in range(0, len(items), batch_size):
        chunk = items[i : i + batch_size]
        ids, mask = model.encode_source([it["en"] for it in chunk])
        ya = model.tgt_tok.encode([it["zh_a"] for it in chunk], model.config.max_tgt_len).to(model.device)
        yb = model.tgt_tok.encode([it["zh_b"] for it in chunk], model.config.max_tgt_len).to(model.device)
        if model.uses_image:
            va = encoder.features(
                torch.from_numpy(np.stack([it["image_a"] for it in chunk])).permute(0, 3, 1, 2)
            )
            vb = encoder.features(
                torch.from_numpy(np.stack([it["image_b"] for it in chunk])).permute(0, 3, 1, 2)
            )
        else:
            va = vb = None

        a_given_a, b_given_a = (
            model.sequence_logprob(ids, mask, ya, va),
            model.sequence_logprob(ids, mask, yb, va),
        )
        a_given_b, b_given_b = (
            model.sequence_logprob(ids, mask, ya, vb),
            model.sequence_logprob(ids, mask, yb, vb),
        )
        right += ((a_given_a > b_given_a).float() * 0.5 + (b_given_b > a_given_b).float() * 0.5).tolist()
    return {"contrastive_acc": float(np.mean(right)), "contrastive_items": len(items), "per_item": right}


# --- everything at once ------------------------------------------------------------------------------------


def evaluate_model(
    model: MMTModel,
    pairs: Sequence[MMTPair],
    visual: torch.Tensor | None = None,
    *,
    encoder: VisualEncoder | None = None,
    contrastive: Sequence[dict[str, Any]] | None = None,
    seed: int = 0,
    keep_per_item: bool = False,
) -> dict[str, Any]:
    """All metrics for ``pairs``. ``visual``: the feature table ``pair.image`` indexes (image models).

    Returns ``bleu``, ``chrf`` (+ signatures), ``sense_acc`` and, for image models, the same under
    incongruent images (``*_incongruent``), the gaps and a paired randomization p-value, plus
    ``contrastive_acc`` when ``contrastive`` items are given.
    """
    sources = [p.en for p in pairs]
    refs = [p.zh for p in pairs]
    v_cong = v_inc = None
    if model.uses_image:
        img = torch.tensor([p.image for p in pairs])
        v_cong = visual[img]
        perm = derangement(len(pairs), seed)
        v_inc = visual[img[torch.from_numpy(perm)]]
    hyps = translate(model, sources, v_cong)
    out: dict[str, Any] = dict(bleu_chrf(hyps, refs))
    sense = sense_scores(hyps, pairs)
    out.update({k: v for k, v in sense.items() if k != "per_caption"})
    out["n"] = len(pairs)
    per_item: dict[str, Any] = {"sense_congruent": sense["per_caption"], "hyps": hyps}
    if model.uses_image:
        hyps_inc = translate(model, sources, v_inc)
        inc = bleu_chrf(hyps_inc, refs)
        sense_inc = sense_scores(hyps_inc, pairs)
        out["bleu_incongruent"] = inc["bleu"]
        out["chrf_incongruent"] = inc["chrf"]
        out["sense_acc_incongruent"] = sense_inc["sense_acc"]
        out["sense_gap"] = out["sense_acc"] - sense_inc["sense_acc"]
        out["bleu_gap"] = out["bleu"] - inc["bleu"]
        out["sense_gap_p"] = (
            paired_randomization_test(sense_inc["per_caption"], sense["per_caption"], seed=seed)
            if sense["per_caption"]
            else float("nan")
        )
        per_item["sense_incongruent"] = sense_inc["per_caption"]
        per_item["hyps_incongruent"] = hyps_inc
    else:
        # A text-only model cannot see the image: congruent and incongruent decoding are the same.
        out["bleu_incongruent"] = out["bleu"]
        out["chrf_incongruent"] = out["chrf"]
        out["sense_acc_incongruent"] = out["sense_acc"]
        out["sense_gap"] = 0.0
        out["bleu_gap"] = 0.0
        out["sense_gap_p"] = 1.0
        per_item["sense_incongruent"] = sense["per_caption"]
    if contrastive is not None:
        cs = contrastive_score(model, encoder, contrastive)
        out["contrastive_acc"] = cs["contrastive_acc"]
        out["contrastive_items"] = cs["contrastive_items"]
        per_item["contrastive"] = cs["per_item"]
    if keep_per_item:
        out["per_item"] = per_item
    return out
