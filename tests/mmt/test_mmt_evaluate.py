"""Metrics: sense accuracy counting, shuffled images, counterfactual scenes, contrastive score, BLEU/chrF."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alignlab.data.shapes import NP, Exists, Obj, Relation, Scene, chinese
from alignlab.mmt.evaluate import (
    bleu_chrf,
    contrastive_items,
    contrastive_score,
    derangement,
    evaluate_model,
    flip_form,
    flip_scene,
    other_sense,
    sense_correct,
)
from alignlab.mmt.model import MMTConfig, MMTModel
from alignlab.mmt.train import MMTPair


def test_sense_accuracy_counts_intended_other_and_missing_words():
    pair = MMTPair(
        "a bat left of a bat",
        "一只蝙蝠在一根球棒的左边",
        senses=(("bat", "bat.n.01", "蝙蝠"), ("bat", "bat.n.05", "球棒")),
    )
    assert sense_correct("一只蝙蝠在一根球棒的左边", pair) == (2, 0, 2)
    assert sense_correct("一只蝙蝠在一只蝙蝠的左边", pair) == (1, 1, 2)  # the club came out as the animal
    one = MMTPair("a bat", "有一只蝙蝠", senses=(("bat", "bat.n.01", "蝙蝠"),))
    assert sense_correct("有一根球棒", one) == (0, 1, 1)  # the other sense: a wrong choice
    assert sense_correct("有一个东西", one) == (0, 0, 1)  # neither: an omission
    assert sense_correct("有一个圆形", MMTPair("a circle", "有一个圆形")) == (0, 0, 0)


def test_derangement_moves_every_item():
    for n in (2, 3, 10, 101):
        p = derangement(n, seed=n)
        assert sorted(p.tolist()) == list(range(n)) and not np.any(p == np.arange(n))
    assert derangement(10, 1).tolist() == derangement(10, 1).tolist()


def test_flipped_scene_and_caption_swap_senses_and_chinese_words():
    scene = Scene((Obj("bat", "red", "small", 0, 0, sense="bat.n.01"), Obj("circle", "blue", "large", 1, 1)))
    flipped = flip_scene(scene)
    assert flipped.objects[0].sense == "bat.n.05" and flipped.objects[1] == scene.objects[1]
    form = Relation(NP("bat", "red", sense="bat.n.01"), "above", NP("circle", "blue"))
    assert "蝙蝠" in chinese(form) and "球棒" in chinese(flip_form(form))
    assert other_sense(other_sense("kite.n.04")) == "kite.n.04"
    mixed = Scene(
        (
            Obj("bat", "red", "small", 0, 0, sense="bat.n.01"),
            Obj("bat", "red", "small", 0, 1, sense="bat.n.05"),
        )
    )
    assert flip_scene(mixed) is None  # "a bat" would not say which one
    assert flip_form(Exists(NP("circle"))) == Exists(NP("circle"))


def test_contrastive_items_pair_true_and_flipped_images(shapes_data):
    items = contrastive_items(shapes_data["test"])
    assert items and all(it["zh_a"] != it["zh_b"] for it in items)
    assert all(not np.array_equal(it["image_a"], it["image_b"]) for it in items)


def test_text_only_model_scores_exactly_half_and_has_no_image_gap(shapes_data):
    torch.manual_seed(0)
    m = MMTModel(
        MMTConfig(width=32, heads=2, encoder_layers=1, decoder_layers=1, max_tgt_len=24),
        shapes_data["src"],
        shapes_data["tgt"],
    ).eval()
    items = contrastive_items(shapes_data["test"], max_items=20)
    assert contrastive_score(m, None, items)["contrastive_acc"] == 0.5
    res = evaluate_model(m, shapes_data["test_pairs"][:20], contrastive=items)
    assert res["sense_gap"] == 0.0 and res["bleu_incongruent"] == res["bleu"] and res["n"] == 20


def test_image_model_gap_uses_shuffled_images(shapes_data, tiny_encoder):
    from alignlab.mmt.train import shapes_images

    enc, _ = tiny_encoder
    visual = enc.features(shapes_images(shapes_data["train"] + shapes_data["test"]))
    torch.manual_seed(0)
    m = MMTModel(
        MMTConfig(
            width=32,
            heads=2,
            encoder_layers=1,
            decoder_layers=1,
            fusion="prefix",
            max_tgt_len=24,
            visual_dim=enc.width,
            visual_tokens=enc.n_tokens,
        ),
        shapes_data["src"],
        shapes_data["tgt"],
    ).eval()
    res = evaluate_model(
        m,
        shapes_data["test_pairs"],
        visual,
        encoder=enc,
        keep_per_item=True,
        contrastive=contrastive_items(shapes_data["test"], 10),
    )
    assert res["sense_gap"] == pytest.approx(res["sense_acc"] - res["sense_acc_incongruent"])
    assert 0.0 <= res["contrastive_acc"] <= 1.0 and 0.0 <= res["sense_gap_p"] <= 1.0
    per = res["per_item"]
    assert len(per["sense_congruent"]) == len(per["sense_incongruent"]) == res["sense_captions"] > 0
    assert len(per["hyps"]) == len(per["hyps_incongruent"]) == len(shapes_data["test_pairs"])


def test_bleu_uses_the_chinese_tokenizer_and_stores_signatures():
    res = bleu_chrf(["一只红色的蝙蝠", "有两个圆形"], ["一只红色的蝙蝠", "有三个圆形"])
    assert "tok:zh" in res["bleu_signature"] and "nc:6" in res["chrf_signature"]
    assert 0 < res["bleu"] < 100 and 0 < res["chrf"] < 100
    assert bleu_chrf(["一只红色的蝙蝠"], ["一只红色的蝙蝠"])["bleu"] == pytest.approx(100.0)
